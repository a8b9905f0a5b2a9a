/**
 * The router process: a public server that sends every request and WebSocket upgrade
 * to the shard its key maps to, and an admin server for metrics, health and topology.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { type Config, shardCount } from '../common/config.js';
import { initHash } from '../common/hash.js';
import type { Logger } from '../common/logger.js';
import { pathOf, ShardFunction } from '../common/shard-function.js';
import { StaticTopology } from '../common/topology.js';
import { createAdminServer } from './admin.js';
import { type RouterError, sendError, writeRawError } from './errors.js';
import { Exchange, type ExchangeOwner } from './forward.js';
import { RouterMetrics } from './metrics.js';
import { buildRequestHead, requestIdOf } from './request-head.js';
import { UpstreamPool } from './upstream-pool.js';
import { type RelayOwner, WebSocketRelay } from './websocket-relay.js';

export interface RunningRouter {
  port: number;
  adminPort: number;
  /** Stops accepting, lets in-flight requests finish, closes WebSockets with 1001. */
  stop(): Promise<void>;
}

type Target = { shard: number } | { error: RouterError };

export class Router implements ExchangeOwner, RelayOwner {
  readonly retryAfter: number;
  readonly upstreamMs: number;
  readonly connectMs: number;
  readonly shards: number;
  readonly topology: StaticTopology;
  readonly metrics: RouterMetrics;
  private readonly sf: ShardFunction;
  private readonly pools: UpstreamPool[];
  private readonly shardHeaders: string[];
  private readonly relays = new Set<WebSocketRelay>();
  private readonly wsPerShard: number[];
  private readonly lastMisdirectedLog: number[];
  private draining = false;
  private readonly server: http.Server;

