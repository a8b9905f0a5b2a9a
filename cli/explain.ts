/** `shardchat explain <path> [--header k=v]...`: what the router does with one request. */
import { type Config, shardCount } from '../common/config.js';
import { initHash } from '../common/hash.js';
import { pathOf, ShardFunction } from '../common/shard-function.js';
import { staticEndpoints } from '../common/topology.js';
import { configWarnings } from './config-warnings.js';

export interface Explanation {
  path: string;
  rule: 'header' | 'urlPattern' | 'path' | 'onNoMatch' | null;
  key: string | null;
  hash: string | null;
  shard: number | null;
  shards: number;
  assignment: string;
  target: string | null;
  /** What the router answers itself instead of forwarding, if anything. */
  outcome: 'forward' | 'reject (404)' | 'malformed key (400)' | 'path too long (414)';
  /** What looks wrong in the configuration (cli/config-warnings.ts); present only when something does. */
  warnings?: string[];
}

export async function explain(
  cfg: Config,
  target: string,
  headers: Record<string, string>,
): Promise<Explanation> {
  await initHash();
  const e = explainRoute(cfg, target, headers);
  const warnings = configWarnings(cfg);
  return warnings.length > 0 ? { ...e, warnings } : e;
}

function explainRoute(cfg: Config, target: string, headers: Record<string, string>): Explanation {
  const sf = new ShardFunction(cfg.shardSpec);
  const S = shardCount(cfg);
  const endpoints = staticEndpoints(cfg);
  const path = pathOf(target);
  const lower: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) lower[k.toLowerCase()] = v;
  const base = { path, shards: S, assignment: cfg.shardSpec.assignment };
  if (path.length > cfg.router.limits.maxPathBytes) {
    return {
      ...base,
      rule: null,
      key: null,
      hash: null,
      shard: null,
      target: null,
      outcome: 'path too long (414)',
    };
  }
  const r = sf.route(path, lower, S);
  switch (r.kind) {
    case 'shard':
      return {
        ...base,
        rule: r.rule,
        key: r.key,
        hash: r.hash.toString(),
        shard: r.shard,
        target: endpoints[r.shard]?.target ?? null,
        outcome: 'forward',
      };
    case 'fixed':
      return {
        ...base,
        rule: 'onNoMatch',
        key: null,
        hash: null,
        shard: r.shard,
        target: endpoints[r.shard]?.target ?? null,
        outcome: 'forward',
      };
    case 'reject':
      return {
        ...base,
        rule: 'onNoMatch',
        key: null,
        hash: null,
        shard: null,
        target: null,
        outcome: 'reject (404)',
      };
    case 'malformed':
      return {
        ...base,
        rule: null,
        key: r.raw,
        hash: null,
        shard: null,
        target: null,
        outcome: 'malformed key (400)',
      };
  }
}
