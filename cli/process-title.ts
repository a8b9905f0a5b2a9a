/** What `ps` shows for a router or shard: `shardchat router :8080`, `shardchat shard-2 :8080`. */
import { hostname } from 'node:os';
import type { Config } from '../common/config.js';
import { resolveOrdinal } from '../shard/cluster/ownership.js';

/**
 * The process title of a router or shard serving on `port`. A shard's ordinal is the one
 * it will run as (resolveOrdinal); when it cannot be told, the title goes without it
 * (the shard then stops at start, saying why).
 */
export function processTitle(
  component: 'router' | 'shard',
  cfg: Config,
  port: number,
  env: NodeJS.ProcessEnv = process.env,
  host: string = hostname(),
): string {
  if (component === 'router') return `shardchat router :${port}`;
  let ordinal: number;
  try {
    ordinal = resolveOrdinal(cfg, env, host);
  } catch {
    return `shardchat shard :${port}`;
  }
  return `shardchat shard-${ordinal} :${port}`;
}
