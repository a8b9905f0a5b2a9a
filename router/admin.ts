/**
 * The router's admin port: /metrics, /healthz, /readyz, /topology, and the live cluster
 * view (/cluster, its data at /cluster.json). Never reachable through the router.
 */
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import { fileURLToPath } from 'node:url';
import type { Registry } from 'prom-client';
import { type AdminServer, createAdminServer as createAdmin } from '../common/admin-server.js';
import { sendJson } from '../common/http-answers.js';
import type { Topology } from '../common/topology.js';
import { ClusterView } from './cluster-view.js';
import type { MapView } from './shard-map.js';

/** The cluster view's page, built by web/build.mjs next to the chat (dist/web/cluster/). */
const CLUSTER_DIR = fileURLToPath(new URL('../web/cluster/', import.meta.url));
const CLUSTER_FILES: Record<string, { file: string; type: string }> = {
  '/cluster': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/cluster/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/cluster/styles.css': { file: 'styles.css', type: 'text/css; charset=utf-8' },
};
const CLUSTER_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'";

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
  const view = new ClusterView(router);
  const files = new Map<string, Buffer>();
  const clusterRoute = (req: http.IncomingMessage, res: http.ServerResponse, path: string): boolean => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    if (path === '/cluster.json') {
      view.snapshot().then(
        (snap) => sendJson(res, 200, snap, { 'cache-control': 'no-store' }),
        (err: Error) => sendJson(res, 500, { error: { code: 'cluster_view_failed', message: err.message } }),
      );
      return true;
    }
    const f = CLUSTER_FILES[path === '/cluster/' ? '/cluster' : path];
    if (!f) return false;
    let body = files.get(f.file);
    if (!body) {
      try {
        body = readFileSync(CLUSTER_DIR + f.file);
      } catch {
        sendJson(res, 404, {
          error: {
            code: 'not_built',
            message: `the cluster view is not built (${CLUSTER_DIR}): run npm run build`,
          },
        });
        return true;
      }
      files.set(f.file, body);
    }
    res.writeHead(200, {
      'content-type': f.type,
      'content-length': body.length,
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
      ...(f.file === 'index.html' ? { 'content-security-policy': CLUSTER_CSP } : {}),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  };
  return createAdmin({
    route: clusterRoute,
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
