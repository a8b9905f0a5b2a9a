/**
 * The supervisor of `shardchat local` (cli/local/supervisor.ts) with fake processes and
 * an injected map source: restarts with backoff, the crash loop that stops everything,
 * a clean stop, and following the shard map (start shards a migration needs, record a
 * settled count, stop the extra shards once a shrink has settled).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { readMap } from '../../../cli/local/launch.js';
import { type Proc, Supervisor, type SupervisorOptions } from '../../../cli/local/supervisor.js';
import type { ShardMap } from '../../../common/placement.js';
import { sleep, until } from '../../helpers/fake-chat-server.js';

let nextPid = 1000;

class FakeProc implements Proc {
  readonly signals: NodeJS.Signals[] = [];
  readonly pid = nextPid++;
  dead = false;
  private readonly cbs: ((code: number | null, signal: NodeJS.Signals | null) => void)[] = [];

  constructor(
    readonly name: string,
    /** Whether SIGTERM makes it exit (with 0, as the real processes do on a clean shutdown). */
    private readonly obeysTerm = true,
  ) {}

  kill(signal: NodeJS.Signals): void {
    this.signals.push(signal);
    if (signal === 'SIGKILL' || this.obeysTerm)
      setTimeout(() => this.exit(signal === 'SIGKILL' ? null : 0, signal === 'SIGKILL' ? signal : null), 1);
  }

  onExit(cb: (code: number | null, signal: NodeJS.Signals | null) => void): void {
    this.cbs.push(cb);
  }

  exit(code: number | null, signal: NodeJS.Signals | null = null): void {
    if (this.dead) return;
    this.dead = true;
    for (const cb of this.cbs) cb(code, signal);
  }
}

interface Harness {
  sup: Supervisor;
  spawned: FakeProc[];
  lines: string[];
  settled: number[];
  retired: number[];
  gaveUp: string[][];
  setMap(m: ShardMap | undefined): void;
  live(name: string): FakeProc | undefined;
}

const supervisors: Supervisor[] = [];
afterEach(async () => {
  await Promise.all(supervisors.splice(0).map((s) => s.stop()));
});

function harness(extra: Partial<SupervisorOptions> = {}, stubborn: string[] = []): Harness {
  const spawned: FakeProc[] = [];
  const lines: string[] = [];
  const settled: number[] = [];
  const retired: number[] = [];
  const gaveUp: string[][] = [];
  let map: ShardMap | undefined;
  const make = (name: string) => {
    const p = new FakeProc(name, !stubborn.includes(name));
    spawned.push(p);
    return p;
  };
  const sup = new Supervisor({
    shards: 3,
    spawnShard: (i) => make(`shard-${i}`),
    spawnRouter: () => make('router'),
    readMap: async () => map,
    settled: (n) => settled.push(n),
    retired: (i) => retired.push(i),
    log: (l) => lines.push(l),
    gaveUp: (r) => gaveUp.push(r.unclean),
    backoff: { minMs: 20, maxMs: 80, factor: 2, jitter: [1, 1] },
    quickCrashMs: 5_000,
    mapIntervalMs: 60_000, // the tests call followMap themselves
    killAfterMs: 200,
    ...extra,
  });
  supervisors.push(sup);
  return {
    sup,
    spawned,
    lines,
    settled,
    retired,
    gaveUp,
    setMap: (m) => {
      map = m;
    },
    live: (name) => spawned.filter((p) => p.name === name && !p.dead).at(-1),
  };
}

const names = (ps: FakeProc[]) => ps.map((p) => p.name);

