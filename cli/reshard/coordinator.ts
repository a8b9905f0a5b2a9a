/**
 * The coordinator of a migration of the shard map (docs/architecture.md section 7). All
 * of its state is in the shards' stored maps, so a rerun after any crash continues
 * where the maps say the migration is:
 *
 *   (no migration) --start--> copying --fence--> fenced --switch--> switched --finish--> (no migration)
 *
 * copying: every moving key is copied from its source to its target while the source
 *   serves, then what changed meanwhile, again, until little is left;
 * fenced: the sources hold the writes of moving keys (after the writes admitted before
 *   are done); what changed since the last round is copied: the targets now hold all;
 * switched: the new layout owns every key (held writes are answered 421 towards their
 *   new owner, which routers and shards follow); the sources delete their old copies;
 * finish: the map without a migration. An abort before the switch returns to the old
 *   layout, and the targets delete what they had received.
 */
import { initHash } from '../../common/hash.js';
import { type Layout, Placement, type ShardMap, sameLayout, shardsNeeded } from '../../common/placement.js';
import type { Message } from '../../common/protocol.js';
import { ShardCallError, type ShardCalls } from './shard-calls.js';

export type Phase = 'start' | 'copy' | 'catch-up' | 'fence' | 'tail' | 'switch' | 'cleanup' | 'done';

export interface Progress {
  phase: Phase;
  /** Keys copied in this phase, of `keysTotal` (when known). */
  keys: number;
  keysTotal: number | undefined;
  messages: number;
  bytes: number;
}

export interface Summary {
  from: Layout;
  to: Layout;
  version: number;
  /** False when the cluster already had the layout asked for. */
  migrated: boolean;
  keys: { groups: number; users: number };
  messages: number;
  bytes: number;
  seconds: number;
  /** From the fence to the switch: the longest any moving key's writes could be held. */
  fencedSeconds: number;
  phases: Partial<Record<Phase, number>>;
}

export interface CoordinatorOptions {
  calls: ShardCalls;
  /** Names this coordinator in the shards' lease. */
  holder: string;
  progress?(p: Progress): void;
  log?(message: string): void;
  /** Tests: the process kills itself when it reaches this phase. */
  stopAt?: Phase;
  /** Tests: a pause after every copied batch and at every phase (a longer migration). */
  slowMs?: number;
  /** Tests: at this phase, waits until `released()` (the lease is kept meanwhile). */
  holdAt?: Phase;
  released?(): Promise<void>;
  /** True when the holder of a lease is known to be gone (a process of this machine that ended). */
  gone?(holder: string): boolean;
}

interface ShardState {
  map: ShardMap;
}

interface ExportedGroup {
  id: string;
  snapshot?: unknown;
  messages: Message[];
  more: boolean;
}

