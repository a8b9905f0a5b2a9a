/**
 * The processes of `shardchat local`: the router and one process per shard the cluster's
 * shard map needs. A process that exits unexpectedly is restarted after an exponential
 * backoff (common/backoff.ts); one that crashes soon after starting `maxQuickCrashes`
 * times in a row stops everything. Every `mapIntervalMs` the map is read from the
 * running shards (`readMap`): shard processes are started for ordinals the map needs
 * (a growing migration), and once the map is settled (no migration) with fewer shards
 * than are running, the extra ones (highest ordinals) are stopped with SIGTERM; a
 * settled shard count that differs from the recorded one is reported (`settled`, which
 * rewrites local.yaml). How processes are made and the map is read are injected, so the
 * logic runs in unit tests without real processes.
 */
import { Backoff, type BackoffOptions } from '../../common/backoff.js';
import { type ShardMap, shardsNeeded } from '../../common/placement.js';

/** A started process, as the supervisor sees it. */
export interface Proc {
  /** Its process id, when it has one (shown in the log). */
  readonly pid?: number | undefined;
  kill(signal: NodeJS.Signals): void;
  /** `cb` runs once, when the process has exited. */
  onExit(cb: (code: number | null, signal: NodeJS.Signals | null) => void): void;
}

export interface SupervisorOptions {
  /** The shard count recorded at start (local.yaml's topology.shards): shards 0..shards-1 are started. */
  shards: number;
  spawnShard(ordinal: number): Proc;
  spawnRouter(): Proc;
  /** The cluster's map as the running shards (these ordinals) report it; undefined when none does. */
  readMap(running: number[]): Promise<ShardMap | undefined>;
  /** The settled map's shard count differs from the recorded one: record it. */
  settled(shards: number): void;
  /** A shard was stopped for good after the cluster shrank. */
  retired?(ordinal: number): void;
  /** One line of the launcher's own output. */
  log(line: string): void;
  /** Everything stopped after a crash loop (stop() itself resolves when called directly). */
  gaveUp?(result: StopResult): void;
  /** Default 500 ms. */
  mapIntervalMs?: number;
  /** Between restarts of one process (default 500 ms doubling to 10 s). */
  backoff?: BackoffOptions;
  /** An exit within this long of starting is a quick crash (default 10 s). */
  quickCrashMs?: number;
  /** Quick crashes in a row of one process that stop everything (default 5). */
  maxQuickCrashes?: number;
  /** SIGKILL what has not exited this long after SIGTERM (default 15 s). */
  killAfterMs?: number;
  random?: () => number;
}

export interface StopResult {
  /** Processes that did not exit with 0, as `name (code or signal)`. */
  unclean: string[];
}

interface Managed {
  readonly name: string;
  readonly spawn: () => Proc;
  proc: Proc | undefined;
  startedAt: number;
  readonly backoff: Backoff;
  quickCrashes: number;
  restartTimer: ReturnType<typeof setTimeout> | undefined;
  /** Being stopped on purpose (a shrink, or stop()): its exit is not a crash. */
  stopping: boolean;
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** Times it was started (1 for the first start). */
  starts: number;
  exited: Promise<void>;
  markExited: () => void;
}

export class Supervisor {
  private readonly o: Required<
    Pick<SupervisorOptions, 'mapIntervalMs' | 'backoff' | 'quickCrashMs' | 'maxQuickCrashes' | 'killAfterMs'>
  > &
    SupervisorOptions;
  private readonly shardProcs = new Map<number, Managed>();
  private router: Managed | undefined;
  private recorded: number;
  private mapTimer: ReturnType<typeof setTimeout> | undefined;
  private stopping: Promise<StopResult> | undefined;
  private lastMapVersion = 0;

  constructor(o: SupervisorOptions) {
    this.o = {
      mapIntervalMs: 500,
      backoff: { minMs: 500, maxMs: 10_000, factor: 2 },
      quickCrashMs: 10_000,
      maxQuickCrashes: 5,
      killAfterMs: 15_000,
      ...o,
    };
    this.recorded = o.shards;
  }

  /** Starts shards 0..shards-1 and the router, then follows the map. */
  start(): void {
    for (let i = 0; i < this.o.shards; i++) this.startShard(i);
    this.router = this.manage('router', () => this.o.spawnRouter());
    this.scheduleMapRead();
  }

  /** Ordinals of the shard processes kept running (or being restarted). */
  get shards(): number[] {
    return [...this.shardProcs.keys()].sort((a, b) => a - b);
  }

  /** The shard count recorded now (local.yaml). */
  get recordedShards(): number {
    return this.recorded;
  }

  get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  /** Stops everything (SIGTERM, SIGKILL after killAfterMs) and resolves when all have exited. */
  stop(): Promise<StopResult> {
    if (this.stopping) return this.stopping;
    clearTimeout(this.mapTimer);
    const all = [...this.shardProcs.values(), ...(this.router ? [this.router] : [])];
    this.stopping = Promise.all(all.map((m) => this.terminate(m))).then(() => ({
      unclean: all
        .filter((m) => m.exit && m.exit.code !== 0)
        .map((m) => `${m.name} (${m.exit?.signal ?? m.exit?.code})`),
    }));
    return this.stopping;
  }

