/**
 * Placement: which shard owns a key under the cluster's shard map (docs/architecture.md
 * sections 1 and 2). The one place where an owner is decided: the router picks the
 * shard to forward to with it, a shard checks its ownership of an id with it (421
 * otherwise), shards find each other's groups and users' session hosts with it, and the
 * CLI explains and plans with it.
 */
import { type Assignment, assign } from './assignment.js';
import type { Config } from './config.js';
import { shardCount } from './config.js';
import { xxh64 } from './hash.js';

/** The shards a cluster has and how keys are assigned to them. */
export interface ShardMap {
  /** Bumped by every change of the map (0: taken from the configuration). */
  version: number;
  shards: number;
  assignment: Assignment;
}

/** The map a configuration describes: its S and its assignment. */
export function configuredMap(cfg: Config): ShardMap {
  return { version: 0, shards: shardCount(cfg), assignment: cfg.shardSpec.assignment };
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
    return assign(xxh64(key), this.map.shards, this.map.assignment);
  }

  /** The owner of a key's XXH64 hash. */
  ownerOfHash(hash: bigint): number {
    return assign(hash, this.map.shards, this.map.assignment);
  }
}
