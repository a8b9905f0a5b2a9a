/**
 * `shardchat local` (what npm start runs) on the built tree: one terminal of readable,
 * prefixed logs; a restart keeps conversations and issued tokens (the secret lives in
 * the data folder) and does not seed the demo twice; a shard that dies is restarted;
 * a data folder keeps its shard count (a different --shards is refused). Following the
 * shard map is tested as a unit (test/unit/cli/local-supervisor.test.ts).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ChatApi } from '../../client/index.js';
import { freeLocalBase, groupAlive, killGroup } from '../helpers/local.js';
import { CLI, canConnect, childEnv, defaultRegistry, useProcessCleanup } from '../helpers/processes.js';

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

  it('--no-demo seeds nothing; a killed shard is restarted; a different --shards is refused', async () => {
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
    // Kill shard 1 (port base+2): local restarts it, and it serves again.
    const pid = await shardPids(l, 1);
    process.kill(pid, 'SIGKILL');
    await expect
      .poll(() => /shard-1 exited \(SIGKILL\) after .*; restarting it in/.test(l.output()), {
        timeout: 30_000,
        interval: 100,
      })
      .toBe(true);
    await expect
      .poll(() => (l.output().match(/shard listening shard=1/g) ?? []).length, {
        timeout: 30_000,
        interval: 200,
      })
      .toBe(2);
    expect(await shardPids(l, 1)).not.toBe(pid);
    expect(groupAlive(l.child.pid as number)).toBe(true);
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
