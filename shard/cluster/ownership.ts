/**
 * Ownership (docs/architecture.md section 2): a shard serves only the ids its placement
 * maps to it, and answers 421 otherwise before it looks at anything else, so that a
 * router and a shard that disagree about the shard map never create split data.
 */
import { hostname } from 'node:os';
import type { Config } from '../../common/config.js';
import { ApiError } from '../../common/http-answers.js';
import { Placement, type ShardMap } from '../../common/placement.js';

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

export class Ownership {
  readonly placement: Placement;

  constructor(
    map: ShardMap,
    readonly ordinal: number,
  ) {
    this.placement = new Placement(map);
    if (ordinal >= map.shards)
      throw new Error(`shard ordinal ${ordinal} is not below the shard count ${map.shards}`);
  }

  get shards(): number {
    return this.placement.shards;
  }

  ownerOf(id: string): number {
    return this.placement.ownerOf(id);
  }

  owns(id: string): boolean {
    return this.ownerOf(id) === this.ordinal;
  }

  /** 421 unless this shard owns `id` and the router's `x-shardchat-shard` (if sent) agrees on S. */
  check(id: string, routerHeader: string | undefined): void {
    if (routerHeader !== undefined) {
      const m = /^(\d+)\/(\d+)$/.exec(routerHeader);
      if (!m || Number(m[2]) !== this.shards) {
        throw new ApiError(
          421,
          'misdirected',
          `the router counts ${m ? m[2] : 'an unknown number of'} shards, this shard counts ${this.shards}`,
        );
      }
    }
    const owner = this.ownerOf(id);
    if (owner !== this.ordinal) {
      throw new ApiError(
        421,
        'misdirected',
        `${id} belongs to shard ${owner} of ${this.shards}, not to shard ${this.ordinal}`,
      );
    }
  }
}
