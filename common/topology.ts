/**
 * Topology (docs/architecture.md section 2): the address of every shard, and each shard's
 * readiness. The configured S is where it starts; a shard map with more shards (or a
 * migration to more) grows it with resize(), as far as the mode can address shards
 * (templates and kubernetes pods: any ordinal; an explicit `targets` list: its length).
 * Readiness never changes where a key goes.
 * This file holds the interface the router and the shards use, and the static mode;
 * the kubernetes mode is common/kubernetes-topology.ts (loaded only in that mode).
 */
import { EventEmitter } from 'node:events';
import { type Config, shardCount } from './config.js';
import { isValidMap, type ShardMap } from './placement.js';
import { MAP_HEADER } from './protocol.js';

export interface ShardEndpoint {
  ordinal: number;
  /** Base URL of the shard's public port. */
  target: string;
  host: string;
  port: number;
  /** Base URL of the shard's admin port, when known. */
  admin: string | undefined;
}

export interface ShardState extends ShardEndpoint {
  ready: boolean;
  consecutiveFailures: number;
  reason: string | undefined;
  since: string;
}

/**
 * A target or admin template for one ordinal: `{ordinal}` is the ordinal, `{ordinal+N}`
 * the ordinal plus N (contiguous ports: `http://127.0.0.1:{ordinal+8081}`), `{namespace}`
 * the namespace.
 */
export function expandTemplate(template: string, ordinal: number, namespace: string): string {
  return template
    .replace(/\{ordinal(?:\+(\d{1,9}))?\}/g, (_, n: string | undefined) =>
      String(n === undefined ? ordinal : ordinal + Number(n)),
    )
    .replaceAll('{namespace}', namespace);
}

function endpoint(ordinal: number, target: string, admin: string | undefined): ShardEndpoint {
  const url = new URL(target);
  if (url.protocol !== 'http:')
    throw new Error(`shard ${ordinal}: only http:// targets are supported, got ${target}`);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { ordinal, target: url.origin, host, port: url.port ? Number(url.port) : 80, admin };
}

/** The endpoints of all S configured shards, from `targets` or from the templates. */
export function staticEndpoints(cfg: Config): ShardEndpoint[] {
  const S = shardCount(cfg);
  const out: ShardEndpoint[] = [];
  for (let i = 0; i < S; i++) out.push(staticEndpoint(cfg, i) as ShardEndpoint);
  return out;
}

/**
 * The endpoint of any ordinal in static mode, configured or not (a shard map may have
 * more shards than the configuration): from the templates, or from `targets`, which
 * gives none past its end (undefined).
 */
export function staticEndpoint(cfg: Config, ordinal: number): ShardEndpoint | undefined {
  const t = cfg.topology;
  if (t.targets.length > 0) {
    const target = t.targets[ordinal];
    return target === undefined ? undefined : endpoint(ordinal, target, t.adminTargets[ordinal]);
  }
  return endpoint(
    ordinal,
    expandTemplate(t.targetTemplate, ordinal, t.namespace),
    t.adminTemplate ? expandTemplate(t.adminTemplate, ordinal, t.namespace) : undefined,
  );
}

/** What a readiness probe of a shard's `/readyz` told about the shard map. */
export interface ProbedMap {
  ordinal: number;
  /** The `x-shardchat-map` header of the answer, if any. */
  header: string | undefined;
  /** The `map` field of its JSON body, if it held a valid shard map. */
  map: ShardMap | undefined;
}

export interface TopologyEvents {
  /** A shard's readiness changed. */
  change: [ShardState];
  /** A shard's address changed (kubernetes mode: its pod got a new IP). */
  address: [ShardState];
  /** What the topology reports about the cluster changed (kubernetes mode: the StatefulSet's replicas). */
  status: [TopologyStatus];
  /** A readiness probe's answer told about the shard map (static mode with admin endpoints). */
  map: [ProbedMap];
  /** resize() added ordinals: `states` now has `shards` entries. */
  grown: [number];
}

