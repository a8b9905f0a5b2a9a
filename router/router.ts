/**
 * The router process: a public server that sends every request and WebSocket upgrade
 * to the shard its key maps to, and an admin server for metrics, health and topology.
 *
 * The public side runs on plain TCP sockets with the router's own strict HTTP/1.1
 * parser (router/request-parser.ts) rather than node:http: measured in bench/, the
 * node:http server alone tops out below the throughput target, and a proxy needs
 * neither its streams nor its header objects (see bench/RESULTS.md).
 */
import net from 'node:net';
import { type Config, shardCount } from '../common/config.js';
import { initHash } from '../common/hash.js';
import type { Logger } from '../common/logger.js';
import { pathOf, ShardFunction } from '../common/shard-function.js';
import { StaticTopology, type Topology } from '../common/topology.js';
import { createAdminServer } from './admin.js';
import { ClientConnection, type ClientLimits, type ClientOwner } from './client-connection.js';
import { DeadlineSweeper } from './deadlines.js';
import { type RouterError, writeRawError } from './errors.js';
import { Exchange, type ExchangeOwner } from './forward.js';
import { RouterMetrics } from './metrics.js';
import { buildRequestHead, clientRequestId } from './request-head.js';
import { headerValue, type ParsedRequest } from './request-parser.js';
import { StaticFiles } from './static-files.js';
import { UpstreamPool } from './upstream-pool.js';
import { type RelayOwner, WebSocketRelay } from './websocket-relay.js';

export interface RunningRouter {
  port: number;
  adminPort: number;
  /** Stops accepting, lets in-flight requests finish, closes WebSockets with 1001. */
  stop(): Promise<void>;
}

type Target = { shard: number } | { error: RouterError };

const MAX_HEADERS = 100;

export class Router implements ExchangeOwner, RelayOwner, ClientOwner {
  readonly retryAfter: number;
  readonly upstreamMs: number;
  readonly connectMs: number;
  readonly shards: number;
  readonly topology: Topology;
  readonly metrics: RouterMetrics;
  readonly limits: ClientLimits;
  readonly clock: DeadlineSweeper;
  private readonly sf: ShardFunction;
  /** The web UI's files when router.webDir is set. */
  private readonly web: StaticFiles | undefined;
  private readonly keyHeader: string;
  private readonly pools: UpstreamPool[];
  private readonly shardHeaders: string[];
  private readonly shardHosts: string[];
  private readonly relays = new Set<WebSocketRelay>();
  private readonly clients = new Set<ClientConnection>();
  private readonly wsPerShard: number[];
  private readonly lastMisdirectedLog: number[];
  private isDrainingNow = false;
  private readonly server: net.Server;

