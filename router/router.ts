/**
 * The router process: a public server that sends every request and WebSocket upgrade
 * to the shard its key maps to, and an admin server for metrics, health and topology.
 *
 * The public side runs on plain TCP sockets with the router's own strict HTTP/1.1
 * parser (router/request-parser.ts) rather than node:http: measured in bench/, the
 * node:http server alone tops out below the throughput target, and a proxy needs
 * neither its streams nor its header objects (see bench/RESULTS.md).
 */
import http from 'node:http';
import net from 'node:net';
import { type Config, forwardedHeadLimit, shardCount } from '../common/config.js';
import { initHash, xxh64 } from '../common/hash.js';
import { listen } from '../common/listen.js';
import type { Logger } from '../common/logger.js';
import { checkOpenFiles } from '../common/open-files.js';
import { idAmbiguity, pathAmbiguity } from '../common/paths.js';
import { configuredMap, type ShardMap, shardsNeeded } from '../common/placement.js';
import { pathOf, ShardFunction } from '../common/shard-function.js';
import { type ShardState, StaticTopology, type Topology } from '../common/topology.js';
import { type AdminView, createAdminServer } from './admin.js';
import { ClientConnection, type ClientLimits, type ClientOwner } from './client-connection.js';
import { DeadlineSweeper } from './deadlines.js';
import type { RouterError } from './errors.js';
import { Exchange, type ExchangeOwner } from './forward.js';
import { RouterMetrics } from './metrics.js';
import { type BuiltHead, buildRequestHead, clientRequestId } from './request-head.js';
import type { ParsedRequest } from './request-parser.js';
import { type Redispatch, RouterShardMap } from './shard-map.js';
import { StaticFiles } from './static-files.js';
import { UpstreamPool } from './upstream-pool.js';
import { type RelayOwner, WebSocketRelay } from './websocket-relay.js';

export interface RunningRouter {
  port: number;
  adminPort: number;
  /** Stops accepting, lets in-flight requests finish, closes WebSockets with 1001. */
  stop(): Promise<void>;
}

/** Where a request goes: its owner, and its key's hash (none for onNoMatch's fixed shard). */

const MAX_HEADERS = 100;

/** The methods Node's HTTP parser (llhttp, the shard's) accepts; any other is refused. */
const KNOWN_METHODS = new Set(http.METHODS);
const BAD_METHOD: RouterError = {
  status: 400,
  code: 'bad_method',
  message: 'unknown request method (methods are upper case: GET, PUT, POST, DELETE, ...)',
};

/** The value of a header that may appear once (lower-case name): undefined when absent, null when repeated. */
function singleHeader(req: ParsedRequest, lowerName: string): string | undefined | null {
  const h = req.headers;
  const len = lowerName.length;
  let value: string | undefined;
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i] as string;
    if (name.length === len && name.toLowerCase() === lowerName) {
      if (value !== undefined) return null;
      value = h[i + 1] as string;
    }
  }
  return value;
}

