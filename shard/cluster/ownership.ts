/**
 * Ownership (docs/architecture.md sections 2 and 7): a shard serves only the ids its
 * shard map gives it, and answers 421 otherwise before it looks at anything else, with
 * the owner and the map it knows, so that a router or a shard that holds an older map
 * retries at the right place and never creates split data.
 *
 * While a migration is fenced, writes of the keys leaving this shard are held (not
 * failed) until the map switches, then answered 421 towards their new owner; writes
 * admitted under an earlier map are counted, and the fence completes only once they
 * are done, so the final copy sees every acknowledged write.
 */
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Config } from '../../common/config.js';
import { ApiError } from '../../common/http-answers.js';
import { mapHeader, Placement, type ShardMap, shardsNeeded } from '../../common/placement.js';
import { MAP_HEADER } from '../../common/protocol.js';

/** This shard's ordinal: configuration, then $SHARD_ORDINAL, then the -N suffix of the hostname. */
export function resolveOrdinal(cfg: Config, env: NodeJS.ProcessEnv = process.env, host = hostname()): number {
  if (cfg.shard.ordinal !== undefined) return cfg.shard.ordinal;
  const fromEnv = env.SHARD_ORDINAL;
  if (fromEnv !== undefined && fromEnv !== '') {
    if (!/^\d+$/.test(fromEnv))
      throw new Error(`SHARD_ORDINAL must be a non-negative integer, got ${JSON.stringify(fromEnv)}`);
    return Number(fromEnv);
  }
  const m = /-(\d+)$/.exec(host);
  if (m) return Number(m[1]);
  throw new Error(
    "cannot tell this shard's ordinal: set shard.ordinal, SHARD_ORDINAL, or a hostname ending in -N",
  );
}

export interface OwnershipEvents {
  /** A new map was adopted. */
  map: [map: ShardMap, previous: ShardMap];
  /** A held write waited this many seconds (released by the switch, or timed out). */
  held: [seconds: number];
}

/** Releases an admitted write (call once it is answered). */
export type Release = () => void;

/** Ids whose owner `ownerOf` keeps (all are forgotten at once past this). */
const OWNERS_CACHED = 50_000;

export class Ownership extends EventEmitter<OwnershipEvents> {
  private current: Placement;
  /** Owners of recently asked ids under `current` (every message asks; cleared when the map changes). */
  private readonly owners = new Map<string, number>();
  private header: string;
  /** Bumped by every adopted map. */
  private epoch = 0;
  /** Writes admitted and not yet answered, by the epoch they were admitted in. */
  private readonly inFlight = new Map<number, number>();
  private drainWaiters: (() => void)[] = [];
  /** Writes waiting for the fence to end. */
  private holding = 0;

  constructor(
    map: ShardMap,
    readonly ordinal: number,
    private readonly holdMs = 10_000,
  ) {
    super();
    // Every held write listens for the switch.
    this.setMaxListeners(0);
    this.current = new Placement(map);
    this.header = mapHeader(map);
  }

  get placement(): Placement {
    return this.current;
  }

  get map(): Readonly<ShardMap> {
    return this.current.map;
  }

  /** S of the map that owns keys now. */
  get shards(): number {
    return this.current.shards;
  }

  /** Shard ordinals in use (both sides of a migration): valid hosts and peers. */
  get span(): number {
    return shardsNeeded(this.current.map);
  }

  /** The `x-shardchat-map` header value of the current map. */
  get mapHeaderValue(): string {
    return this.header;
  }

  /** A migration runs (without one, admitting is checking: no waiting, no counting). */
  get migrating(): boolean {
    return this.current.map.migration !== undefined;
  }

  /** Writes held by a fence right now. */
  get held(): number {
    return this.holding;
  }

  ownerOf(id: string): number {
    let owner = this.owners.get(id);
    if (owner === undefined) {
      owner = this.current.ownerOf(id);
      if (this.owners.size >= OWNERS_CACHED) this.owners.clear();
      this.owners.set(id, owner);
    }
    return owner;
  }

