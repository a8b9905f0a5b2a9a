/**
 * `shardchat local` (what npm start runs) on the built tree: one terminal of readable,
 * prefixed logs; a restart keeps conversations and issued tokens (the secret lives in
 * the data folder) and does not seed the demo twice; a shard that dies is restarted;
 * a data folder keeps its shard count (a different --shards is refused); `shardchat
 * reshard` grows a running local cluster (the launcher starts the new shard) and shrinks
 * it (the launcher stops the shards left over), while a group WebSocket of the SDK and a
 * browser session stay connected. The supervisor's logic alone is tested as a unit
 * (test/unit/cli/local-supervisor.test.ts).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { GroupConnection } from '../../client/group-connection.js';
import { ChatApi } from '../../client/index.js';
import { initHash } from '../../common/hash.js';
import { Placement } from '../../common/placement.js';
import { HAVE_BROWSER, launchChromium } from '../helpers/browser.js';
import { freeLocalBase, groupAlive, killGroup } from '../helpers/local.js';
import { CLI, canConnect, childEnv, defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import { type ChatTarget, expectContiguous, readContent, runReshard, seed } from '../helpers/reshard.js';

useProcessCleanup();

interface Local {
  child: ChildProcess;
  output: () => string;
  url: string;
}

const running: ChildProcess[] = [];
afterEach(() => {
  for (const c of running.splice(0)) killGroup(c.pid);
});

async function startLocal(dataDir: string, base: number, extra: string[] = []): Promise<Local> {
  const child = spawn(process.execPath, [CLI, 'local', '--port', String(base), '--data', dataDir, ...extra], {
    env: childEnv(),
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.push(child);
  let out = '';
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (c: Buffer) => {
      out += c;
      const m = /ready: open (http:\/\/\S+) in a browser/.exec(out);
      if (m) resolve(m[1] as string);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`local exited early (${code})\n${out}`)));
    setTimeout(() => reject(new Error(`not ready in 60 s\n${out}`)), 60_000);
  });
  return { child, url, output: () => out };
}

async function ctrlC(l: Local): Promise<void> {
  const pgid = l.child.pid as number;
  process.kill(-pgid, 'SIGINT');
  await expect.poll(() => groupAlive(pgid), { timeout: 30_000, interval: 100 }).toBe(false);
}

describe('shardchat local', () => {
  it('prints readable prefixed logs; a restart keeps conversations, tokens and the demo (seeded once)', async () => {
    const dataDir = path.join(await defaultRegistry.tempDir(), 'data');
    const base = await freeLocalBase(3);
    const first = await startLocal(dataDir, base);
    expect(first.output()).toMatch(/^shard-0 \| \d\d:\d\d:\d\d INFO {2}shard listening shard=0/m);
    expect(first.output()).toMatch(/^router {2}\| \d\d:\d\d:\d\d INFO {2}router listening/m);
    // The live cluster view's address, on the router's admin port.
    const view = `http://127.0.0.1:${base + 1010}/cluster`;
    expect(first.output()).toContain(`shardchat local: cluster view: ${view}`);
    const viewPage = await fetch(view);
    expect(viewPage.status).toBe(200);
    expect(await viewPage.text()).toContain('<title>shardchat cluster</title>');
    const snap = (await (await fetch(`${view}.json`)).json()) as { shards: { ready: boolean }[] };
    expect(snap.shards.map((r) => r.ready)).toEqual([true, true, true]);

    const anon = new ChatApi({ baseUrl: first.url });
    const token = await anon.devToken('zed');
    const zed = new ChatApi({ baseUrl: first.url, token });
    await zed.putUser('zed', { name: 'Zed', email: 'zed@example.com' });
    await zed.putGroup('keep', { subject: 'Kept' });
    await zed.post('keep', 'survives a restart', 'k1');
    const secrets = await readFile(path.join(dataDir, 'secrets.json'), 'utf8');
    await ctrlC(first);
    expect(first.output()).toContain('shardchat local: stopped cleanly');

    const second = await startLocal(dataDir, base);
    // The same secret: the token issued before the restart still works.
    expect(await readFile(path.join(dataDir, 'secrets.json'), 'utf8')).toBe(secrets);
    const again = new ChatApi({ baseUrl: second.url, token });
    expect((await again.messagesAfter('keep', 0)).map((m) => m.contents)).toEqual(['survives a restart']);
    expect((await again.getUser('zed')).email).toBe('zed@example.com');
    // The demo was seeded once: the café still holds its four opening messages.
    const alice = new ChatApi({ baseUrl: second.url, token: await anon.devToken('alice') });
    expect((await alice.getGroup('cafe')).body).toMatchObject({ memberCount: 4, lastMsgId: 4 });
    await ctrlC(second);
  }, 120_000);

  it('--no-demo seeds nothing; a killed shard is restarted (its pid in the log) while the other keeps serving, and comes back with its data; a different --shards is refused', async () => {
    const dataDir = path.join(await defaultRegistry.tempDir(), 'data');
    const base = await freeLocalBase(2);
    const l = await startLocal(dataDir, base, ['--shards', '2', '--no-demo']);
    expect(l.output()).not.toContain('demo conversation');
    const yamlText = await readFile(path.join(dataDir, 'local.yaml'), 'utf8');
    expect(yamlText).toMatch(/shards: 2/);
    expect(yamlText).toContain(`targetTemplate: http://127.0.0.1:{ordinal+${base + 1}}`);
    expect(yamlText).toContain(`adminTemplate: http://127.0.0.1:{ordinal+${base + 1011}}`);
    const alice = new ChatApi({
      baseUrl: l.url,
      token: await new ChatApi({ baseUrl: l.url }).devToken('alice'),
    });
    await expect(alice.getGroup('cafe')).rejects.toMatchObject({ status: 404 });
    // A conversation on each shard.
    await initHash();
    const two = new Placement({ version: 1, shards: 2, assignment: 'modulo' });
    const on = (shard: number) =>
      Array.from({ length: 100 }, (_, i) => `kept${shard}-${i}`).find(
        (g) => two.ownerOf(g) === shard,
      ) as string;
    const [g0, g1] = [on(0), on(1)];
    await alice.putUser('alice', { name: 'Alice' });
    for (const g of [g0, g1]) {
      await alice.putGroup(g, { subject: g });
      await alice.post(g, `before the kill in ${g}`, `${g}-0`);
    }
    // Kill shard 1 (port base+2): shard 0 keeps serving through the router meanwhile,
    // local restarts shard 1, and it serves again with its data.
    const pid = await shardPids(l, 1);
    process.kill(pid, 'SIGKILL');
    const statuses = async (g: string) => {
      try {
        await alice.messagesAfter(g, 0);
        return 200;
      } catch (err) {
        return (err as { status?: number }).status ?? 0;
      }
    };
    const seen0: number[] = [];
    const seen1: number[] = [];
    for (const until = Date.now() + 30_000; Date.now() < until; ) {
      seen0.push(await statuses(g0));
      seen1.push(await statuses(g1));
      if (seen1.some((st) => st !== 200) && seen1.at(-1) === 200) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    // Shard 1 was unavailable for a while (503 from the router), shard 0 never was.
    expect(seen1.filter((st) => st === 503).length).toBeGreaterThan(0);
    expect(seen1.at(-1)).toBe(200);
    expect(new Set(seen0)).toEqual(new Set([200]));
    await expect
      .poll(
        () =>
          new RegExp(`shard-1 \\(pid ${pid}\\) exited \\(SIGKILL\\) after .*; restarting it in`).test(
            l.output(),
          ),
        {
          timeout: 30_000,
          interval: 100,
        },
      )
      .toBe(true);
    await expect
      .poll(() => (l.output().match(/shard listening shard=1/g) ?? []).length, {
        timeout: 30_000,
        interval: 200,
      })
      .toBe(2);
    const again = await shardPids(l, 1);
    expect(again).not.toBe(pid);
    expect(l.output()).toContain(`shardchat local: shard-1 started again (pid ${again})`);
    expect(groupAlive(l.child.pid as number)).toBe(true);
    expect((await alice.messagesAfter(g1, 0)).map((m) => m.contents)).toEqual([`before the kill in ${g1}`]);
    // Writes go through again (the router sees the shard ready at its next probe).
    await expect
      .poll(
        async () => {
          await alice.putUser('alice', { name: 'Alice' });
          for (const g of ['a1', 'a2', 'a3', 'a4']) {
            await alice.putGroup(g, { subject: g });
            await alice.post(g, 'still here', `${g}-1`);
          }
          return true;
        },
        { timeout: 15_000, interval: 500 },
      )
      .toBe(true);
    await ctrlC(l);
    expect(l.output()).toContain('shardchat local: stopped cleanly');
    for (const p of [base, base + 1, base + 2, base + 1010]) expect(await canConnect(p)).toBe(false);

    // The data folder holds 2 shards: starting it with 3 is refused (exit 2), naming reshard.
    const refused = spawnSync(
      process.execPath,
      [CLI, 'local', '--port', String(base), '--data', dataDir, '--shards', '3', '--no-demo'],
      { env: childEnv(), encoding: 'utf8', timeout: 30_000 },
    );
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain(
      `shardchat: ${dataDir}/ holds a cluster of 2 shards; --shards 3 would hide the groups of the others. ` +
        `To change the number of shards of a running cluster: shardchat reshard --to 3 --config ${dataDir}/local.yaml`,
    );
    expect(await canConnect(base)).toBe(false);
  }, 120_000);
});

describe('shardchat local with shardchat reshard', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
  });

  it('grows 3 to 4 (the launcher starts shard 3) and shrinks to 2 (it stops 2 and 3): data unchanged, connections follow, a restart keeps 2', async () => {
    const dataDir = path.join(await defaultRegistry.tempDir(), 'data');
    const configPath = path.join(dataDir, 'local.yaml');
    const base = await freeLocalBase(4);
    const l = await startLocal(dataDir, base, ['--shards', '3', '--no-demo']);
    const router = (url: string): ChatTarget => ({
      router: { url: new URL(url).origin },
      token: (u) => new ChatApi({ baseUrl: url }).devToken(u),
    });
    let target = router(l.url);
    const tokens = new Map<string, string>();
    const groups = await seed(target, { groups: 12, messagesPerGroup: 3, users: 6 }, tokens);
    const users = [...tokens.keys()];
    const asUser = (g: string) => `u${Number(g.slice(1)) % 6}`;
    let before = await readContent(target, groups, users, tokens, asUser);
    expectContiguous(before);

    // A group that moves to the new shard (and off it again): an owner posts, a member listens.
    await initHash();
    const to4 = new Placement({ version: 1, shards: 4, assignment: 'modulo' });
    const g = groups.find((id) => to4.ownerOf(id) === 3) as string;
    expect(g).toBeDefined();
    const n = Number(g.slice(1));
    const owner = new ChatApi({ baseUrl: l.url, token: tokens.get(`u${n % 6}`) });
    const member = new ChatApi({ baseUrl: l.url, token: tokens.get(`u${(n + 1) % 6}`) });
    const conn = new GroupConnection({
      api: member,
      groupId: g,
      WebSocket,
      backoff: { minMs: 50, maxMs: 500 },
    });
    cleanups.push(() => conn.close());
    const received: string[] = [];
    conn.on('message', (m) => received.push(m.contents));
    await expect.poll(() => conn.state, { timeout: 15_000 }).toBe('open');
    const page = HAVE_BROWSER ? await openChat(l.url, g, cleanups) : undefined;
    const pageTexts = () => page?.locator('#messages li[data-msg-id] .text').allTextContents();
    const posted: string[] = [];
    /** A message posted now reaches the SDK connection and the browser page opened before. */
    const postAndReceive = async (text: string) => {
      await owner.post(g, text, `cid-${posted.length}`);
      posted.push(text);
      await expect
        .poll(() => received.filter((t) => posted.includes(t)), { timeout: 20_000 })
        .toEqual(posted);
      if (page) await expect.poll(pageTexts, { timeout: 20_000 }).toEqual(expect.arrayContaining(posted));
    };
    await postAndReceive('before growing');
    before = await readContent(target, groups, users, tokens, asUser);

    // Grow: the coordinator publishes the migration to shards 0-2, the launcher starts shard 3.
    const grow = await runReshard({ configPath }, ['--to', '4']);
    expect(grow.code, `${grow.stderr}\n${l.output()}`).toBe(0);
    expect(JSON.parse(grow.stdout)).toMatchObject({ migrated: true, to: { shards: 4 } });
    expect(grow.stderr).toContain('waiting for shard 3 to start');
    expect(l.output()).toMatch(/needs 4 shards: starting shard-3/);
    expect(await canConnect(base + 4)).toBe(true);
    await expect.poll(() => readFile(configPath, 'utf8')).toMatch(/^ {2}shards: 4$/m);
    expect(await readContent(target, groups, users, tokens, asUser)).toEqual(before);
    await postAndReceive('after growing');
    expect(conn.shard).toBe(3);
    before = await readContent(target, groups, users, tokens, asUser);

    // Shrink: everything moves off shards 2 and 3, then the launcher stops them.
    const shrink = await runReshard({ configPath }, ['--to', '2']);
    expect(shrink.code, `${shrink.stderr}\n${l.output()}`).toBe(0);
    expect(JSON.parse(shrink.stdout)).toMatchObject({ migrated: true, to: { shards: 2 } });
    // The launcher stops shard 3, then shard 2, and moves their databases to retired/.
    await expect
      .poll(() => /moved shard-2\.sqlite to .*retired/.test(l.output()), { timeout: 30_000 })
      .toBe(true);
    expect(l.output()).toMatch(/shard-3 stopped \(0\)[\s\S]*shard-2 stopped \(0\)/);
    for (const p of [base + 3, base + 4, base + 1013, base + 1014]) expect(await canConnect(p)).toBe(false);
    expect(await readFile(configPath, 'utf8')).toMatch(/^ {2}shards: 2$/m);
    const retired = await readdir(path.join(dataDir, 'retired'));
    expect(retired.filter((f) => /^shard-[23]\..*\.sqlite$/.test(f))).toHaveLength(2);
    expect(await readContent(target, groups, users, tokens, asUser)).toEqual(before);
    await postAndReceive('after shrinking');
    expect(conn.shard).toBeLessThan(2);
    before = await readContent(target, groups, users, tokens, asUser);
    conn.close();
    await ctrlC(l);
    expect(l.output()).toContain('shardchat local: stopped cleanly');

    // A restart without --shards starts the 2 shards local.yaml records, and serves everything.
    const again = await startLocal(dataDir, base, ['--no-demo']);
    expect(again.output()).toContain(`2 shards on ports ${base + 1}-${base + 2}`);
    target = router(again.url);
    expect(await readContent(target, groups, users, tokens, asUser)).toEqual(before);
    await ctrlC(again);

    // --shards 4 on this folder is refused, naming reshard.
    const refused = spawnSync(
      process.execPath,
      [CLI, 'local', '--port', String(base), '--data', dataDir, '--shards', '4', '--no-demo'],
      { env: childEnv(), encoding: 'utf8', timeout: 30_000 },
    );
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain(
      `holds a cluster of 2 shards; --shards 4 would hide the groups of the others. ` +
        `To change the number of shards of a running cluster: shardchat reshard --to 4 --config ${configPath}`,
    );
  }, 240_000);
});

