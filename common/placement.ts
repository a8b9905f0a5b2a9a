/**
 * Placement: which shard owns a key under the cluster's shard map (docs/architecture.md
 * sections 1, 2 and 7). The one place where an owner is decided: the router picks the
 * shard to forward to with it, a shard checks its ownership of an id with it (421
 * otherwise), shards find each other's groups and users' session hosts with it, and the
 * CLI explains, plans and reshards with it.
 *
 * The shard map is `{version, shards, assignment, migration?}`. `shards` and
 * `assignment` always say who owns a key now; `migration`, while one runs, says where
 * the cluster is going (`to`) or, after the switch, where it came from (`from`, kept
 * until the source shards have deleted what moved away).
 */
import { type Assignment, assign } from './assignment.js';
import type { Config } from './config.js';
import { shardCount } from './config.js';
import { xxh64 } from './hash.js';

/** A shard count and an assignment: one way of placing keys. */
export interface Layout {
  shards: number;
  assignment: Assignment;
}

export type MigrationState = 'copying' | 'fenced' | 'switched';

export interface Migration {
  /** The layout before the migration. */
  from: Layout;
  /** The layout after it. */
  to: Layout;
  /**
   * copying: the `from` layout owns every key, moving keys are copied while they serve;
   * fenced: writes of moving keys are held on their sources for the final tail;
   * switched: the `to` layout owns every key, the sources still hold their old copies.
   */
  state: MigrationState;
  /** Milliseconds since the epoch. */
  startedAt: number;
}

/** The shards a cluster has and how keys are assigned to them. */
export interface ShardMap extends Layout {
  /** Bumped by every change of the map; 1 is the map a cluster was first started with. */
  version: number;
  migration?: Migration;
}

/** The map a configuration describes: its S and its assignment (the bootstrap of a new cluster). */
export function configuredMap(cfg: Config): ShardMap {
  return { version: 1, shards: shardCount(cfg), assignment: cfg.shardSpec.assignment };
}

/** The owner of a hash under a layout. */
export function ownerUnder(layout: Layout, hash: bigint): number {
  return assign(hash, layout.shards, layout.assignment);
}

/** How many shard processes a map needs running: the larger side of a migration. */
export function shardsNeeded(map: ShardMap): number {
  const m = map.migration;
  return m ? Math.max(m.from.shards, m.to.shards) : map.shards;
}

export function sameLayout(a: Layout, b: Layout): boolean {
  return a.shards === b.shards && a.assignment === b.assignment;
}

export function isValidMap(v: unknown): v is ShardMap {
  if (typeof v !== 'object' || v === null) return false;
  const m = v as Partial<ShardMap>;
  const layoutOk = (l: Partial<Layout> | undefined) =>
    !!l &&
    Number.isInteger(l.shards) &&
    (l.shards as number) >= 1 &&
    (l.assignment === 'modulo' || l.assignment === 'jump');
  if (!Number.isInteger(m.version) || (m.version as number) < 1 || !layoutOk(m)) return false;
  if (m.migration === undefined) return true;
  const g = m.migration;
  return (
    layoutOk(g.from) &&
    layoutOk(g.to) &&
    (g.state === 'copying' || g.state === 'fenced' || g.state === 'switched') &&
    typeof g.startedAt === 'number'
  );
}

/**
 * The map's owner layout as it rides on every shard answer and readiness probe, in the
 * `x-shardchat-map` header: `<version>:<shards>:<assignment>`, e.g. `3:4:jump`.
 */
export function mapHeader(map: ShardMap): string {
  return `${map.version}:${map.shards}:${map.assignment}`;
}

export function parseMapHeader(v: string | undefined): (Layout & { version: number }) | undefined {
  if (v === undefined) return undefined;
  const m = /^([1-9]\d{0,14}):([1-9]\d{0,3}):(modulo|jump)$/.exec(v.trim());
  if (!m) return undefined;
  return { version: Number(m[1]), shards: Number(m[2]), assignment: m[3] as Assignment };
}

export class Placement {
  readonly map: Readonly<ShardMap>;

  constructor(map: ShardMap) {
    if (!Number.isInteger(map.shards) || map.shards < 1)
      throw new RangeError(`a shard map needs a positive whole number of shards, got ${map.shards}`);
    this.map = Object.freeze({ ...map });
  }

  get shards(): number {
    return this.map.shards;
  }

  get version(): number {
    return this.map.version;
  }

  /** The owner of a key (a group or user id, already percent-decoded). */
  ownerOf(key: string): number {
    return ownerUnder(this.map, xxh64(key));
  }

  /** The owner of a key's XXH64 hash. */
  ownerOfHash(hash: bigint): number {
    return ownerUnder(this.map, hash);
  }

  /**
   * Where a key goes while a migration runs: its owner under `from` and under `to`
   * (equal for a key that does not move); undefined without a migration.
   */
  move(key: string): { from: number; to: number } | undefined {
    const m = this.map.migration;
    if (!m) return undefined;
    const h = xxh64(key);
    return { from: ownerUnder(m.from, h), to: ownerUnder(m.to, h) };
  }
}