  owns(id: string): boolean {
    return this.ownerOf(id) === this.ordinal;
  }

  /** True while a migration that has not switched moves `id` from this shard to another. */
  leaving(id: string): boolean {
    const m = this.current.map.migration;
    if (!m || m.state === 'switched') return false;
    const mv = this.current.move(id);
    return mv !== undefined && mv.from === this.ordinal && mv.to !== this.ordinal;
  }

  /**
   * While fenced, a key moving in or out waits for the switch: out, its source holds its
   * writes; in, its target (which a router that already knows the switched map may
   * reach first) holds everything rather than send it back to the source.
   */
  private fenced(id: string, writing: boolean): boolean {
    const m = this.current.map.migration;
    if (m?.state !== 'fenced') return false;
    const mv = this.current.move(id);
    if (!mv || mv.from === mv.to) return false;
    return (writing && mv.from === this.ordinal) || mv.to === this.ordinal;
  }

  /** 421 (with the owner and this shard's map) unless this shard owns `id`. */
  check(id: string, _routerHeader?: string): void {
    const owner = this.ownerOf(id);
    if (owner === this.ordinal) return;
    const map = this.current.map;
    throw new ApiError(
      421,
      'misdirected',
      `${id} belongs to shard ${owner} of ${map.shards} (shard map version ${map.version}), not to shard ${this.ordinal}`,
      { [MAP_HEADER]: this.header },
      { owner, map },
    );
  }

  /**
   * Admits a write of `id`: waits while a fence holds it (up to the hold time, then 503
   * with retry-after: nothing was written), checks ownership (421), and counts it until
   * released if the key is leaving.
   */
  async admit(id: string): Promise<Release> {
    if (this.fenced(id, true)) await this.hold(id, true);
    this.check(id);
    // Counted under the map it was admitted by: a fence waits for every write admitted
    // under an earlier map (whatever its key: leaving keys are not told apart before).
    const epoch = this.epoch;
    this.inFlight.set(epoch, (this.inFlight.get(epoch) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.inFlight.get(epoch) ?? 1) - 1;
      if (left > 0) this.inFlight.set(epoch, left);
      else {
        this.inFlight.delete(epoch);
        if (this.drainWaiters.length > 0 && this.isDrained())
          for (const w of this.drainWaiters.splice(0)) w();
      }
    };
  }

  private isDrained(): boolean {
    for (const e of this.inFlight.keys()) if (e < this.epoch) return false;
    return true;
  }

  /** Admits a read of `id`: waits only while it is fenced moving here, then checks ownership (421). */
  async admitRead(id: string): Promise<void> {
    if (this.fenced(id, false)) await this.hold(id, false);
    this.check(id);
  }

  private async hold(id: string, writing: boolean): Promise<void> {
    const started = performance.now();
    this.holding++;
    try {
      await new Promise<void>((resolve, reject) => {
        const onMap = () => {
          if (this.fenced(id, writing)) return;
          clearTimeout(timer);
          this.off('map', onMap);
          resolve();
        };
        const timer = setTimeout(() => {
          this.off('map', onMap);
          reject(
            new ApiError(
              503,
              'resharding',
              `${id} is moving to another shard and its writes are held; try again`,
              { 'retry-after': '1' },
            ),
          );
        }, this.holdMs);
        timer.unref();
        this.on('map', onMap);
      });
    } finally {
      this.holding--;
      this.emit('held', (performance.now() - started) / 1000);
    }
  }

  /** Resolves once every write admitted under an earlier map has been answered. */
  drained(): Promise<void> {
    if (this.isDrained()) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Serves by `map` from now on (the caller stored it first). */
  adopt(map: ShardMap): void {
    const previous = this.current.map;
    this.current = new Placement(map);
    this.owners.clear();
    this.header = mapHeader(map);
    this.epoch++;
    this.emit('map', this.current.map, previous);
  }
}