  constructor(
    readonly cfg: Config,
    readonly log: Logger,
    /** The topology (default: static); kubernetes mode passes a KubernetesTopology. */
    topology?: Topology,
  ) {
    const r = cfg.router;
    this.retryAfter = r.retryAfterSeconds;
    this.upstreamMs = r.timeouts.upstreamMs;
    this.connectMs = r.timeouts.connectMs;
    this.limits = {
      maxHeaderBytes: r.limits.maxHeaderBytes,
      maxHeaders: MAX_HEADERS,
      maxBodyBytes: r.limits.maxBodyBytes,
      headersTimeoutMs: Math.min(60_000, r.timeouts.requestMs),
      requestTimeoutMs: r.timeouts.requestMs,
      keepAliveMs: r.timeouts.clientKeepAliveMs,
    };
    this.clock = new DeadlineSweeper(
      DeadlineSweeper.resolutionFor([
        r.timeouts.upstreamMs,
        r.timeouts.idleSocketMs,
        r.timeouts.clientKeepAliveMs,
        r.timeouts.requestMs,
      ]),
    );
    // Before anything listens or connects: a bad webDir stops the start with StaticFilesError.
    this.web = r.webDir === undefined ? undefined : StaticFiles.load(r.webDir);
    this.shards = shardCount(cfg);
    this.sf = new ShardFunction(cfg.shardSpec);
    this.keyHeader = cfg.shardSpec.header.toLowerCase();
    if (!topology && cfg.topology.mode !== 'static')
      throw new Error(`topology.mode ${cfg.topology.mode} needs its topology passed to the router`);
    this.topology = topology ?? new StaticTopology(cfg);
    this.metrics = new RouterMetrics(this.shards, {}, cfg.topology.mode === 'kubernetes');
    for (const s of this.topology.states) this.metrics.setReady(s.ordinal, s.ready);
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
          clock: this.clock,
        }),
    );
    this.clock.watch(this.clients);
    for (const pool of this.pools) this.clock.watch(pool.all);
    this.shardHeaders = this.topology.states.map((s) => `${s.ordinal}/${this.shards}`);
    this.shardHosts = this.topology.states.map((s) => hostOf(s.target));
    this.wsPerShard = new Array(this.shards).fill(0);
    this.lastMisdirectedLog = new Array(this.shards).fill(0);
    this.topology.on('change', (s) => {
      this.metrics.setReady(s.ordinal, s.ready);
      if (s.ready) this.log.info({ shard: s.ordinal, target: s.target }, 'shard ready');
      else this.log.warn({ shard: s.ordinal, target: s.target, reason: s.reason }, 'shard not ready');
    });
    this.topology.on('address', (s) => {
      // A pod moved: new requests go to its new address; pooled sockets to the old one are dropped.
      this.pools[s.ordinal]?.retarget(s.host, s.port);
      this.shardHosts[s.ordinal] = hostOf(s.target);
      this.log.info({ shard: s.ordinal, target: s.target }, 'shard address changed');
    });
    this.topology.on('status', (st) => this.metrics.setTopologyStatus(st));
    this.metrics.setTopologyStatus(this.topology.status());
    this.server = net.createServer({ noDelay: true }, (socket) => {
      const conn = new ClientConnection(socket, this);
      this.clients.add(conn);
    });
    this.server.maxConnections = r.limits.maxConnections;
  }

  get draining(): boolean {
    return this.isDrainingNow;
  }

  get isDraining(): boolean {
    return this.isDrainingNow;
  }

  /** Where a request goes, or the error the router answers itself. */
  private target(req: ParsedRequest): Target {
    const path = pathOf(req.target);
    if (path.length > this.cfg.router.limits.maxPathBytes) {
      return {
        error: {
          status: 414,
          code: 'path_too_long',
          message: `paths are limited to ${this.cfg.router.limits.maxPathBytes} bytes`,
        },
      };
    }
    const route = this.sf.routeWith(
      path,
      this.keyHeader ? headerValue(req, this.keyHeader) : undefined,
      this.shards,
    );
    switch (route.kind) {
      case 'shard':
      case 'fixed':
        return { shard: route.shard };
      case 'reject':
        return {
          error: {
            status: 404,
            code: 'no_shard_key',
            message: 'the request names no group or user to route by',
          },
        };
      case 'malformed':
        return {
          error: {
            status: 400,
            code: 'malformed_key',
            message: 'the shard key has a malformed percent-escape',
          },
        };
    }
  }

  // --- ClientOwner ---

  dispatch(conn: ClientConnection, req: ParsedRequest, body: Buffer | undefined): void {
    const startedAt = performance.now();
    if (this.web) {
      // The web UI's own paths (/, /index.html, /app/...) are answered here, before the shard function.
      const status = this.web.handle(conn, req);
      if (status !== undefined) {
        this.metrics.request(undefined, status, undefined);
        return;
      }
    }
    const t = this.target(req);
    if ('error' in t) {
      this.metrics.request(undefined, t.error.status, undefined);
      conn.respondError(t.error, clientRequestId(req));
      return;
    }
    const shard = t.shard;
    if (this.topology.readinessKnown && !this.topology.isReady(shard)) {
      this.upstreamFailure(shard, 'unready');
      conn.respondError(
        {
          status: 503,
          code: 'shard_unavailable',
          message: `shard ${shard} is not ready`,
          retryAfter: this.retryAfter,
        },
        clientRequestId(req),
      );
      this.finished(shard, 503, startedAt);
      return;
    }
    const built = buildRequestHead(req, {
      shardHeader: this.shardHeaders[shard] as string,
      defaultHost: this.shardHosts[shard] as string,
      remoteAddress: conn.remoteAddress,
      bodyLength: body ? body.length : req.contentLength === 0 ? 0 : undefined,
      upgrade: false,
    });
    new Exchange(
      conn,
      req.method,
      shard,
      this.pools[shard] as UpstreamPool,
      built.head,
      body,
      built.requestId,
      startedAt,
      this,
    ).start();
  }

  upgrade(_conn: ClientConnection, req: ParsedRequest, socket: net.Socket, rest: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (this.isDrainingNow) {
      writeRawError(
        socket,
        {
          status: 503,
          code: 'router_shutting_down',
          message: 'the router is shutting down',
          retryAfter: this.retryAfter,
        },
        clientRequestId(req),
      );
      return;
    }
    const t = this.target(req);
    if ('error' in t) {
      this.metrics.request(undefined, t.error.status, undefined);
      writeRawError(socket, t.error, clientRequestId(req));
      return;
    }
    const shard = t.shard;
    const state = this.topology.states[shard];
    if (!state) return;
    const refuse = (reason: string, e: RouterError) => {
      this.upstreamFailure(shard, reason);
      this.answered(shard, e.status);
      writeRawError(socket, e, clientRequestId(req));
    };
    if (this.topology.readinessKnown && !state.ready) {
      refuse('unready', {
        status: 503,
        code: 'shard_unavailable',
        message: `shard ${shard} is not ready`,
        retryAfter: this.retryAfter,
      });
      return;
    }
    const maxWs = this.cfg.router.limits.maxWebSocketsPerShard;
    if ((this.wsPerShard[shard] ?? 0) >= maxWs) {
      refuse('overloaded', {
        status: 503,
        code: 'too_many_websockets',
        message: `shard ${shard} already has ${maxWs} WebSocket connections through this router`,
        retryAfter: this.retryAfter,
      });
      return;
    }
    const built = buildRequestHead(req, {
      shardHeader: this.shardHeaders[shard] as string,
      defaultHost: this.shardHosts[shard] as string,
      remoteAddress: socket.remoteAddress ?? '',
      bodyLength: undefined,
      upgrade: true,
    });
    new WebSocketRelay(
      shard,
      socket,
      rest,
      state.host,
      state.port,
      built.head,
      built.requestId,
      this,
    ).start();
  }

  rejected(status: number): void {
    this.metrics.request(undefined, status, undefined);
  }

  clientClosed(conn: ClientConnection): void {
    this.clients.delete(conn);
  }

  // --- ExchangeOwner and RelayOwner ---

  finished(shard: number, code: number, startedAt: number): void {
    this.metrics.request(shard, code, (performance.now() - startedAt) / 1000);
  }

  answered(shard: number, code: number): void {
    this.metrics.request(shard, code, undefined);
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

  /** Logs what the web UI directory holds. */
  logWebDir(): void {
    const web = this.web;
    if (!web) return;
    this.log.info({ webDir: web.dir, files: web.count, bytes: web.totalBytes }, 'serving web UI files');
    if (!web.hasIndex) this.log.warn({ webDir: web.dir }, 'router.webDir has no index.html: / answers 404');
  }

  async listen(): Promise<{ port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.cfg.router.port, this.cfg.router.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.topology.start();
    this.clock.start();
    return { port: (this.server.address() as net.AddressInfo).port };
  }

  async close(): Promise<void> {
    if (this.isDrainingNow) return;
    this.isDrainingNow = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Idle keep-alive connections close now; busy ones close after their response.
    for (const c of this.clients) c.closeIfIdle();
    for (const relay of this.relays) relay.shutdown();
    const deadline = setTimeout(() => {
      for (const c of this.clients) c.abort();
      for (const relay of this.relays) relay.destroy();
    }, this.cfg.router.timeouts.shutdownMs);
    deadline.unref();
    await closed;
    clearTimeout(deadline);
    for (const relay of this.relays) relay.destroy();
    for (const pool of this.pools) pool.destroy();
    await this.topology.stop();
    this.clock.stop();
  }
}

/** host[:port] of a base URL, for a default Host header ('' while unknown). */
function hostOf(target: string): string {
  if (!target) return '';
  try {
    return new URL(target).host;
  } catch {
    return '';
  }
}

/** The topology of the configured mode (kubernetes: loaded only then, it pulls in the Kubernetes client). */
export async function createTopology(cfg: Config, log: Logger): Promise<Topology> {
  if (cfg.topology.mode === 'kubernetes') {
    const { KubernetesTopology } = await import('../common/kubernetes-topology.js');
    return new KubernetesTopology(cfg, log);
  }
  return new StaticTopology(cfg);
}

/** Starts a router and its admin server as configured. */
export async function startRouter(cfg: Config, log: Logger): Promise<RunningRouter> {
  await initHash();
  const router = new Router(cfg, log, await createTopology(cfg, log));
  router.logWebDir();
  const { port } = await router.listen();
  const admin = createAdminServer(router);
  const adminPort = await admin.listen(cfg.router.adminPort, cfg.router.host);
  log.info(
    {
      port,
      adminPort,
      shards: router.shards,
      assignment: cfg.shardSpec.assignment,
      mode: router.topology.mode,
      readinessKnown: router.topology.readinessKnown,
    },
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
