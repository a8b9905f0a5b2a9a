/**
 * The admin port of a router or a shard (docs/architecture.md section 3): `/healthz`,
 * `/readyz`, `/metrics` and a process's own routes (the router's `/topology`, the
 * shards' `/internal/*`). Never reachable through the router.
 */
import http from 'node:http';
import type { Registry } from 'prom-client';
import { answerClientError, sendJson } from './http-answers.js';
import { listen } from './listen.js';

export interface AdminRoutes {
  /** The body of `/healthz` (always 200: the process answers). */
  health(): object;
  /** `/readyz`: ready (200) or not (503), and what to say about it. */
  ready(): { ready: boolean; body: object; headers?: Record<string, string> };
  /** The Prometheus registry `/metrics` exposes. */
  registry: Registry;
  /** Further GET routes by path. */
  get?: Record<string, () => object>;
  /** Runs first for every request, whatever its method: true when it answered. */
  route?(req: http.IncomingMessage, res: http.ServerResponse, path: string): boolean;
}

export interface AdminServer {
  listen(port: number, host: string): Promise<number>;
  close(): Promise<void>;
}

export function createAdminServer(routes: AdminRoutes): AdminServer {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] as string;
    if (routes.route?.(req, res, path)) return;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, {
        error: { code: 'method_not_allowed', message: 'the admin port answers GET only' },
      });
      return;
    }
    switch (path) {
      case '/healthz':
        sendJson(res, 200, routes.health());
        return;
      case '/readyz': {
        const r = routes.ready();
        sendJson(res, r.ready ? 200 : 503, r.body, r.headers);
        return;
      }
      case '/metrics':
        routes.registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': routes.registry.contentType });
            res.end(text);
          },
          (err: Error) => sendJson(res, 500, { error: { code: 'metrics_failed', message: err.message } }),
        );
        return;
    }
    const extra = routes.get?.[path];
    if (extra) {
      sendJson(res, 200, extra());
      return;
    }
    sendJson(res, 404, { error: { code: 'not_found', message: `no admin route ${path}` } });
  });
  server.on('clientError', answerClientError);
  return {
    listen: (port, host) => listen(server, port, host),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