  /** One read of the map and what follows from it (the timer calls it; tests may too). */
  async followMap(): Promise<void> {
    if (this.stopping) return;
    let map: ShardMap | undefined;
    try {
      map = await this.o.readMap(this.shards.filter((i) => this.shardProcs.get(i)?.proc));
    } catch {
      map = undefined;
    }
    if (!map || this.stopping) return;
    const v = `map v${map.version}`;
    const m = map.migration;
    const about = m
      ? `${v} (${m.from.shards} → ${m.to.shards} shards, ${m.state})`
      : `${v} (${map.shards} shards)`;
    if (map.version !== this.lastMapVersion) {
      if (this.lastMapVersion !== 0) this.o.log(`the cluster's shard map is now ${about}`);
      this.lastMapVersion = map.version;
    }
    const need = shardsNeeded(map);
    for (let i = 0; i < need; i++) {
      if (this.shardProcs.has(i)) continue;
      this.o.log(`${about} needs ${need} shards: starting shard-${i}`);
      this.startShard(i);
    }
    if (m) return;
    if (map.shards !== this.recorded) {
      this.o.log(
        `${v}: the cluster has ${map.shards} shards (was ${this.recorded}); recording it in local.yaml`,
      );
      this.recorded = map.shards;
      this.o.settled(map.shards);
    }
    const extra = this.shards.filter((i) => i >= map.shards && !this.shardProcs.get(i)?.stopping).reverse();
    if (extra.length > 0) void this.retire(extra, v, map.shards);
  }

  private async retire(ordinals: number[], v: string, shards: number): Promise<void> {
    for (const i of ordinals) {
      const mg = this.shardProcs.get(i);
      if (mg) mg.stopping = true;
    }
    for (const i of ordinals) {
      const mg = this.shardProcs.get(i);
      if (!mg || this.stopping) return;
      this.o.log(`${v} has ${shards} shards: stopping shard-${i}`);
      await this.terminate(mg);
      if (this.stopping) return;
      this.shardProcs.delete(i);
      this.o.log(`shard-${i} stopped (${mg.exit?.signal ?? mg.exit?.code ?? 'not running'})`);
      this.o.retired?.(i);
    }
  }

  private startShard(ordinal: number): void {
    this.shardProcs.set(
      ordinal,
      this.manage(`shard-${ordinal}`, () => this.o.spawnShard(ordinal)),
    );
  }

  private manage(name: string, spawn: () => Proc): Managed {
    const m: Managed = {
      name,
      spawn,
      proc: undefined,
      startedAt: 0,
      backoff: new Backoff(this.o.backoff, this.o.random),
      quickCrashes: 0,
      restartTimer: undefined,
      stopping: false,
      exit: undefined,
      starts: 0,
      exited: Promise.resolve(),
      markExited: () => {},
    };
    this.run(m);
    return m;
  }

  private run(m: Managed): void {
    m.restartTimer = undefined;
    m.exit = undefined;
    m.startedAt = Date.now();
    m.exited = new Promise<void>((resolve) => {
      m.markExited = resolve;
    });
    let proc: Proc;
    try {
      proc = m.spawn();
    } catch (err) {
      this.o.log(`${m.name} could not be started: ${(err as Error).message}`);
      this.exited(m, undefined, 1, null);
      return;
    }
    m.proc = proc;
    m.starts++;
    this.o.log(`${m.name} ${m.starts === 1 ? 'started' : 'started again'} (pid ${proc.pid ?? '?'})`);
    proc.onExit((code, signal) => this.exited(m, proc, code, signal));
  }

  private exited(
    m: Managed,
    proc: Proc | undefined,
    code: number | null,
    signal: NodeJS.Signals | null,
  ): void {
    if (proc && m.proc !== proc) return;
    m.proc = undefined;
    m.exit = { code, signal };
    m.markExited();
    if (m.stopping || this.stopping) return;
    const ran = Date.now() - m.startedAt;
    if (ran < this.o.quickCrashMs) {
      m.quickCrashes++;
    } else {
      m.quickCrashes = 0;
      m.backoff.reset();
    }
    const how = `${signal ?? code}`;
    const who = `${m.name} (pid ${proc?.pid ?? '?'})`;
    if (m.quickCrashes >= this.o.maxQuickCrashes) {
      this.o.log(
        `${who} exited (${how}): ${m.quickCrashes} exits in a row, each within ${Math.round(this.o.quickCrashMs / 1000)} s of starting; stopping everything`,
      );
      void this.stop().then((r) => this.o.gaveUp?.(r));
      return;
    }
    const delay = m.backoff.next();
    this.o.log(`${who} exited (${how}) after ${formatMs(ran)}; restarting it in ${formatMs(delay)}`);
    m.restartTimer = setTimeout(() => {
      if (!m.stopping && !this.stopping) this.run(m);
    }, delay);
  }

  /** SIGTERM, then SIGKILL after killAfterMs; resolves once it has exited (or was not running). */
  private async terminate(m: Managed): Promise<void> {
    m.stopping = true;
    clearTimeout(m.restartTimer);
    m.restartTimer = undefined;
    const proc = m.proc;
    if (!proc) return;
    proc.kill('SIGTERM');
    const kill = setTimeout(() => {
      if (m.proc === proc) proc.kill('SIGKILL');
    }, this.o.killAfterMs);
    await m.exited;
    clearTimeout(kill);
  }

  private scheduleMapRead(): void {
    if (this.stopping) return;
    this.mapTimer = setTimeout(() => {
      void this.followMap().finally(() => this.scheduleMapRead());
    }, this.o.mapIntervalMs);
  }
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}