/** A browser page in the chat of `group`, entered as a new user (joins it). */
async function openChat(url: string, group: string, cleanups: (() => Promise<void> | void)[]): Promise<Page> {
  const browser: Browser = await launchChromium();
  cleanups.push(() => browser.close());
  const page = await browser.newPage();
  page.on('pageerror', (err) => process.stderr.write(`page error: ${err.message}\n`));
  await page.goto(`${new URL(url).origin}/?group=${group}`);
  await page.waitForSelector('#entry-name');
  await page.fill('#entry-name', 'Wes');
  await page.fill('#entry-email', 'wes@example.com');
  await page.click('#entry-submit');
  await page.waitForSelector('#chat:not([hidden])');
  await page.waitForSelector('#state[data-state="open"]');
  return page;
}

/** The pid of shard i, from its own log line. */
async function shardPids(l: Local, i: number): Promise<number> {
  const m = new RegExp(`^shard-${i} +\\| .*shard listening shard=${i}`, 'm').exec(l.output());
  expect(m).not.toBeNull();
  // pino's pid field is hidden in the readable form; ask the OS which process listens.
  const { execFileSync } = await import('node:child_process');
  const port = Number(new URL(l.url).port) + 1 + i;
  const out = execFileSync('ss', ['-Hltnp', `sport = :${port}`], { encoding: 'utf8' });
  const pid = /pid=(\d+)/.exec(out)?.[1];
  expect(pid).toBeDefined();
  return Number(pid);
}