/** What /readyz reports about the topology, beyond the shards' readiness. */
export interface TopologyStatus {
  mode: 'static' | 'kubernetes';
  /** False until the topology has been read once (kubernetes mode: first list of the StatefulSet and its pods). */
  synced: boolean;
  /** Problems an operator should see (e.g. the StatefulSet's replicas differ from S). */
  warnings: string[];
  /** Kubernetes mode: the StatefulSet's spec.replicas (null while unknown). */
  statefulSetReplicas?: number | null;
  /** Kubernetes mode: spec.replicas is known and differs from S (routing stays on S). */
  replicasMismatch?: boolean;
}

/**
 * What the router and the shards use, in either mode. `states[i]` is shard i; its
 * host/port/target/admin may change over time in kubernetes mode ('address' events).
 */
export interface Topology {
  readonly mode: 'static' | 'kubernetes';
  /** The number of addressable ordinals (`states.length`): S at first, more after resize(). */
  readonly shards: number;
  readonly states: readonly ShardState[];
  /**
   * Makes ordinals below `n` addressable, as far as the mode can (never shrinks): a shard
   * map with more shards than configured, or a migration to more, needs them. Returns
   * the number of addressable ordinals now (less than `n` for an explicit `targets` list
   * that ends before). Emits 'grown' when ordinals were added.
   */
  resize(n: number): number;
  /** True when readiness is known (probes, or pod conditions) and unready shards get 503 at once. */
  readonly readinessKnown: boolean;
  on<K extends keyof TopologyEvents>(event: K, listener: (...args: TopologyEvents[K]) => void): unknown;
  start(): void;
  stop(): void | Promise<void>;
  isReady(ordinal: number): boolean;
  /** The admin base URL of a shard now, if known. */
  adminOf(ordinal: number): string | undefined;
  /** A connection to the shard was refused. */
  markRefused(ordinal: number, reason?: string): void;
  /** A connection to the shard succeeded. */
  markConnected(ordinal: number): void;
  /** Re-reads what can be re-read now (after a 421). */
  refresh(): void;
  /**
   * A newer shard map was adopted: a map changes only with every shard it names serving,
   * so readiness guessed before it (a shard refused while it was still starting) is stale.
   * Static mode: every unready shard is ready again and probed at once, as at start.
   * Kubernetes mode: pod conditions are the API server's, read again as after a 421.
   */
  retryUnready(): void;
  status(): TopologyStatus;
  snapshot(): { mode: 'static' | 'kubernetes'; shards: number; members: ShardState[] } & Record<
    string,
    unknown
  >;
}

/**
 * Readiness per shard: ready until a connection is refused or `/readyz` fails
 * `probeFailureThreshold` times in a row; one good probe makes it ready again.
 * Without admin endpoints, a successful connection makes a shard ready again.
 */
export class StaticTopology extends EventEmitter<TopologyEvents> implements Topology {
  readonly mode = 'static' as const;
  readonly states: ShardState[];
  readonly probing: boolean;
  private timer: NodeJS.Timeout | undefined;
  private readonly probeIntervalMs: number;
  private readonly probeTimeoutMs: number;
  private readonly failureThreshold: number;
  private probesInFlight = 0;

  constructor(private readonly cfg: Config) {
    super();
    const endpoints = staticEndpoints(cfg);
    this.states = endpoints.map((e) => StaticTopology.stateOf(e));
    this.probing = endpoints.every((e) => e.admin !== undefined);
    this.probeIntervalMs = cfg.topology.probeIntervalMs;
    this.probeTimeoutMs = cfg.topology.probeTimeoutMs;
    this.failureThreshold = cfg.topology.probeFailureThreshold;
  }

  private static stateOf(e: ShardEndpoint): ShardState {
    return { ...e, ready: true, consecutiveFailures: 0, reason: undefined, since: new Date().toISOString() };
  }

  get shards(): number {
    return this.states.length;
  }

  /** Whether ordinals past the configured ones can be addressed (templates, not a `targets` list). */
  get growable(): boolean {
    return this.cfg.topology.targets.length === 0;
  }

