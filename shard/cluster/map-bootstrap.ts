/**
 * The shard map a shard starts with (docs/architecture.md section 7): the one stored in
 * its database; else, with no data yet, the one its peers serve by (a shard added to a
 * running cluster); else the configuration's (a new cluster, or data written before
 * maps were stored). A configuration that differs from the stored map is reported,
 * never followed: only `shardchat reshard` changes the map.
 */
import type { Config } from '../../common/config.js';
import type { Logger } from '../../common/logger.js';
import { configuredMap, isValidMap, type ShardMap, sameLayout } from '../../common/placement.js';
import type { Store } from '../storage/store.js';

/** Asks the other shards for their maps: the newest answered, if any. */
export type PeerMaps = () => Promise<ShardMap | undefined>;

export async function bootstrapMap(
  cfg: Config,
  store: Store,
  log: Logger,
  peers: PeerMaps,
): Promise<{ map: ShardMap; source: 'stored' | 'peers' | 'configuration' }> {
  const configured = configuredMap(cfg);
  const stored = store.readMap();
  let map: ShardMap;
  let source: 'stored' | 'peers' | 'configuration';
  if (stored !== undefined) {
    if (!isValidMap(stored))
      throw new Error(`the stored shard map of ${store.file} is not valid: ${JSON.stringify(stored)}`);
    map = stored;
    source = 'stored';
  } else {
    const fromPeers = store.hasData() ? undefined : await peers().catch(() => undefined);
    map = fromPeers ?? configured;
    source = fromPeers ? 'peers' : 'configuration';
    if (!store.readOnly) store.writeMap(map);
  }
  if (!sameLayout(map, configured) && !map.migration)
    log.warn(
      {
        map: { version: map.version, shards: map.shards, assignment: map.assignment },
        configured: { shards: configured.shards, assignment: configured.assignment },
      },
      'the configuration differs from the shard map: serving by the map; to change the number of shards run shardchat reshard --to N',
    );
  return { map, source };
}

/** The newest map of the shards at these admin addresses (`/internal/reshard/state`), if any answers. */
export function askPeers(
  admins: readonly (string | undefined)[],
  token: string,
  tokenHeader: string,
  timeoutMs: number,
): PeerMaps {
  return async () => {
    const answers = await Promise.all(
      admins.map(async (base) => {
        if (!base) return undefined;
        try {
          const res = await fetch(`${base}/internal/reshard/state`, {
            headers: { [tokenHeader]: token },
            signal: AbortSignal.timeout(timeoutMs),
          });
          if (!res.ok) return undefined;
          const body = (await res.json()) as { map?: unknown };
          return isValidMap(body.map) ? body.map : undefined;
        } catch {
          return undefined;
        }
      }),
    );
    let best: ShardMap | undefined;
    for (const m of answers) if (m && (!best || m.version > best.version)) best = m;
    return best;
  };
}
