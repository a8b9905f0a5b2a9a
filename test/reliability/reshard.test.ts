/**
 * Live resharding under load and with faults (docs/architecture.md section 7): while
 * posters, joiners and SDK subscribers use the cluster through the router, it grows
 * from 3 to 4 shards and shrinks back; the coordinator or a shard is killed at a
 * phase, the migration resumed or rolled back; the router restarted mid-migration.
 * Every acknowledged message is stored once, msgIds stay contiguous, epochs unchanged,
 * every subscriber gets everything once in order, and no client sees a 5xx.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import {
  users as makeUsers,
  percentile,
  postOnce,
  readAll,
  round1,
  sleep,
  startSecondRouter,
  summary,
} from '../helpers/reliability.js';
import { mapOf, runReshard } from '../helpers/reshard.js';
import { ReshardLoad } from '../helpers/reshard-load.js';

useProcessCleanup();
// Each test starts a cluster and migrates it, on 2 cores shared with other suites.
vi.setConfig({ testTimeout: 180_000, hookTimeout: 60_000 });
afterAll(() => defaultRegistry.cleanup());

let load: ReshardLoad | undefined;
afterEach(() => {
  load?.close();
  load = undefined;
});

async function cluster(assignment: 'modulo' | 'jump'): Promise<Cluster> {
  return startCluster(await defaultRegistry.tempDir(), {
    shards: 3,
    maxShards: 4,
    config: { shardSpec: { assignment }, shard: { reshard: { holdMs: 10_000 } } },
  });
}

/** Groups stored on shard i (its shardchat_shard_groups gauge). */
async function groupsOn(c: Cluster, i: number): Promise<number> {
  const text = await (await fetch(`${c.shards[i]?.adminUrl}/metrics`)).text();
  return Number(/^shardchat_shard_groups\{[^}]*\} (\d+)/m.exec(text)?.[1]);
}

async function expectMap(c: Cluster, n: number, shards: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const m = await mapOf(c, i);
    expect(m.shards, `shard ${i}`).toBe(shards);
    expect(m.migration, `shard ${i}`).toBeUndefined();
  }
}

describe.each(['modulo', 'jump'] as const)('resharding under load (%s)', (assignment) => {
  it('grows 3 to 4 and shrinks 4 to 3 with nothing lost, duplicated or failed', async () => {
    const c = await cluster(assignment);
    load = new ReshardLoad(c, `load-${assignment}`);
    await load.setup();
    load.start(80);
    await sleep(300);
    await c.startShard(3);
    const grow = await runReshard(c, ['--to', '4'], { SHARDCHAT_TEST_RESHARD_SLOW_MS: '20' });
    expect(grow.code, grow.stderr).toBe(0);
    await expectMap(c, 4, 4);
    await sleep(300);
    const shrink = await runReshard(c, ['--to', '3'], { SHARDCHAT_TEST_RESHARD_SLOW_MS: '20' });
    expect(shrink.code, shrink.stderr).toBe(0);
    await expectMap(c, 4, 3);
    const r = await load.finish();
    expect(r.fiveHundreds).toEqual([]);
    await load.verify();
    const g = JSON.parse(grow.stdout);
    const s = JSON.parse(shrink.stdout);
    summary(`reshard under load (${assignment})`, {
      acked: r.acked,
      growSeconds: round1(g.seconds),
      growHeldMs: Math.round(g.fencedSeconds * 1000),
      shrinkSeconds: round1(s.seconds),
      shrinkHeldMs: Math.round(s.fencedSeconds * 1000),
      postP50ms: round1(percentile(r.latencies, 50)),
      postP99ms: round1(percentile(r.latencies, 99)),
      postMaxMs: round1(Math.max(...r.latencies)),
    });
  });
});