describe('local mode supervisor', () => {
  it('starts shards 0..S-1 and the router; restarts a process that exits, after the backoff', async () => {
    const h = harness();
    h.sup.start();
    expect(names(h.spawned)).toEqual(['shard-0', 'shard-1', 'shard-2', 'router']);
    const t0 = Date.now();
    h.live('shard-1')?.exit(null, 'SIGKILL');
    await until(() => h.spawned.length === 5, 'the restart');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(15);
    expect(h.spawned[4]?.name).toBe('shard-1');
    const killed = h.spawned[1] as FakeProc;
    expect(h.lines).toContain(`shard-1 started (pid ${killed.pid})`);
    expect(
      h.lines.some((l) =>
        new RegExp(
          `^shard-1 \\(pid ${killed.pid}\\) exited \\(SIGKILL\\) after .*; restarting it in 20 ms$`,
        ).test(l),
      ),
    ).toBe(true);
    // When it comes back, with its new pid.
    expect(h.lines).toContain(`shard-1 started again (pid ${h.spawned[4]?.pid})`);
    // The router too.
    h.live('router')?.exit(1);
    await until(() => h.spawned.length === 6, 'the router restarted');
    expect(h.spawned[5]?.name).toBe('router');
    expect(h.sup.shards).toEqual([0, 1, 2]);
  });

  it('a process that crashes quickly 5 times in a row stops everything, with the backoff growing between', async () => {
    const h = harness();
    h.sup.start();
    for (let n = 1; n <= 5; n++) {
      await until(() => h.live('shard-2') !== undefined, 'shard-2 running');
      h.live('shard-2')?.exit(3);
    }
    await until(() => h.gaveUp.length === 1, 'gave up');
    expect(
      h.lines.filter((l) => /^shard-2 \(pid \d+\) exited \(3\) after/.test(l)).map((l) => l.split('in ')[1]),
    ).toEqual(['20 ms', '40 ms', '80 ms', '80 ms']);
    expect(h.lines).toContain(
      `shard-2 (pid ${h.spawned.at(-1)?.pid}) exited (3): 5 exits in a row, each within 5 s of starting; stopping everything`,
    );
    // Everything else got SIGTERM and exited; shard-2 is reported as not clean.
    for (const p of h.spawned.filter((x) => x.name !== 'shard-2')) {
      expect(p.signals).toEqual(['SIGTERM']);
      expect(p.dead).toBe(true);
    }
    expect(h.gaveUp[0]).toEqual(['shard-2 (3)']);
    await sleep(150);
    expect(h.spawned.filter((p) => p.name === 'shard-2')).toHaveLength(5);
  });

  it('a crash after a long run does not count towards the crash loop and resets the backoff', async () => {
    const h = harness({ quickCrashMs: 60 });
    h.sup.start();
    for (let n = 0; n < 8; n++) {
      await until(() => h.live('shard-0') !== undefined, 'shard-0 running');
      await sleep(80); // longer than quickCrashMs
      h.live('shard-0')?.exit(1);
    }
    await until(() => h.spawned.filter((p) => p.name === 'shard-0').length === 9, 'restarted every time');
    expect(h.gaveUp).toEqual([]);
    expect(h.lines.filter((l) => l.startsWith('shard-0 exited')).every((l) => l.endsWith('in 20 ms'))).toBe(
      true,
    );
  });

  it('stop() sends SIGTERM to all, SIGKILL to what does not exit, and reports what was not clean', async () => {
    const h = harness({}, ['shard-1']);
    h.sup.start();
    const r = await h.sup.stop();
    expect(h.live('shard-1')).toBeUndefined();
    expect(h.spawned.find((p) => p.name === 'shard-1')?.signals).toEqual(['SIGTERM', 'SIGKILL']);
    expect(h.spawned.find((p) => p.name === 'shard-0')?.signals).toEqual(['SIGTERM']);
    expect(r.unclean).toEqual(['shard-1 (SIGKILL)']);
    // Nothing is restarted after a stop.
    await sleep(100);
    expect(h.spawned).toHaveLength(4);
  });

  it('without a map (shards that do not report one) it changes nothing', async () => {
    const h = harness();
    h.sup.start();
    h.setMap(undefined);
    await h.sup.followMap();
    expect(h.sup.shards).toEqual([0, 1, 2]);
    expect(h.settled).toEqual([]);
    expect(h.spawned).toHaveLength(4);
  });

  it('grows: starts the shards a migration needs, and records the count once the map settles', async () => {
    const h = harness();
    h.sup.start();
    h.setMap({ version: 1, shards: 3, assignment: 'modulo' });
    await h.sup.followMap();
    expect(h.spawned).toHaveLength(4);
    h.setMap({
      version: 2,
      shards: 3,
      assignment: 'modulo',
      migration: {
        from: { shards: 3, assignment: 'modulo' },
        to: { shards: 5, assignment: 'modulo' },
        state: 'copying',
        startedAt: Date.now(),
      },
    });
    await h.sup.followMap();
    expect(names(h.spawned.slice(4))).toEqual(['shard-3', 'shard-4']);
    expect(h.sup.shards).toEqual([0, 1, 2, 3, 4]);
    expect(h.lines).toContain('map v2 (3 → 5 shards, copying) needs 5 shards: starting shard-3');
    // Not settled yet: local.yaml keeps 3.
    expect(h.settled).toEqual([]);
    await h.sup.followMap();
    expect(h.spawned).toHaveLength(6);
    h.setMap({ version: 4, shards: 5, assignment: 'modulo' });
    await h.sup.followMap();
    expect(h.settled).toEqual([5]);
    expect(h.sup.recordedShards).toBe(5);
    expect(h.lines).toContain('map v4: the cluster has 5 shards (was 3); recording it in local.yaml');
    await h.sup.followMap();
    expect(h.settled).toEqual([5]);
    // A new shard that crashes is restarted like the others.
    h.live('shard-4')?.exit(1);
    await until(() => h.spawned.length === 7, 'shard-4 restarted');
    expect(h.spawned[6]?.name).toBe('shard-4');
  });

  it('shrinks: keeps the extra shards through the migration, then stops them (highest first) once settled', async () => {
    const h = harness({ shards: 4 });
    h.sup.start();
    const from = { shards: 4, assignment: 'jump' as const };
    const to = { shards: 2, assignment: 'jump' as const };
    for (const state of ['copying', 'fenced'] as const) {
      h.setMap({ version: 2, ...from, migration: { from, to, state, startedAt: 0 } });
      await h.sup.followMap();
    }
    h.setMap({ version: 3, ...to, migration: { from, to, state: 'switched', startedAt: 0 } });
    await h.sup.followMap();
    expect(h.sup.shards).toEqual([0, 1, 2, 3]);
    expect(h.spawned.every((p) => p.signals.length === 0)).toBe(true);
    expect(h.settled).toEqual([]);

    h.setMap({ version: 4, ...to });
    await h.sup.followMap();
    expect(h.settled).toEqual([2]);
    await until(() => h.retired.length === 2, 'both extra shards stopped');
    expect(h.retired).toEqual([3, 2]);
    expect(h.sup.shards).toEqual([0, 1]);
    for (const n of ['shard-2', 'shard-3']) {
      const p = h.spawned.find((x) => x.name === n);
      expect(p?.signals).toEqual(['SIGTERM']);
      expect(p?.dead).toBe(true);
    }
    expect(h.lines).toContain('map v4 has 2 shards: stopping shard-3');
    expect(h.lines).toContain('shard-3 stopped (0)');
    // Stopped on purpose: not restarted.
    await sleep(100);
    expect(h.spawned).toHaveLength(5);
    await h.sup.followMap();
    expect(h.spawned).toHaveLength(5);
  });

  it('follows the map on its own every mapIntervalMs', async () => {
    const h = harness({ mapIntervalMs: 20 });
    h.setMap({ version: 2, shards: 4, assignment: 'modulo' });
    h.sup.start();
    await until(() => h.sup.shards.length === 4, 'shard-3 started from the map');
    await until(() => h.settled.length === 1, 'recorded');
    expect(h.settled).toEqual([4]);
  });
});