  resize(n: number): number {
    const added: ShardState[] = [];
    for (let i = this.states.length; i < n; i++) {
      const e = staticEndpoint(this.cfg, i);
      if (!e) break;
      const s = StaticTopology.stateOf(e);
      this.states.push(s);
      added.push(s);
    }
    if (added.length > 0) {
      this.emit('grown', this.states.length);
      // New shards are probed at once (a template without an admin part has no probes).
      if (this.timer && this.probing) for (const s of added) void this.probe(s);
    }
    return this.states.length;
  }

  start(): void {
    if (!this.probing || this.timer) return;
    void this.probeAll();
    this.timer = setInterval(() => void this.probeAll(), this.probeIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  get readinessKnown(): boolean {
    return this.probing;
  }

  isReady(ordinal: number): boolean {
    return this.states[ordinal]?.ready ?? false;
  }

  adminOf(ordinal: number): string | undefined {
    return this.states[ordinal]?.admin;
  }

  status(): TopologyStatus {
    return { mode: 'static', synced: true, warnings: [] };
  }

  /** A connection to the shard was refused: not ready at once. */
  markRefused(ordinal: number, reason = 'connection refused'): void {
    this.setReady(ordinal, false, reason);
  }

  /** A connection to the shard succeeded; counts as readiness only when no probe runs. */
  markConnected(ordinal: number): void {
    if (!this.probing) {
      const s = this.states[ordinal];
      if (s && !s.ready) this.setReady(ordinal, true, undefined);
    }
  }

  /** Re-reads what can be re-read now: in static mode, probes every shard at once. */
  refresh(): void {
    if (this.probing && this.probesInFlight === 0) void this.probeAll();
  }

  retryUnready(): void {
    for (const s of this.states) {
      if (s.ready) continue;
      this.setReady(s.ordinal, true, undefined);
      if (this.timer && this.probing) void this.probe(s);
    }
  }

  snapshot(): {
    mode: 'static';
    shards: number;
    configuredShards: number;
    probing: boolean;
    members: ShardState[];
  } {
    return {
      mode: 'static',
      shards: this.shards,
      configuredShards: shardCount(this.cfg),
      probing: this.probing,
      members: this.states.map((s) => ({ ...s })),
    };
  }

  private setReady(ordinal: number, ready: boolean, reason: string | undefined): void {
    const s = this.states[ordinal];
    if (!s) return;
    if (ready) s.consecutiveFailures = 0;
    if (s.ready === ready) {
      if (!ready) s.reason = reason;
      return;
    }
    s.ready = ready;
    s.reason = reason;
    s.since = new Date().toISOString();
    this.emit('change', { ...s });
  }

  private async probeAll(): Promise<void> {
    this.probesInFlight++;
    try {
      await Promise.all(this.states.map((s) => this.probe(s)));
    } finally {
      this.probesInFlight--;
    }
  }

  private async probe(s: ShardState): Promise<void> {
    let failure: string | undefined;
    try {
      const res = await fetch(`${s.admin}/readyz`, { signal: AbortSignal.timeout(this.probeTimeoutMs) });
      const body = await res.text().catch(() => undefined);
      if (res.status !== 200) failure = `/readyz answered ${res.status}`;
      const header = res.headers.get(MAP_HEADER) ?? undefined;
      if (header !== undefined) this.emit('map', { ordinal: s.ordinal, header, map: mapOfBody(body) });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      failure = `/readyz failed: ${e.cause?.code ?? e.name}`;
    }
    if (failure === undefined) {
      this.setReady(s.ordinal, true, undefined);
      return;
    }
    s.consecutiveFailures++;
    if (s.consecutiveFailures >= this.failureThreshold) this.setReady(s.ordinal, false, failure);
  }
}

/** The `map` field of a `/readyz` JSON body, when it is a valid shard map. */
export function mapOfBody(body: string | undefined): ShardMap | undefined {
  if (!body || body.indexOf('"map"') === -1) return undefined;
  try {
    const map = (JSON.parse(body) as { map?: unknown }).map;
    return isValidMap(map) ? map : undefined;
  } catch {
    return undefined;
  }
}
