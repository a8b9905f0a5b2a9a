/**
 * The shard's admin port (docs/architecture.md section 3): `/healthz`, `/readyz` (the
 * topology and the storage mode reported, never a reason to be unready: the shard
 * serves its own keys whatever the API server says), `/metrics`, and the shard-to-shard
 * `/internal/*` routes for callers holding the internal token.
 */
import { timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import { type AdminServer, createAdminServer } from '../../common/admin-server.js';
import { sendJson } from '../../common/http-answers.js';
import { type Layout, sameLayout } from '../../common/placement.js';
import { INTERNAL_TOKEN_HEADER, MAP_HEADER } from '../../common/protocol.js';
import type { Topology } from '../../common/topology.js';
import type { Ownership } from '../cluster/ownership.js';
import type { ShardMetrics } from '../metrics.js';
import type { Store } from '../storage/store.js';

/** Constant-time comparison of the internal token. */
export function tokenMatches(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface ShardAdminDeps {
  own: Ownership;
  /** The configuration's shards and assignment (reported when they differ from the map). */
  configured: Layout;
  store: Store;
  metrics: ShardMetrics;
  topology: Topology | undefined;
  internalToken: string;
  internal(req: http.IncomingMessage, res: http.ServerResponse, path: string): void;
  draining(): boolean;
}

export function createShardAdmin(d: ShardAdminDeps): AdminServer {
  const shard = d.own.ordinal;
  return createAdminServer({
    registry: d.metrics.registry,
    health: () => ({ status: 'ok', shard }),
    ready: () => {
      const draining = d.draining();
      const { mode, synced, ...rest } = d.topology?.status() ?? { mode: 'static', synced: true };
      // Read-only storage keeps the shard ready: it serves reads (writes get 503
      // storage_readonly), which the router could not send anywhere else.
      const map = d.own.map;
      const mismatch =
        !map.migration && !sameLayout(map, d.configured)
          ? [
              `configuration says ${d.configured.shards} shards (${d.configured.assignment}), the shard map ${map.shards} (${map.assignment}): serving by the map; run shardchat reshard --to ${d.configured.shards} to change it`,
            ]
          : [];
      return {
        ready: !draining,
        headers: { [MAP_HEADER]: d.own.mapHeaderValue },
        body: {
          status: draining ? 'draining' : 'ready',
          shard,
          shards: d.own.shards,
          map,
          storage: d.store.readOnly ? 'read-only' : 'read-write',
          ...(mode === 'kubernetes' ? { mode, topologySynced: synced, ...rest } : {}),
          ...(mismatch.length > 0
            ? { warnings: [...('warnings' in rest ? rest.warnings : []), ...mismatch] }
            : {}),
        },
      };
    },
    route: (req, res, path) => {
      if (!path.startsWith('/internal/')) return false;
      const token = req.headers[INTERNAL_TOKEN_HEADER];
      if (!tokenMatches(typeof token === 'string' ? token : undefined, d.internalToken)) {
        sendJson(res, 401, {
          error: { code: 'unauthenticated', message: 'internal calls need x-shardchat-internal-token' },
        });
        return true;
      }
      d.internal(req, res, path);
      return true;
    },
  });
}
