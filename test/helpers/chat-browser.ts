/// <reference lib="dom" />
/**
 * The browser chat under test: a real cluster whose router serves the web UI, an owner
 * with an API client, Chromium, and pages that enter as new users through the form.
 */
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, expect } from 'vitest';
import { ChatApi } from '../../client/index.js';
import { launchChromium } from './browser.js';
import { type Cluster, startCluster } from './cluster.js';
import { defaultRegistry, REPO_ROOT } from './processes.js';

const WEB_DIR = path.join(REPO_ROOT, 'dist', 'web');

export interface ChatBrowser {
  cluster: Cluster;
  /** `owner`, named Olga Owner, with a token. */
  owner: ChatApi;
  /** A page in a browser context of its own (its own localStorage): a user of its own. */
  newPage(viewport?: { width: number; height: number }): Promise<Page>;
  /** Opens the chat for `group` and enters as a new user through the form. */
  enter(page: Page, group: string, name: string): Promise<void>;
  close(): Promise<void>;
}

export async function startChatBrowser(): Promise<ChatBrowser> {
  const cluster = await startCluster(await defaultRegistry.tempDir(), {
    config: { router: { webDir: WEB_DIR } },
  });
  const browser: Browser = await launchChromium();
  const owner = new ChatApi({ baseUrl: cluster.router.url, token: await cluster.token('owner') });
  await owner.putUser('owner', { name: 'Olga Owner', email: 'olga@example.com' });
  const contexts: BrowserContext[] = [];
  return {
    cluster,
    owner,
    async newPage(viewport = { width: 1100, height: 760 }) {
      const ctx = await browser.newContext({ viewport });
      contexts.push(ctx);
      const page = await ctx.newPage();
      page.on('pageerror', (err) => process.stderr.write(`page error: ${err.message}\n`));
      return page;
    },
    async enter(page, group, name) {
      await page.goto(`${cluster.router.url}/?group=${group}`);
      await expect.poll(() => page.locator('#entry').isVisible()).toBe(true);
      await page.fill('#entry-name', name);
      await page.fill('#entry-email', `${name.toLowerCase()}@example.com`);
      await page.click('#entry-submit');
      await page.waitForSelector('#chat:not([hidden])');
      await page.waitForSelector('#state[data-state="open"]');
    },
    async close() {
      for (const ctx of contexts) await ctx.close().catch(() => {});
      await browser.close();
    },
  };
}

/**
 * Starts the cluster and browser before the suite's tests (then `setup`), closes them
 * after; the returned object is filled in by then.
 */
export function useChatBrowser(setup?: (t: ChatBrowser) => Promise<void>): ChatBrowser {
  const t = {} as ChatBrowser;
  beforeAll(async () => {
    Object.assign(t, await startChatBrowser());
    await setup?.(t);
  }, 60_000);
  afterAll(async () => {
    await t.close?.();
    await defaultRegistry.cleanup();
  });
  return t;
}