describe('reading the map from the shards (cli/local/launch.ts readMap)', () => {
  it('takes the newest valid `map` of the /readyz answers; none without one', async () => {
    const bodies = [
      { ready: true, map: { version: 3, shards: 4, assignment: 'jump' } },
      { ready: false, map: { version: 5, shards: 3, assignment: 'jump', migration: undefined } },
      { ready: true }, // a shard that does not report a map (yet)
      { ready: true, map: { version: 9, shards: 0, assignment: 'jump' } }, // not a valid map
    ];
    const servers = await Promise.all(
      bodies.map(
        (b, i) =>
          new Promise<http.Server>((resolve) => {
            const s = http.createServer((_req, res) => {
              res.writeHead(i === 1 ? 503 : 200, { 'content-type': 'application/json' });
              res.end(JSON.stringify(b));
            });
            s.listen(0, '127.0.0.1', () => resolve(s));
          }),
      ),
    );
    const url = (s: http.Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    try {
      const urls = servers.map(url);
      expect(await readMap(urls)).toEqual({ version: 5, shards: 3, assignment: 'jump' });
      expect(await readMap([urls[0] as string, 'http://127.0.0.1:1'])).toMatchObject({ version: 3 });
      expect(await readMap(urls.slice(2))).toBeUndefined();
      expect(await readMap([])).toBeUndefined();
    } finally {
      for (const s of servers) s.close();
    }
  });
});
