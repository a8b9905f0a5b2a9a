/** The router's admin port: /metrics, /healthz, /readyz, /topology. Never reachable through the router. */
import type { Registry } from 'prom-client';
import { type AdminServer, createAdminServer as createAdmin } from '../common/admin-server.js';
import type { Topology } from '../common/topology.js';
import type { MapView } from './shard-map.js';

export type { AdminServer } from '../common/admin-server.js';

/** The little the admin port reads of the router. */
export interface AdminView {
  /** The router is shutting down: /readyz says `draining`. */
  readonly draining: boolean;
  readonly topology: Topology;
  readonly registry: Registry;
  /** The assignment of the shard map the router routes by, shown by /topology. */
  readonly assignment: string;
  /** The shard map the router routes by (and its migration, when a probe reported one). */
  map(): MapView;
}

export function createAdminServer(router: AdminView): AdminServer {
  return createAdmin({
    registry: router.registry,
    health: () => ({ status: 'ok' }),
    ready: () => {
      const topo = router.topology;
      const notReady = topo.states.filter((m) => !m.ready).map((m) => m.ordinal);
      const st = topo.status();
      // Ready once the topology is known (kubernetes mode: listed once); unready shards
      // and a StatefulSet scaled away from S are reported, not fatal: the router still
      // serves every other shard's keys, by S.
      const status = router.draining ? 'draining' : st.synced ? 'ready' : 'syncing';
      const { mode, synced, ...rest } = st;
      return {
        ready: status === 'ready',
        body: { status, shards: topo.shards, notReadyShards: notReady, mode, map: router.map(), ...rest },
      };
    },
    get: {
      '/topology': () => ({
        ...router.topology.snapshot(),
        assignment: router.assignment,
        map: router.map(),
      }),
    },
  });
}