export class Router implements ExchangeOwner, RelayOwner, ClientOwner {
  /** Pass 2's result for the request being prepared: its shard and its key's hash (scratch, read right after prepare). */
  private routedShard = 0;
  private routedHash: bigint | undefined;
  readonly retryAfter: number;
  readonly upstreamMs: number;
  readonly connectMs: number;
  /** The configured S (the shard map may have more: see shardMap). */
  readonly shards: number;
  readonly topology: Topology;
  /** The shard map the router routes by: its configuration (version 0) until a shard reports one. */
  readonly shardMap: RouterShardMap;
  readonly metrics: RouterMetrics;
  readonly limits: ClientLimits;
  readonly clock: DeadlineSweeper;
  private readonly sf: ShardFunction;
  /** The web UI's files when router.webDir is set. */
  private readonly web: StaticFiles | undefined;
  private readonly keyHeader: string;
  /** Requests with bodies up to this many bytes are kept for a re-dispatch after a 421. */
  private readonly retryBodyBytes: number;
  private readonly pools: UpstreamPool[];
  private readonly shardHeaders: string[];
  private readonly shardHosts: string[];
  private readonly relays = new Set<WebSocketRelay>();
  private readonly clients = new Set<ClientConnection>();
  private readonly wsPerShard: number[];
  private readonly lastMisdirectedLog: number[];
  private drainingNow = false;
  /** The largest head forwarded to a shard (what the shard accepts; see forwardedHeadLimit). */
  private readonly maxForwardedHead: number;
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
    this.retryBodyBytes = r.limits.retryBodyBytes;
    this.maxForwardedHead = forwardedHeadLimit(cfg);
    this.shardMap = new RouterShardMap({ ...configuredMap(cfg), version: 0 }, (map, previous) =>
      this.adopted(map, previous),
    );
    if (!topology && cfg.topology.mode !== 'static')
      throw new Error(`topology.mode ${cfg.topology.mode} needs its topology passed to the router`);
    this.topology = topology ?? new StaticTopology(cfg);
    this.metrics = new RouterMetrics(this.shards, {}, cfg.topology.mode === 'kubernetes');
    this.pools = [];
    this.shardHeaders = [];
    this.shardHosts = [];
    this.wsPerShard = [];
    this.lastMisdirectedLog = [];
    this.clock.watch(this.clients);
    this.grow();
    this.topology.on('grown', () => this.grow());
    this.topology.on('map', (p) => this.shardMap.probedMap(p));
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
    return this.drainingNow;
  }

  // --- the passes every request and upgrade goes through, in order ---
  //
  //   1. method       a method Node's HTTP parser (the shard's) rejects: 400 bad_method
  //   2. target       path bound (414), ambiguous path (400), repeated key header (400),
  //                   the shard function under the shard map (404 no_shard_key, 400 malformed_key)
  //   3. address      an owner the topology has no address for (503 no_shard_address)
  //   4. readiness    an unready shard (503), for upgrades also the WebSocket bound (503)
  //   5. head         the head for the shard, within what the shard accepts (431)
  //
  // then the exchange (Exchange, pooled) or the upgrade (WebSocketRelay, its own socket).
  // A request answered 421 with a newer map goes through passes 3 to 5 again for its
  // new owner (redispatch, redispatchUpgrade).

  /**
   * Runs passes 1 to 5; answers the client itself and returns undefined when one refuses.
   * (No closure or intermediate object per request: this is the hot path. The key's hash
   * is left in `routedHash` for the caller.)
   */
  private prepare(
    conn: ClientConnection,
    req: ParsedRequest,
    body: Buffer | undefined,
    upgrade: boolean,
    startedAt: number,
  ): BuiltHead | undefined {
    // 1. method
    if (!KNOWN_METHODS.has(req.method)) return this.refuseUnrouted(conn, req, BAD_METHOD);
    if (upgrade && this.drainingNow) return this.refuseUnrouted(conn, req, this.shuttingDown());
    // 2. target
    const shard = this.target(req);
    if (typeof shard !== 'number') return this.refuseUnrouted(conn, req, shard);
    this.routedShard = shard;
    return this.prepareFor(conn, req, body, upgrade, startedAt, shard, undefined);
  }

  /** A refusal before the request has a shard (counted without one). */
  private refuseUnrouted(
    conn: ClientConnection,
    req: ParsedRequest,
    e: RouterError,
    requestId?: string,
  ): undefined {
    this.metrics.request(undefined, e.status, undefined);
    conn.respondError(e, requestId ?? clientRequestId(req));
    return undefined;
  }

  private shuttingDown(): RouterError {
    return {
      status: 503,
      code: 'router_shutting_down',
      message: 'the router is shutting down',
      retryAfter: this.retryAfter,
    };
  }

  /** Passes 3 to 5 for a request going to `shard`. */
  private prepareFor(
    conn: ClientConnection,
    req: ParsedRequest,
    body: Buffer | undefined,
    upgrade: boolean,
    startedAt: number,
    shard: number,
    requestId: string | undefined,
  ): BuiltHead | undefined {
    // 3. address
    if (shard >= this.pools.length) {
      return this.refuseUnrouted(
        conn,
        req,
        {
          status: 503,
          code: 'no_shard_address',
          message: `shard ${shard} has no address: add it to topology.targets`,
          retryAfter: this.retryAfter,
        },
        requestId,
      );
    }
    // 4. readiness
    if (this.topology.readinessKnown && !this.topology.isReady(shard)) {
      this.upstreamFailure(shard, 'unready');
      return this.refuseRouted(conn, req, shard, upgrade, startedAt, requestId, {
        status: 503,
        code: 'shard_unavailable',
        message: `shard ${shard} is not ready`,
        retryAfter: this.retryAfter,
      });
    }
    if (upgrade) {
      const maxWs = this.cfg.router.limits.maxWebSocketsPerShard;
      if ((this.wsPerShard[shard] ?? 0) >= maxWs) {
        this.upstreamFailure(shard, 'overloaded');
        return this.refuseRouted(conn, req, shard, upgrade, startedAt, requestId, {
          status: 503,
          code: 'too_many_websockets',
          message: `shard ${shard} already has ${maxWs} WebSocket connections through this router`,
          retryAfter: this.retryAfter,
        });
      }
    }
    // 5. head
    const built = buildRequestHead(req, {
      shardHeader: this.shardHeaders[shard] as string,
      defaultHost: this.shardHosts[shard] as string,
      remoteAddress: conn.remoteAddress,
      bodyLength: upgrade ? undefined : body ? body.length : req.contentLength === 0 ? 0 : undefined,
      upgrade,
      requestId,
    });
    if (built.head.length > this.maxForwardedHead) {
      return this.refuseUnrouted(
        conn,
        req,
        {
          status: 431,
          code: 'headers_too_large',
          message: `the request head would reach the shard larger than ${this.maxForwardedHead} bytes`,
        },
        requestId,
      );
    }
    return built;
  }

  /** A refusal of a request with a shard (counted for it). */
  private refuseRouted(
    conn: ClientConnection,
    req: ParsedRequest,
    shard: number,
    upgrade: boolean,
    startedAt: number,
    requestId: string | undefined,
    e: RouterError,
  ): undefined {
    if (upgrade) this.answered(shard, e.status);
    else this.finished(shard, e.status, startedAt);
    conn.respondError(e, requestId ?? clientRequestId(req));
    return undefined;
  }

  /**
   * Pass 2: the shard a request goes to, or the error the router answers itself. The
   * key's hash (undefined for a fixed shard) is left in `routedHash`.
   */
  private target(req: ParsedRequest): number | RouterError {
    this.routedHash = undefined;
    const path = pathOf(req.target);
    const limits = this.cfg.router.limits;
    if (path.length > limits.maxPathBytes) {
      return {
        status: 414,
        code: 'path_too_long',
        message: `paths are limited to ${limits.maxPathBytes} bytes`,
      };
    }
    // The router and the shard must read the same id from the same bytes.
    const ambiguous =
      pathAmbiguity(path) ??
      (path.indexOf('%') === -1 ? undefined : idAmbiguity(this.sf.pathKey(path) ?? ''));
    if (ambiguous !== undefined) {
      return {
        status: 400,
        code: 'ambiguous_path',
        message: `the path has ${ambiguous}: the router and the shard could read different ids from it`,
      };
    }
    const keyHeader = this.keyHeader ? singleHeader(req, this.keyHeader) : undefined;
    if (keyHeader === null) {
      return {
        status: 400,
        code: 'repeated_key_header',
        message: `the ${this.keyHeader} header may appear once`,
      };
    }
    const k = this.sf.keyWith(path, keyHeader);
    switch (k.kind) {
      case 'key': {
        const hash = xxh64(k.key);
        this.routedHash = hash;
        return this.shardMap.placement.ownerOfHash(hash);
      }
      case 'fixed':
        return k.shard;
      case 'reject':
        return {
          status: 404,
          code: 'no_shard_key',
          message: 'the request names no group or user to route by',
        };
      case 'malformed':
        return {
          status: 400,
          code: 'malformed_key',
          message: 'the shard key has a malformed percent-escape',
        };
    }
  }

  // --- ClientOwner ---

  dispatch(conn: ClientConnection, req: ParsedRequest, body: Buffer | undefined): void {
    const startedAt = performance.now();
    if (this.web && KNOWN_METHODS.has(req.method)) {
      // The web UI's own paths (/, /index.html, /app/...) are answered here, before the shard function.
      const status = this.web.handle(conn, req);
      if (status !== undefined) {
        this.metrics.request(undefined, status, undefined);
        return;
      }
    }
    const p = this.prepare(conn, req, body, false, startedAt);
    if (!p) return;
    const shard = this.routedShard;
    const hash = this.routedHash;
    const retry =
      hash !== undefined && (body === undefined || body.length <= this.retryBodyBytes)
        ? { req, body, hash, requestId: p.requestId, hops: 0 }
        : undefined;
    new Exchange(
      conn,
      req.method,
      shard,
      this.pools[shard] as UpstreamPool,
      p.head,
      body,
      p.requestId,
      startedAt,
      this,
      retry,
    ).start();
  }

  upgrade(conn: ClientConnection, req: ParsedRequest): void {
    const p = this.prepare(conn, req, undefined, true, performance.now());
    if (!p) return;
    const hash = this.routedHash;
    const retry =
      hash !== undefined ? { req, body: undefined, hash, requestId: p.requestId, hops: 0 } : undefined;
    this.relay(conn, this.routedShard, p, retry);
  }

  private relay(conn: ClientConnection, shard: number, p: BuiltHead, retry: Redispatch | undefined): void {
    const state = this.topology.states[shard] as ShardState;
    new WebSocketRelay(shard, conn, state.host, state.port, p.head, p.requestId, this, retry).start();
  }

  // --- the shard map ---

  mapSeen(value: string): void {
    this.shardMap.seen(value);
  }

  misdirectedWithMap(shard: number, map: string, redispatch: Redispatch | undefined): number | undefined {
    this.metrics.misdirectedAnswer(shard);
    const to = this.shardMap.redirect(shard, map, redispatch);
    if (to === undefined) {
      this.log.debug({ shard, map, hops: redispatch?.hops }, 'shard answered 421: passed to the client');
    }
    return to;
  }

  redispatch(client: ClientConnection, r: Redispatch, shard: number, startedAt: number): void {
    r.hops++;
    this.metrics.misdirectedRetry();
    const p = this.prepareFor(client, r.req, r.body, false, startedAt, shard, r.requestId);
    if (!p) return;
    const pool = this.pools[shard] as UpstreamPool;
    new Exchange(client, r.req.method, shard, pool, p.head, r.body, r.requestId, startedAt, this, r).start();
  }

  redispatchUpgrade(conn: ClientConnection, r: Redispatch, shard: number): void {
    r.hops++;
    this.metrics.misdirectedRetry();
    if (this.drainingNow) {
      this.metrics.request(undefined, 503, undefined);
      conn.respondError(
        {
          status: 503,
          code: 'router_shutting_down',
          message: 'the router is shutting down',
          retryAfter: this.retryAfter,
        },
        r.requestId,
      );
      return;
    }
    const p = this.prepareFor(conn, r.req, undefined, true, performance.now(), shard, r.requestId);
    if (p) this.relay(conn, shard, p, r);
  }

  /** A shard reported a newer map (or its migration): route by it, and address its shards. */
  private adopted(map: Readonly<ShardMap>, previous: Readonly<ShardMap>): void {
    if (map.version !== previous.version) {
      this.log.info(
        {
          version: map.version,
          shards: map.shards,
          assignment: map.assignment,
          previousVersion: previous.version,
          ...(map.migration ? { migration: map.migration.state } : {}),
        },
        'router adopted shard map',
      );
    }
    this.metrics.setMap(map.version, map.shards);
    const needed = shardsNeeded(map);
    const addressable = this.topology.resize(needed);
    if (addressable < needed) {
      this.log.warn(
        { shards: needed, addressable },
        `the shard map has ${needed} shards but only ${addressable} have an address: requests for the others get 503 no_shard_address; add them to topology.targets`,
      );
    }
    this.grow();
    if (map.version !== previous.version) this.topology.retryUnready();
    for (let i = 0; i < this.shardHeaders.length; i++) this.shardHeaders[i] = `${i}/${map.shards}`;
  }

  /** Pools and per-shard state for every ordinal the topology can address. */
  private grow(): void {
    const r = this.cfg.router;
    const states = this.topology.states;
    const S = this.shardMap.placement.shards;
    for (let i = this.pools.length; i < states.length; i++) {
      const s = states[i] as ShardState;
      const pool = new UpstreamPool({
        host: s.host,
        port: s.port,
        maxSockets: r.limits.maxSocketsPerShard,
        maxQueued: r.limits.maxQueuedPerShard,
        connectMs: r.timeouts.connectMs,
        idleMs: r.timeouts.idleSocketMs,
        maxHeadBytes: r.limits.maxHeaderBytes * 4,
        clock: this.clock,
      });
      this.pools.push(pool);
      this.clock.watch(pool.all);
      this.shardHeaders.push(`${i}/${S}`);
      this.shardHosts.push(hostOf(s.target));
      this.wsPerShard.push(0);
      this.lastMisdirectedLog.push(0);
    }
    this.metrics.grow(states.length);
    for (const s of states) this.metrics.setReady(s.ordinal, s.ready);
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

  /** What the admin port needs to know of the router. */
  adminView(): AdminView {
    const router = this;
    return {
      get draining() {
        return router.draining;
      },
      topology: this.topology,
      registry: this.metrics.registry,
      get assignment() {
        return router.shardMap.placement.map.assignment;
      },
      map: () => this.shardMap.view(),
    };
  }

  /** Logs what the web UI directory holds. */
  logWebDir(): void {
    const web = this.web;
    if (!web) return;
    this.log.info({ webDir: web.dir, files: web.count, bytes: web.totalBytes }, 'serving web UI files');
    if (!web.hasIndex) this.log.warn({ webDir: web.dir }, 'router.webDir has no index.html: / answers 404');
  }

  async listen(): Promise<{ port: number }> {
    const port = await listen(this.server, this.cfg.router.port, this.cfg.router.host);
    this.topology.start();
    this.clock.start();
    return { port };
  }

  async close(): Promise<void> {
    if (this.drainingNow) return;
    this.drainingNow = true;
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
  const admin = createAdminServer(router.adminView());
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
  // Two descriptors per client connection that is a relayed WebSocket (the client's and
  // the shard's), plus each shard's pool of keep-alive connections.
  const { maxConnections, maxSocketsPerShard } = cfg.router.limits;
  checkOpenFiles(log, {
    needed: 2 * maxConnections + router.shards * maxSocketsPerShard + 16,
    setting: 'router.limits.maxConnections',
    value: maxConnections,
  });
  return {
    port,
    adminPort,
    async stop() {
      await router.close();
      await admin.close();
    },
  };
}
