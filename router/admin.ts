/** The router's admin port: /metrics, /healthz, /readyz, /topology. Never reachable through the router. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { sendJson } from '../common/http-json.js';
import type { Topology } from '../common/topology.js';

/** The little the admin port reads of the router. */
export interface AdminView {
  /** The router is shutting down: /readyz says `draining`. */
  readonly draining: boolean;
  readonly topology: Topology;
  readonly registry: Registry;
  /** The shard function's assignment, shown by /topology. */
  readonly assignment: string;
}

export interface AdminServer {
  listen(port: number, host: string): Promise<number>;
  close(): Promise<void>;
}

export function createAdminServer(router: AdminView): AdminServer {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, {
        error: { code: 'method_not_allowed', message: 'the admin port answers GET only' },
      });
      return;
    }
    switch (path) {
      case '/healthz':
        sendJson(res, 200, { status: 'ok' });
        return;
      case '/readyz': {
        const topo = router.topology;
        const notReady = topo.states.filter((m) => !m.ready).map((m) => m.ordinal);
        const st = topo.status();
        // Ready once the topology is known (kubernetes mode: listed once); unready shards
        // and a StatefulSet scaled away from S are reported, not fatal: the router still
        // serves every other shard's keys, by S.
        const status = router.draining ? 'draining' : st.synced ? 'ready' : 'syncing';
        const { mode, synced, ...rest } = st;
        sendJson(res, status === 'ready' ? 200 : 503, {
          status,
          shards: topo.shards,
          notReadyShards: notReady,
          mode,
          ...rest,
        });
        return;
      }
      case '/topology':
        sendJson(res, 200, { ...router.topology.snapshot(), assignment: router.assignment });
        return;
      case '/metrics':
        router.registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': router.registry.contentType });
            res.end(text);
          },
          (err: Error) => sendJson(res, 500, { error: { code: 'metrics_failed', message: err.message } }),
        );
        return;
      default:
        sendJson(res, 404, { error: { code: 'not_found', message: `no admin route ${path}` } });
    }
  });
  return {
    listen(port, host) {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve((server.address() as AddressInfo).port);
        });
      });
    },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
