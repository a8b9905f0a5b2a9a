/**
 * What `shardchat local` keeps in its data folder besides the shards' databases: the
 * generated secrets (secrets.json) and the cluster's configuration (local.yaml), whose
 * `topology.shards` is the number of shards the data was written by. Address templates
 * make any ordinal addressable (a shard started for a growing migration has its address
 * without a rewrite): shard i serves on port+1+i, its admin port is port+1011+i.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { UsageError } from '../args.js';

export interface LocalOptions {
  /** `--shards`, when given (default 3 for a new data folder). */
  shards?: number;
  dataDir: string;
  port: number;
  /** Seed the demo conversation on the first start (default true). */
  demo?: boolean;
}

/** The shard count of a new data folder. */
export const DEFAULT_LOCAL_SHARDS = 3;

/** The bundled browser chat (dist/web, built by `npm run build`). */
export const WEB_DIR = fileURLToPath(new URL('../../web/', import.meta.url));

const HEADER = '# written by shardchat local; topology.shards follows the cluster (shardchat reshard)\n';

export interface Secrets {
  authSecret: string;
  internalToken: string;
}

/** The secrets of a local installation: generated once, kept in the data folder. */
export function localSecrets(dataDir: string): Secrets {
  const file = path.join(dataDir, 'secrets.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Secrets;
  const secrets = {
    authSecret: randomBytes(32).toString('base64'),
    internalToken: randomBytes(24).toString('hex'),
  };
  writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
  return secrets;
}

/** The ports of a local cluster whose router listens on `port`. */
export function localPorts(port: number) {
  return {
    router: port,
    routerAdmin: port + 1010,
    shard: (ordinal: number) => port + 1 + ordinal,
    shardAdmin: (ordinal: number) => port + 1011 + ordinal,
  };
}

export function localConfigPath(dataDir: string): string {
  return path.join(dataDir, 'local.yaml');
}

/** The configuration of the local cluster of `shards` shards. */
export function localConfig(o: { shards: number; dataDir: string; port: number }): Record<string, unknown> {
  const p = localPorts(o.port);
  return {
    topology: {
      shards: o.shards,
      targetTemplate: `http://127.0.0.1:{ordinal+${p.shard(0)}}`,
      adminTemplate: `http://127.0.0.1:{ordinal+${p.shardAdmin(0)}}`,
    },
    router: { host: '127.0.0.1', port: p.router, adminPort: p.routerAdmin, webDir: WEB_DIR },
    shard: { host: '127.0.0.1', dataDir: path.resolve(o.dataDir) },
    auth: { devTokens: true },
    log: { level: 'info' },
  };
}

export function writeLocalConfig(file: string, cfg: Record<string, unknown>): void {
  writeFileSync(file, `${HEADER}${yaml.dump(cfg)}`);
}

/** The shard count a local.yaml records: its `topology.shards`, or the length of an older file's `targets`. */
export function recordedShards(file: string): number | undefined {
  if (!existsSync(file)) return undefined;
  const doc = yaml.load(readFileSync(file, 'utf8')) as { topology?: { shards?: unknown; targets?: unknown } };
  const t = doc?.topology;
  if (Number.isInteger(t?.shards) && (t?.shards as number) >= 1) return t?.shards as number;
  if (Array.isArray(t?.targets) && t.targets.length > 0) return t.targets.length;
  return undefined;
}

/** Rewrites `topology.shards` of a local.yaml, keeping its other fields. */
export function rewriteShards(file: string, shards: number): void {
  const doc = (yaml.load(readFileSync(file, 'utf8')) ?? {}) as { topology?: Record<string, unknown> };
  doc.topology = { ...doc.topology, shards };
  writeFileSync(file, `${HEADER}${yaml.dump(doc)}`);
}

/** Ordinals of the shard databases in a data folder (shard-N.sqlite). */
export function shardFiles(dataDir: string): number[] {
  if (!existsSync(dataDir)) return [];
  return readdirSync(dataDir)
    .map((f) => /^shard-(\d+)\.sqlite$/.exec(f)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

const GUIDE = 'see README "Growing and shrinking a cluster"';

/**
 * The number of shards to start: the count local.yaml records when the data folder has
 * one (a different `--shards` is a usage error: keys would be placed by another count,
 * and the groups of the shards left out, or moved by the new count, would be hidden),
 * else `--shards` (default 3). Shard databases at or beyond the count are refused too.
 */
export function shardsOnStart(dataDir: string, requested: number | undefined): number {
  const dir = `${dataDir.replace(/\/+$/, '')}/`;
  const config = localConfigPath(dataDir);
  const recorded = recordedShards(config);
  if (recorded !== undefined && requested !== undefined && requested !== recorded) {
    throw new UsageError(
      `${dir} holds a cluster of ${recorded} shards; --shards ${requested} would hide the groups of the others. ` +
        `To change the number of shards of a running cluster: shardchat reshard --to ${requested} --config ${config} (${GUIDE})`,
    );
  }
  const count = recorded ?? requested ?? DEFAULT_LOCAL_SHARDS;
  const beyond = shardFiles(dataDir).filter((n) => n >= count);
  if (beyond.length > 0) {
    const files = beyond.map((n) => `shard-${n}.sqlite`).join(', ');
    const written = Math.max(...beyond) + 1;
    throw new UsageError(
      `${dir} holds ${files} beyond a cluster of ${count} shards (0..${count - 1}): starting ${count} would hide the groups in ${beyond.length === 1 ? 'it' : 'them'}. ` +
        (recorded === undefined
          ? `Start with --shards ${written} if the data was written by ${written} shards. `
          : '') +
        `To change the number of shards of a running cluster: shardchat reshard --to N --config ${config} (${GUIDE})`,
    );
  }
  return count;
}
