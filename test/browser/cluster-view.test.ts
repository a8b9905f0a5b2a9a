/// <reference lib="dom" />
/**
 * The live cluster view on the router's admin port (/cluster, its data /cluster.json) in
 * Debian's Chromium, against a router and three real shards: every shard's row, a
 * killed shard shown not ready and then ready again once restarted, and the messages
 * per second of a shard moving while messages are posted to it. A screenshot goes to
 * test-artifacts/browser/.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatApi, ShardChatError } from '../../client/index.js';
import { HAVE_BROWSER, launchChromium, screenshot } from '../helpers/browser.js';
import { type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import { idsOn, shardOf } from '../helpers/reliability.js';

useProcessCleanup();

describe.skipIf(!HAVE_BROWSER)('the cluster view', () => {
  let c: Cluster;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), { shards: 3 });
    browser = await launchChromium();
    page = await browser.newPage();
    page.on('pageerror', (err) => process.stderr.write(`page error: ${err.message}\n`));
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await defaultRegistry.cleanup();
  });

  const stateOf = (shard: number) =>
    page.locator(`#shards tr[data-shard="${shard}"] td`).nth(0).textContent();
  const cellOf = (shard: number, column: number) =>
    page.locator(`#shards tr[data-shard="${shard}"] td`).nth(column).textContent();

  it('lists every shard, ready, with the shard map', async () => {
    const res = await fetch(`${c.router.adminUrl}/cluster`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    await page.goto(`${c.router.adminUrl}/cluster`);
    await expect.poll(() => page.locator('#shards tbody tr').count(), { timeout: 10_000 }).toBe(3);
    for (const i of [0, 1, 2]) await expect.poll(() => stateOf(i), { timeout: 10_000 }).toBe('ready');
    expect(await page.locator('#map').textContent()).toContain('Shards3');
    await expect.poll(() => page.locator('#summary').textContent()).toMatch(/^3 of 3 shards ready/);
  });

  it('messages per second move on the shard that receives them', async () => {
    const of = await shardOf(3);
    const g = idsOn(of, 2, 'cv-group', 1)[0] as string;
    const api = new ChatApi({ baseUrl: c.router.url, token: await c.token('cv-user') });
    await api.putGroup(g, { subject: g });
    let posting = true;
    let n = 0;
    const poster = (async () => {
      while (posting && n < 2000) {
        await api.post(g, `m${n}`, `cv-${n}`);
        n++;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      // Column 5: messages per second (after state, map, groups, members, connections).
      await expect
        .poll(async () => Number(((await cellOf(2, 5)) ?? '').replace(/,/g, '')), { timeout: 15_000 })
        .toBeGreaterThan(1);
      expect(await cellOf(0, 5)).toMatch(/^0(\.0)?$/);
      expect(Number(await cellOf(2, 2))).toBeGreaterThanOrEqual(1);
      await screenshot(page, 'cluster-view');
    } finally {
      posting = false;
      await poster;
    }
    expect(n).toBeGreaterThan(0);
  }, 60_000);

  it('a killed shard shows not ready, then ready once it is back', async () => {
    await c.shards[1]?.proc.kill();
    await expect.poll(() => stateOf(1), { timeout: 15_000 }).toMatch(/^not ready/);
    await expect.poll(() => page.locator('#summary').textContent()).toMatch(/^2 of 3 shards ready/);
    await c.restartShard(1);
    await expect.poll(() => stateOf(1), { timeout: 15_000 }).toBe('ready');
    // The restarted shard serves again through the router.
    const api = new ChatApi({ baseUrl: c.router.url, token: await c.token('cv-other') });
    for (const until = Date.now() + 15_000; ; ) {
      try {
        await api.putUser('cv-other', { name: 'Other' });
        break;
      } catch (err) {
        if (!(err instanceof ShardChatError) || !err.retryable || Date.now() > until) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }, 60_000);
});