  constructor(
    readonly cfg: Config,
    readonly log: Logger,
  ) {
    const r = cfg.router;
    this.retryAfter = r.retryAfterSeconds;
    this.upstreamMs = r.timeouts.upstreamMs;
    this.connectMs = r.timeouts.connectMs;
    this.shards = shardCount(cfg);
    this.sf = new ShardFunction(cfg.shardSpec);
    this.topology = new StaticTopology(cfg);
    this.metrics = new RouterMetrics(this.shards);
    this.pools = this.topology.states.map(
      (s) =>
        new UpstreamPool({
          host: s.host,
          port: s.port,
          maxSockets: r.limits.maxSocketsPerShard,
          maxQueued: r.limits.maxQueuedPerShard,
          connectMs: r.timeouts.connectMs,
          idleMs: r.timeouts.idleSocketMs,
          maxHeadBytes: r.limits.maxHeaderBytes * 4,
        }),
    );
    this.shardHeaders = this.topology.states.map((s) => `${s.ordinal}/${this.shards}`);
    this.wsPerShard = new Array(this.shards).fill(0);
    this.lastMisdirectedLog = new Array(this.shards).fill(0);
    this.topology.on('change', (s) => {
      this.metrics.setReady(s.ordinal, s.ready);
      if (s.ready) this.log.info({ shard: s.ordinal, target: s.target }, 'shard ready');
      else this.log.warn({ shard: s.ordinal, target: s.target, reason: s.reason }, 'shard not ready');
    });
    this.server = http.createServer(
      {
        maxHeaderSize: r.limits.maxHeaderBytes,
        keepAliveTimeout: r.timeouts.clientKeepAliveMs,
        requestTimeout: r.timeouts.requestMs,
        headersTimeout: Math.min(60_000, r.timeouts.requestMs),
      },
      (req, res) => this.onRequest(req, res),
    );
    this.server.maxConnections = r.limits.maxConnections;
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      if (!socket.writable) {
        socket.destroy();
        return;
      }
      const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
      const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
      const status = tooLarge ? 431 : timeout ? 408 : 400;
      const code = tooLarge ? 'headers_too_large' : timeout ? 'request_timeout' : 'bad_request';
      this.metrics.request(undefined, status, undefined);
      writeRawError(socket, { status, code, message: tooLarge ? 'request headers too large' : timeout ? 'request took too long' : `malformed request (${err.code ?? 'parse error'})` }, undefined);
    });
  }

  /** Where a request goes, or the error the router answers itself. */
  private target(req: IncomingMessage): Target {
    const url = req.url ?? '/';
    const path = pathOf(url);
    if (path.length > this.cfg.router.limits.maxPathBytes) {
      return {
        error: { status: 414, code: 'path_too_long', message: `paths are limited to ${this.cfg.router.limits.maxPathBytes} bytes` },
      };
    }
    const route = this.sf.route(path, req.headers, this.shards);
    switch (route.kind) {
      case 'shard':
      case 'fixed':
        return { shard: route.shard };
      case 'reject':
        return { error: { status: 404, code: 'no_shard_key', message: 'the request names no group or user to route by' } };
      case 'malformed':
        return {
          error: { status: 400, code: 'malformed_key', message: 'the shard key has a malformed percent-escape' },
        };
    }
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const startedAt = performance.now();
    const requestId = requestIdOf(req);
    if (this.draining) res.shouldKeepAlive = false;
    const t = this.target(req);
    if ('error' in t) {
      this.metrics.request(undefined, t.error.status, undefined);
      sendError(res, t.error, requestId);
      return;
    }
    const shard = t.shard;
    const pool = this.pools[shard] as UpstreamPool;
    if (this.topology.probing && !this.topology.isReady(shard)) {
      this.upstreamFailure(shard, 'unready');
      this.sendError(
        res,
        { status: 503, code: 'shard_unavailable', message: `shard ${shard} is not ready`, retryAfter: this.retryAfter },
        requestId,
        shard,
        startedAt,
      );
      return;
    }
    const headers = req.headers;
    const cl = headers['content-length'];
    const hasBody = (cl !== undefined && cl !== '0') || headers['transfer-encoding'] !== undefined;
    if (!hasBody) {
      const head = buildRequestHead(req, {
        shardHeader: this.shardHeaders[shard] as string,
        requestId,
        bodyLength: cl === '0' ? 0 : undefined,
        upgrade: false,
      });
      new Exchange(req, res, shard, pool, head, undefined, requestId, startedAt, this).start();
      return;
    }
    const max = this.cfg.router.limits.maxBodyBytes;
    if (cl !== undefined && Number(cl) > max) {
      this.sendError(
        res,
        { status: 413, code: 'body_too_large', message: `request bodies are limited to ${max} bytes` },
        requestId,
        shard,
        startedAt,
        true,
      );
      return;
    }
    // Bodies are read whole (they are bounded), so that a request that never reached
    // the shard can be sent again and the shard always gets a Content-Length.
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c: Buffer) => {
      if (tooLarge) return;
      size += c.length;
      if (size > max) {
        tooLarge = true;
        chunks.length = 0;
        this.sendError(
          res,
          { status: 413, code: 'body_too_large', message: `request bodies are limited to ${max} bytes` },
          requestId,
          shard,
          startedAt,
          true,
        );
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (tooLarge || res.destroyed) return;
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
      const head = buildRequestHead(req, {
        shardHeader: this.shardHeaders[shard] as string,
        requestId,
        bodyLength: body.length,
        upgrade: false,
      });
      new Exchange(req, res, shard, pool, head, body, requestId, startedAt, this).start();
    });
    req.on('error', () => res.destroy());
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const requestId = requestIdOf(req);
    if (this.draining) {
      writeRawError(
        socket,
        { status: 503, code: 'router_shutting_down', message: 'the router is shutting down', retryAfter: this.retryAfter },
        requestId,
      );
      return;
    }
    const upgrade = req.headers.upgrade;
    if (typeof upgrade !== 'string' || upgrade.toLowerCase() !== 'websocket') {
      this.metrics.request(undefined, 400, undefined);
      writeRawError(socket, { status: 400, code: 'unsupported_upgrade', message: 'only WebSocket upgrades are relayed' }, requestId);
      return;
    }
    const t = this.target(req);
    if ('error' in t) {
      this.metrics.request(undefined, t.error.status, undefined);
      writeRawError(socket, t.error, requestId);
      return;
    }
    const shard = t.shard;
    const state = this.topology.states[shard];
    if (!state) return;
    if (this.topology.probing && !state.ready) {
      this.upstreamFailure(shard, 'unready');
      this.answered(shard, 503);
      writeRawError(
        socket,
        { status: 503, code: 'shard_unavailable', message: `shard ${shard} is not ready`, retryAfter: this.retryAfter },
        requestId,
      );
      return;
    }
    if ((this.wsPerShard[shard] ?? 0) >= this.cfg.router.limits.maxWebSocketsPerShard) {
      this.upstreamFailure(shard, 'overloaded');
      this.answered(shard, 503);
      writeRawError(
        socket,
        {
          status: 503,
          code: 'too_many_websockets',
          message: `shard ${shard} already has ${this.cfg.router.limits.maxWebSocketsPerShard} WebSocket connections through this router`,
          retryAfter: this.retryAfter,
        },
        requestId,
      );
      return;
    }
    const requestHead = buildRequestHead(req, {
      shardHeader: this.shardHeaders[shard] as string,
      requestId,
      bodyLength: undefined,
      upgrade: true,
    });
    new WebSocketRelay(shard, socket, head, state.host, state.port, requestHead, requestId, this).start();
  }

  // --- ExchangeOwner and RelayOwner ---

  finished(shard: number, code: number, startedAt: number): void {
    this.metrics.request(shard, code, (performance.now() - startedAt) / 1000);
  }

  answered(shard: number, code: number): void {
    this.metrics.request(shard, code, undefined);
  }

  sendError(
    res: ServerResponse,
    e: RouterError,
    requestId: string,
    shard: number,
    startedAt: number,
    close = false,
  ): void {
    sendError(res, e, requestId, close);
    this.finished(shard, e.status, startedAt);
  }

  upstreamFailure(shard: number, reason: string, err?: Error): void {
    this.metrics.upstreamError(shard, reason);
    if (reason !== 'unready' && reason !== 'overloaded') {
      this.log.warn({ shard, reason, err: err?.message }, 'upstream failure');
    }
  }

  refused(shard: number): void {
    this.topology.markRefused(shard);
  }

  connected(shard: number): void {
    this.topology.markConnected(shard);
  }

  misdirected(shard: number): void {
    this.metrics.misdirectedAnswer(shard);
    this.upstreamFailure(shard, 'misdirected');
    const now = Date.now();
    if (now - (this.lastMisdirectedLog[shard] ?? 0) > 1000) {
      this.lastMisdirectedLog[shard] = now;
      this.log.error(
        { shard, shards: this.shards },
        'shard answered 421 Misdirected Request: router and shard configurations disagree about the topology; an operator must act',
      );
    }
    this.topology.refresh();
  }

  opened(relay: WebSocketRelay): void {
    this.relays.add(relay);
    this.wsPerShard[relay.shard] = (this.wsPerShard[relay.shard] ?? 0) + 1;
    this.metrics.websocketOpened(relay.shard);
  }

  closed(relay: WebSocketRelay): void {
    if (!this.relays.delete(relay)) return;
    this.wsPerShard[relay.shard] = (this.wsPerShard[relay.shard] ?? 1) - 1;
    this.metrics.websocketClosed(relay.shard);
  }

  // --- lifecycle ---

  async listen(): Promise<{ port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.cfg.router.port, this.cfg.router.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.topology.start();
    return { port: (this.server.address() as AddressInfo).port };
  }

  get isDraining(): boolean {
    return this.draining;
  }

  async close(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    for (const relay of this.relays) relay.shutdown();
    const deadline = setTimeout(() => {
      this.server.closeAllConnections();
      for (const relay of this.relays) relay.destroy();
    }, this.cfg.router.timeouts.shutdownMs);
    deadline.unref();
    await closed;
    clearTimeout(deadline);
    for (const relay of this.relays) relay.destroy();
    for (const pool of this.pools) pool.destroy();
    this.topology.stop();
  }
}

/** Starts a router and its admin server as configured. */
export async function startRouter(cfg: Config, log: Logger): Promise<RunningRouter> {
  await initHash();
  const router = new Router(cfg, log);
  const { port } = await router.listen();
  const admin = createAdminServer(router);
  const adminPort = await admin.listen(cfg.router.adminPort, cfg.router.host);
  log.info(
    { port, adminPort, shards: router.shards, assignment: cfg.shardSpec.assignment, probing: router.topology.probing },
    'router listening',
  );
  return {
    port,
    adminPort,
    async stop() {
      await router.close();
      await admin.close();
    },
  };
}