describe('resharding with faults', () => {
  for (const phase of ['copy', 'fence', 'switch', 'cleanup'] as const) {
    it(`the coordinator killed at ${phase}: a rerun finishes the migration`, async () => {
      const c = await cluster('jump');
      load = new ReshardLoad(c, `kill-${phase}`);
      await load.setup();
      load.start(50);
      await c.startShard(3);
      const killed = await runReshard(c, ['--to', '4'], { SHARDCHAT_TEST_RESHARD_STOP_AT: phase });
      expect(killed.signal).toBe('SIGKILL');
      await sleep(200);
      const rerun = await runReshard(c, ['--to', '4']);
      expect(rerun.code, rerun.stderr).toBe(0);
      await expectMap(c, 4, 4);
      const r = await load.finish();
      expect(r.fiveHundreds).toEqual([]);
      await load.verify();
    });
  }

  it('the coordinator killed while fenced, then --abort: back to 3 shards, nothing lost', async () => {
    const c = await cluster('modulo');
    load = new ReshardLoad(c, 'abort');
    await load.setup();
    load.start(50);
    await c.startShard(3);
    const killed = await runReshard(c, ['--to', '4'], { SHARDCHAT_TEST_RESHARD_STOP_AT: 'tail' });
    expect(killed.signal).toBe('SIGKILL');
    const abort = await runReshard(c, ['--abort']);
    expect(abort.code, abort.stderr).toBe(0);
    expect(JSON.parse(abort.stdout)).toMatchObject({ aborted: true, map: { shards: 3 } });
    await expectMap(c, 4, 3);
    const r = await load.finish();
    expect(r.fiveHundreds).toEqual([]);
    await load.verify();
  });

  it('a shard down mid-migration: --status answers at once and lists it; --abort waits for it, then rolls back', async () => {
    const c = await cluster('modulo');
    load = new ReshardLoad(c, 'down');
    await load.setup();
    await c.startShard(3);
    const killed = await runReshard(c, ['--to', '4'], { SHARDCHAT_TEST_RESHARD_STOP_AT: 'copy' });
    expect(killed.signal).toBe('SIGKILL');
    await c.shards[3]?.proc.kill();
    // Bounded well below the 120 s a migration waits for a shard that does not answer.
    const st = await runReshard(c, ['--status'], {}, 30_000);
    expect(st.code, st.stderr).toBe(0);
    const status = JSON.parse(st.stdout) as {
      map: { migration?: { state: string } };
      shards: { shard: number; map: unknown; state: { error?: string } }[];
    };
    expect(status.map.migration?.state).toBe('copying');
    expect(status.shards.map((s) => s.shard)).toEqual([0, 1, 2, 3]);
    expect(status.shards[3]?.map).toBeNull();
    expect(status.shards[3]?.state.error).toMatch(/^shard 3 did not answer GET state/);
    // Shard 3 holds copies: the rollback needs it, waits for it, and says so.
    const aborting = runReshard(c, ['--abort']);
    await sleep(1500);
    await c.restartShard(3);
    const abort = await aborting;
    expect(abort.code, abort.stderr).toBe(0);
    expect(abort.stderr).toMatch(/waiting for shard 3/);
    expect(JSON.parse(abort.stdout)).toMatchObject({ aborted: true, map: { shards: 3 } });
    await expectMap(c, 4, 3);
    expect(await groupsOn(c, 3)).toBe(0);
    load.start(5);
    await load.finish();
    await load.verify();
  });

  it('a second coordinator is refused while one runs', async () => {
    const c = await cluster('jump');
    load = new ReshardLoad(c, 'lease');
    await load.setup();
    await c.startShard(3);
    // The first holds at its copy phase (lease taken, migration published) until released.
    const release = path.join(await defaultRegistry.tempDir(), 'release');
    const first = runReshard(c, ['--to', '4'], {
      SHARDCHAT_TEST_RESHARD_HOLD_AT: 'copy',
      SHARDCHAT_TEST_RESHARD_RELEASE_FILE: release,
    });
    for (const until = Date.now() + 30_000; (await mapOf(c, 0)).migration?.state !== 'copying'; ) {
      if (Date.now() > until) throw new Error('the first coordinator did not start the migration in 30 s');
      await sleep(50);
    }
    const second = await runReshard(c, ['--to', '4']);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/only one shardchat reshard at a time/);
    await writeFile(release, '');
    expect((await first).code).toBe(0);
  });

  for (const who of ['source', 'target'] as const) {
    it(`the ${who} shard SIGKILLed mid-copy and restarted: the migration completes`, async () => {
      const c = await cluster('jump');
      load = new ReshardLoad(c, `kill-${who}`);
      await load.setup();
      load.start(50);
      await c.startShard(3);
      const running = runReshard(c, ['--to', '4'], { SHARDCHAT_TEST_RESHARD_SLOW_MS: '200' });
      await sleep(1200);
      const victim = who === 'target' ? 3 : 0;
      await c.shards[victim]?.proc.kill();
      await sleep(500);
      await c.restartShard(victim);
      const r1 = await running;
      expect(r1.code, r1.stderr).toBe(0);
      await expectMap(c, 4, 4);
      const r = await load.finish();
      // The killed shard's own requests fail while it is down (503 from the router): the
      // posters retry them; what is checked is that nothing acknowledged is lost.
      await load.verify();
      expect(r.acked).toBeGreaterThan(0);
    });

    it(`the ${who} shard SIGKILLed while fenced (coordinator gone too) and restarted: a rerun completes`, async () => {
      const c = await cluster('jump');
      load = new ReshardLoad(c, `fence-${who}`);
      await load.setup();
      load.start(50);
      await c.startShard(3);
      // The coordinator dies right after the fence is stored on every shard.
      const killed = await runReshard(c, ['--to', '4'], { SHARDCHAT_TEST_RESHARD_STOP_AT: 'tail' });
      expect(killed.signal).toBe('SIGKILL');
      const victim = who === 'target' ? 3 : 0;
      await c.shards[victim]?.proc.kill();
      await sleep(300);
      const restarted = await c.restartShard(victim);
      // The fence is in the restarted shard's database: it comes back fenced.
      const fenced = await mapOf(c, victim);
      expect(fenced.migration?.state, `shard ${restarted.ordinal}`).toBe('fenced');
      const rerun = await runReshard(c, ['--to', '4']);
      expect(rerun.code, rerun.stderr).toBe(0);
      await expectMap(c, 4, 4);
      const r = await load.finish();
      await load.verify();
      expect(r.acked).toBeGreaterThan(0);
    });
  }

  it('the router restarted mid-migration learns the map from the shards', async () => {
    const c = await cluster('jump');
    load = new ReshardLoad(c, 'router');
    await load.setup();
    await c.startShard(3);
    const running = runReshard(c, ['--to', '4'], { SHARDCHAT_TEST_RESHARD_SLOW_MS: '200' });
    await sleep(1000);
    await c.restartRouter();
    const r1 = await running;
    expect(r1.code, r1.stderr).toBe(0);
    load.start(30);
    const r = await load.finish();
    expect(r.fiveHundreds).toEqual([]);
    await load.verify();
  });

  it('a stale router that never learned the new map still ends every request at the owner, once', async () => {
    const c = await cluster('modulo');
    // A router that never probes: it knows only what its configuration says (3 shards)
    // until a shard's answer tells it more.
    const stale = await startSecondRouter(c, undefined, { SHARDCHAT__topology__probeIntervalMs: '3600000' });
    const [u] = await makeUsers(c, 'stale', 1);
    const user = u as { id: string; token: string };
    const groups = Array.from({ length: 12 }, (_, i) => `stale-g${i}`);
    for (const g of groups) {
      const r = await postOnce(c.router.url, g, user.token, { contents: 'x', clientMsgId: 'x' });
      expect(r.status).toBe(404);
      const created = await fetch(`${c.router.url}/groups/${g}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${user.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ subject: g }),
      });
      expect(created.status).toBe(201);
    }
    await c.startShard(3);
    const grow = await runReshard(c, ['--to', '4']);
    expect(grow.code, grow.stderr).toBe(0);
    const before = await (await fetch(`${stale.adminUrl}/topology`)).json();
    expect(before.map.shards).toBe(3);
    // Every post through the stale router: the old owner answers 421 (nothing written),
    // the router retries at the owner the answer names.
    for (const g of groups) {
      const a = await postOnce(stale.url, g, user.token, { contents: 'via stale', clientMsgId: `${g}-1` });
      expect(a.status, JSON.stringify(a.body)).toBe(201);
      // The same message again, through the up-to-date router: recognised, not stored twice.
      const b = await postOnce(c.router.url, g, user.token, { contents: 'via stale', clientMsgId: `${g}-1` });
      expect(b.status).toBe(200);
      expect(b.body.msgId).toBe(a.body.msgId);
      const all = await readAll(stale.url, g, user.token);
      expect(all.map((m) => m.clientMsgId)).toEqual([`${g}-1`]);
    }
    const after = await (await fetch(`${stale.adminUrl}/topology`)).json();
    expect(after.map.shards).toBe(4);
    await stale.proc.kill();
  });
});