const LEASE_MS = 30_000;
/** Keys per export call, messages per group in it, and messages in all. */
const BATCH = 100;
const PAGE = 1000;
const BUDGET = 2000;
/** Catch-up rounds stop when fewer keys than this changed (the rest is copied fenced). */
const SMALL_TAIL = 200;
const MAX_ROUNDS = 5;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Coordinator {
  private readonly calls: ShardCalls;
  private leaseTimer: NodeJS.Timeout | undefined;
  private span = 0;
  private placement!: Placement;
  /** Per group: the last msgId its target stored. */
  private readonly copied = new Map<string, number>();
  private readonly counts = { messages: 0, bytes: 0 };
  private readonly moved = { groups: new Set<string>(), users: new Set<string>() };
  private progressState: Progress = { phase: 'start', keys: 0, keysTotal: undefined, messages: 0, bytes: 0 };
  private readonly phases: Partial<Record<Phase, number>> = {};

  constructor(private readonly o: CoordinatorOptions) {
    this.calls = o.calls;
  }

  /**
   * The maps of the shards (0 first: it is in every map), and the newest. `waitMs`: how
   * long each shard may stay unreachable (default: as long as the calls wait); shards
   * 1.. that do not answer by then are listed with the error, never left out.
   */
  async status(opts: { waitMs?: number } = {}): Promise<{
    map: ShardMap;
    shards: { shard: number; map: ShardMap | null; state?: unknown }[];
  }> {
    const wait = opts.waitMs === undefined ? {} : { unreachableMs: opts.waitMs };
    const first = await this.calls.call<ShardState>(0, 'GET', 'state', undefined, wait);
    const n = shardsNeeded(first.map);
    const shards = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        try {
          const s = await this.calls.call<ShardState & Record<string, unknown>>(
            i,
            'GET',
            'state',
            undefined,
            wait,
          );
          return { shard: i, map: s.map, state: s };
        } catch (err) {
          return { shard: i, map: null, state: { error: (err as Error).message } };
        }
      }),
    );
    let map = first.map;
    for (const s of shards) if (s.map && s.map.version > map.version) map = s.map;
    return { map, shards };
  }

  /**
   * Migrates the cluster to `to` (or continues the migration to it), and returns when it
   * serves by it. `only`: do it only when it grows (or only when it shrinks) the cluster,
   * else change nothing (Helm's hooks: shrink before the pods go, grow after they came).
   */
  async run(to: Layout, only?: 'grow' | 'shrink'): Promise<Summary> {
    await initHash();
    const started = performance.now();
    let fencedAt = 0;
    let fencedSeconds = 0;
    let map = await this.current();
    const from: Layout = map.migration?.from ?? { shards: map.shards, assignment: map.assignment };
    if (map.migration && !sameLayout(map.migration.to, to))
      throw new Error(
        `a migration to ${map.migration.to.shards} shards (${map.migration.to.assignment}) is under way: rerun with --to ${map.migration.to.shards} --assignment ${map.migration.to.assignment} to finish it, or --abort to roll it back`,
      );
    if (only && !(only === 'grow' ? to.shards > from.shards : to.shards < from.shards)) {
      this.log(
        `nothing to do with --only ${only}: the cluster has ${from.shards} shards, ${to.shards} asked for`,
      );
      return this.summary(from, to, map, false, started, 0);
    }
    if (!map.migration && sameLayout(map, to)) {
      this.log(`the cluster already has ${to.shards} shards (${to.assignment}), map version ${map.version}`);
      return this.summary(from, to, map, false, started, 0);
    }
    // The shards the map needs now; the new ones of a growing migration are started only
    // once the running shards hold its map (local mode's launcher follows it, as an
    // operator scaling a StatefulSet may), so they are waited for after it is published.
    const running = shardsNeeded(map);
    await this.takeLease(running);
    try {
      if (!map.migration) {
        await this.phase('start');
        map = await this.publish(
          {
            version: map.version + 1,
            shards: map.shards,
            assignment: map.assignment,
            migration: { from, to, state: 'copying', startedAt: Date.now() },
          },
          running,
        );
        this.log(
          `migration from ${from.shards} to ${to.shards} shards (${to.assignment}) started: map version ${map.version}`,
        );
      }
      await this.join(map);
      this.placement = new Placement(map);
      if (map.migration?.state === 'copying') {
        await this.phase('copy');
        const since = await this.generations();
        await this.copyAll();
        let gens = since;
        for (let round = 1; round <= MAX_ROUNDS; round++) {
          await this.phase('catch-up');
          const changed = await this.changedSince(gens);
          gens = changed.generations;
          if (changed.all) await this.copyAll();
          else await this.copyKeys(changed.keys);
          if (!changed.all && changed.keys.length < SMALL_TAIL) break;
        }
        await this.phase('fence');
        fencedAt = performance.now();
        map = await this.publish({
          ...map,
          version: map.version + 1,
          migration: { ...(map.migration as NonNullable<ShardMap['migration']>), state: 'fenced' },
        });
        this.placement = new Placement(map);
        await this.phase('tail');
        const tail = await this.changedSince(gens);
        if (tail.all) await this.copyAll();
        else await this.copyKeys(tail.keys);
      } else if (map.migration?.state === 'fenced') {
        // Resumed while fenced: what changed before is not known here; nothing changes now.
        fencedAt = performance.now();
        await this.phase('tail');
        await this.copyAll();
      }
      if (map.migration?.state === 'fenced') {
        await this.phase('switch');
        const m = map.migration;
        map = await this.publish({
          version: map.version + 1,
          shards: to.shards,
          assignment: to.assignment,
          migration: { ...m, state: 'switched' },
        });
        fencedSeconds = (performance.now() - fencedAt) / 1000;
        this.log(
          `switched: ${to.shards} shards own every key (map version ${map.version}), writes were held ${fencedSeconds.toFixed(3)} s at most`,
        );
      }
      await this.phase('cleanup');
      await this.eachShard(shardsNeeded(map), (i) => this.calls.call(i, 'POST', 'drop'));
      const finalMap = await this.publish({
        version: map.version + 1,
        shards: to.shards,
        assignment: to.assignment,
      });
      await this.phase('done');
      return this.summary(from, to, finalMap, true, started, fencedSeconds);
    } finally {
      await this.releaseLease();
    }
  }

  /** Rolls back a migration that has not switched: the old layout again, the targets' copies deleted. */
  async abort(): Promise<{ map: ShardMap; aborted: boolean }> {
    const map = await this.current();
    const m = map.migration;
    if (!m) return { map, aborted: false };
    if (m.state === 'switched')
      throw new Error(
        'the migration has switched already: it cannot be rolled back; run shardchat reshard again to finish it',
      );
    await this.takeLease(shardsNeeded(map));
    try {
      const back = await this.publish(
        { version: map.version + 1, shards: m.from.shards, assignment: m.from.assignment },
        shardsNeeded(map),
      );
      await this.eachShard(shardsNeeded(map), (i) => this.calls.call(i, 'POST', 'drop'));
      this.log(
        `migration to ${m.to.shards} shards rolled back: map version ${back.version}, ${m.from.shards} shards`,
      );
      return { map: back, aborted: true };
    } finally {
      await this.releaseLease();
    }
  }

  // --- the map ---

  /** The newest map any shard holds, published again to those that hold an older one. */
  private async current(): Promise<ShardMap> {
    const st = await this.status();
    const behind = st.shards.some((s) => !s.map || s.map.version < st.map.version);
    return behind ? this.publish(st.map) : st.map;
  }

  /**
   * Stores `map` on the shards 0..span-1 (by default every shard it concerns) and on
   * every shard it was stored on before, all at once.
   */
  private async publish(map: ShardMap, span = shardsNeeded(map)): Promise<ShardMap> {
    this.span = Math.max(this.span, span);
    this.stopIf(this.progressState.phase);
    await this.eachShard(this.span, async (i) => {
      try {
        await this.calls.call(i, 'POST', 'map', { map });
      } catch (err) {
        // A shard beyond the new map that already holds a newer version is fine.
        if (!(err instanceof ShardCallError && err.code === 'stale_map')) throw err;
        throw new Error(
          `shard ${i} holds a newer map than this coordinator: ${err.message}; rerun the command`,
        );
      }
    });
    return map;
  }

  /**
   * The shards `map` needs beyond those it was published to: waits for each to answer
   * (started by whoever follows the map), then gives it the lease and the map.
   */
  private async join(map: ShardMap): Promise<void> {
    const from = this.span;
    const need = shardsNeeded(map);
    if (need <= from) return;
    const fresh = Array.from({ length: need - from }, (_, k) => from + k);
    this.log(`waiting for shard${fresh.length > 1 ? 's' : ''} ${fresh.join(', ')} to start`);
    this.span = need;
    await Promise.all(
      fresh.map(async (i) => {
        try {
          await this.calls.call(i, 'POST', 'lease', { holder: this.o.holder, ttlMs: LEASE_MS });
        } catch (err) {
          if (!(err instanceof ShardCallError) || err.status !== undefined) throw err;
          throw new Error(
            `${err.message}: the migration needs shard ${i} running (shardchat local starts it; ` +
              `in Kubernetes scale the StatefulSet to ${need}); rerun the command once it runs, or --abort`,
          );
        }
        await this.calls.call(i, 'POST', 'map', { map });
      }),
    );
    this.log(`shard${fresh.length > 1 ? 's' : ''} ${fresh.join(', ')} joined (map version ${map.version})`);
  }

  private async eachShard<T>(n: number, f: (i: number) => Promise<T>): Promise<T[]> {
    return Promise.all(Array.from({ length: n }, (_, i) => f(i)));
  }

  // --- copying ---

  private sources(): number[] {
    const m = this.placement.map.migration as NonNullable<ShardMap['migration']>;
    return Array.from({ length: m.from.shards }, (_, i) => i);
  }

  private async generations(): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    for (const s of this.sources()) {
      const r = await this.calls.call<{ generation: number }>(s, 'GET', 'changed');
      out.set(s, r.generation);
    }
    return out;
  }

  /** Keys changed on every source since its generation; `all` when a source cannot tell (it restarted). */
  private async changedSince(
    since: Map<number, number>,
  ): Promise<{ keys: string[]; all: boolean; generations: Map<number, number> }> {
    const keys: string[] = [];
    let all = false;
    const generations = new Map<number, number>();
    for (const s of this.sources()) {
      const r = await this.calls.call<{ generation: number; keys: string[]; complete: boolean }>(
        s,
        'GET',
        `changed?since=${since.get(s) ?? 0}`,
      );
      generations.set(s, r.generation);
      keys.push(...r.keys);
      if (!r.complete) all = true;
    }
    return { keys, all, generations };
  }

  /** Copies every moving key of every source. */
  private async copyAll(): Promise<void> {
    let total = 0;
    const lists: { source: number; groups: string[]; users: string[] }[] = [];
    for (const s of this.sources()) {
      const groups: string[] = [];
      const users: string[] = [];
      for (let cursor = ''; ; ) {
        const page = await this.calls.call<{ groups: string[]; users: string[]; next: string | null }>(
          s,
          'GET',
          `keys?cursor=${encodeURIComponent(cursor)}&limit=5000`,
        );
        groups.push(...page.groups);
        users.push(...page.users);
        if (page.next === null) break;
        cursor = page.next;
      }
      total += groups.length + users.length;
      lists.push({ source: s, groups, users });
    }
    this.progressState = { ...this.progressState, keys: 0, keysTotal: total };
    for (const l of lists) await this.copyFrom(l.source, l.groups, l.users);
  }

  /** Copies these keys (each as a group and as a user: a changed key may be either). */
  private async copyKeys(keys: string[]): Promise<void> {
    this.progressState = { ...this.progressState, keys: 0, keysTotal: keys.length };
    const bySource = new Map<number, string[]>();
    for (const k of new Set(keys)) {
      const mv = this.placement.move(k);
      if (!mv || mv.from === mv.to) continue;
      const list = bySource.get(mv.from) ?? [];
      list.push(k);
      bySource.set(mv.from, list);
    }
    for (const [s, list] of bySource) await this.copyFrom(s, list, list);
  }

  private async copyFrom(source: number, groups: string[], users: string[]): Promise<void> {
    for (let i = 0; i < Math.max(groups.length, users.length); i += BATCH) {
      await this.copyBatch(source, groups.slice(i, i + BATCH), users.slice(i, i + BATCH));
      if (this.o.slowMs) await sleep(this.o.slowMs);
    }
  }

  /** One batch from a source: snapshots and message pages until every group is complete. */
  private async copyBatch(source: number, groupIds: string[], userIds: string[]): Promise<void> {
    let pending = groupIds.map((id) => ({ id, after: this.copied.get(id) ?? 0, snapshot: true }));
    let users = userIds;
    while (pending.length > 0 || users.length > 0) {
      const exp = await this.calls.call<{ groups: ExportedGroup[]; users: ({ id: string } | null)[] }>(
        source,
        'POST',
        'export',
        { groups: pending, users, limit: PAGE, budget: BUDGET },
      );
      // Group the answer by target.
      const byTarget = new Map<number, { groups: ExportedGroup[]; users: { id: string }[] }>();
      const to = (id: string) => (this.placement.move(id) as { to: number }).to;
      const slot = (t: number) => {
        let b = byTarget.get(t);
        if (!b) {
          b = { groups: [], users: [] };
          byTarget.set(t, b);
        }
        return b;
      };
      for (const g of exp.groups) {
        if (g.snapshot === null) continue;
        slot(to(g.id)).groups.push(
          g.snapshot === undefined ? { id: g.id, messages: g.messages, more: g.more } : g,
        );
      }
      for (const u of exp.users) if (u) slot(to(u.id)).users.push(u);
      const next: typeof pending = [];
      for (const [t, body] of byTarget) {
        const payload = {
          groups: body.groups.map((g) => ({ id: g.id, snapshot: g.snapshot, messages: g.messages })),
          users: body.users,
        };
        const text = JSON.stringify(payload);
        const r = await this.calls.call<{ groups: { id: string; lastStored: number }[] }>(
          t,
          'POST',
          'import',
          payload,
        );
        this.counts.bytes += Buffer.byteLength(text);
        for (const g of r.groups) this.copied.set(g.id, g.lastStored);
        for (const g of body.groups) {
          this.counts.messages += g.messages.length;
          if (g.more) next.push({ id: g.id, after: this.copied.get(g.id) ?? 0, snapshot: false });
        }
        for (const g of body.groups) this.moved.groups.add(g.id);
        for (const u of body.users) this.moved.users.add(u.id);
      }
      if (pending.every((p) => p.snapshot)) this.progressState.keys += pending.length + users.length;
      pending = next;
      users = [];
      this.progressState = {
        ...this.progressState,
        messages: this.counts.messages,
        bytes: this.counts.bytes,
      };
      this.o.progress?.(this.progressState);
    }
  }

  // --- lease ---

  private async takeLease(span: number): Promise<void> {
    this.span = Math.max(this.span, span);
    const take = (takeOver?: string) =>
      this.eachShard(this.span, (i) =>
        this.calls.call(i, 'POST', 'lease', { holder: this.o.holder, ttlMs: LEASE_MS, takeOver }),
      );
    try {
      await take();
    } catch (err) {
      if (!(err instanceof ShardCallError && err.code === 'lease_held')) throw err;
      // A coordinator of this machine that no longer runs (killed) is taken over at once;
      // any other holder is running, or its lease must run out.
      const previous = (err.details as { holder?: string } | undefined)?.holder;
      if (!previous || !this.o.gone?.(previous))
        throw new Error(`${err.message.replace(/^shard \d+: /, '')}: only one shardchat reshard at a time`);
      this.log(`taking over from ${previous}, which no longer runs`);
      await take(previous);
    }
    this.leaseTimer = setInterval(() => void take().catch(() => undefined), LEASE_MS / 3);
    this.leaseTimer.unref();
  }

  private async releaseLease(): Promise<void> {
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    this.leaseTimer = undefined;
    // Once: the lease runs out anyway, and a shard the final map left out may be stopping.
    await this.eachShard(this.span, (i) =>
      this.calls
        .call(i, 'DELETE', 'lease', { holder: this.o.holder }, { unreachableMs: 0 })
        .catch(() => undefined),
    );
  }

  // --- reporting ---

  private async phase(p: Phase): Promise<void> {
    this.phases[this.progressState.phase] =
      (this.phases[this.progressState.phase] ?? 0) + (performance.now() - this.phaseStarted) / 1000;
    this.phaseStarted = performance.now();
    this.progressState = { ...this.progressState, phase: p, keys: 0, keysTotal: undefined };
    this.o.log?.(`phase: ${p}`);
    this.o.progress?.(this.progressState);
    this.stopIf(p);
    if (this.o.holdAt === p && this.o.released) await this.o.released();
    if (this.o.slowMs) await sleep(this.o.slowMs);
  }

  private phaseStarted = performance.now();

  private stopIf(p: Phase): void {
    if (this.o.stopAt === p) process.kill(process.pid, 'SIGKILL');
  }

  private log(message: string): void {
    this.o.log?.(message);
  }

  private summary(
    from: Layout,
    to: Layout,
    map: ShardMap,
    migrated: boolean,
    started: number,
    fencedSeconds: number,
  ): Summary {
    return {
      from,
      to,
      version: map.version,
      migrated,
      keys: { groups: this.moved.groups.size, users: this.moved.users.size },
      messages: this.counts.messages,
      bytes: this.counts.bytes,
      seconds: (performance.now() - started) / 1000,
      fencedSeconds,
      phases: this.phases,
    };
  }
}
