/**
 * The kubernetes topology mode (docs/architecture.md section 2): S comes from configuration
 * (`topology.shards`); the address and readiness of each ordinal come from the pods of
 * the shards' StatefulSet, watched with @kubernetes/client-node informers (list, then
 * watch from the list's resourceVersion):
 *
 * - one informer on the StatefulSet (fieldSelector metadata.name=<statefulSet>), for
 *   its spec.replicas (reported, never used for S) and its pod selector;
 * - one on its pods (labelSelector from spec.selector.matchLabels), started once the
 *   StatefulSet is seen; a pod <statefulSet>-<n> is ordinal n.
 *
 * Ordinal n < S: target http://<podIP>:<port>, admin http://<podIP>:<adminPort>, ready
 * when the pod is Running, its Ready condition is True and it is not being deleted.
 * No pod: not ready (the last known address stays). Pods with n >= S are ignored (and
 * logged) until resize() makes their ordinals addressable (a shard map with more shards
 * than configured); S then means the grown count. spec.replicas != S (someone ran `kubectl scale`) never reshards: it is a
 * warning in status() (the /readyz body), a log line and a metric; after a resharding the
 * replicas are compared with the shard map's count (the last resize()), not the configuration's.
 *
 * A watch that ends is restarted from the last resourceVersion; a 410 Gone (as an
 * ERROR event or an answer) makes the informer list again; API errors restart it after
 * an exponential, capped backoff. Meanwhile the last known topology stays as it is.
 */

import { EventEmitter } from 'node:events';
import {
  AppsV1Api,
  CoreV1Api,
  KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  type V1Pod,
  type V1StatefulSet,
  Watch,
} from '@kubernetes/client-node';
import { backoffDelay } from './backoff.js';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import type { ShardState, Topology, TopologyEvents, TopologyStatus } from './topology.js';

export interface KubernetesTopologyOptions {
  /** Default: KubeConfig.loadFromDefault() (in a pod: the service account; else $KUBECONFIG). */
  kubeConfig?: KubeConfig;
  /** First delay before restarting an informer after an API error (default 500 ms). */
  backoffMs?: number;
  /** Cap of the exponential backoff (default 30 s). */
  maxBackoffMs?: number;
  /** timeoutSeconds asked of each watch (default 300); the client gives up 30 s after it. */
  watchTimeoutSeconds?: number;
  /** Least time between two forced relists by refresh() (default 5 s). */
  refreshIntervalMs?: number;
}

export interface KubernetesShardState extends ShardState {
  /** The pod seen for this ordinal, if any. */
  pod: string | undefined;
  podIP: string | undefined;
  phase: string | undefined;
}

type Runner<T extends KubernetesObject> = InformerRunner<T>;

const LIST_TIMEOUT_MS = 30_000;

interface RunnerHooks {
  changed(): void;
  error(what: string, err: unknown): void;
  healthy(what: string): void;
}

function describeError(err: unknown): string {
  if (err === undefined || err === null) return 'unknown error';
  const e = err as { statusCode?: number; code?: number | string; message?: string; name?: string };
  const status = e.statusCode ?? (typeof e.code === 'number' ? e.code : undefined);
  const msg = (e.message ?? String(err)).split('\n')[0]?.slice(0, 300) ?? '';
  return status !== undefined ? `HTTP ${status}: ${msg}` : msg || e.name || 'error';
}

/**
 * A Watch that asks for bookmarks and a server-side timeout, gives up on its own when
 * the server stays silent past that timeout (a half-open connection), and tells when a
 * watch was accepted (HTTP 200).
 */
class BoundedWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly timeoutSeconds: number,
    private readonly onAccepted: () => void,
  ) {
    super(kc);
  }

  override async watch(
    path: string,
    queryParams: Record<string, unknown>,
    // biome-ignore lint/suspicious/noExplicitAny: the signature of Watch.watch
    callback: (phase: string, apiObj: any, watchObj?: any) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    let ended = false;
    let failed = false;
    let timer: NodeJS.Timeout | undefined;
    const wrappedDone = (err: unknown) => {
      ended = true;
      if (err) failed = true;
      if (timer) clearTimeout(timer);
      done(err);
    };
    const controller = await super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: this.timeoutSeconds },
      callback,
      wrappedDone,
    );
    if (!failed) this.onAccepted();
    if (!ended) {
      timer = setTimeout(() => controller.abort(), (this.timeoutSeconds + 30) * 1000);
      timer.unref();
    }
    return controller;
  }
}

/** One informer (a ListWatch) kept running: restarted with backoff after errors. */
class InformerRunner<T extends KubernetesObject> {
  readonly informer: ListWatch<T>;
  /** True once a list succeeded. */
  synced = false;
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;

  constructor(
    readonly what: string,
    kc: KubeConfig,
    path: string,
    list: () => Promise<KubernetesListObject<T>>,
    selectors: { labelSelector?: string; fieldSelector?: string },
    private readonly hooks: RunnerHooks,
    private readonly backoff: { baseMs: number; maxMs: number },
    watchTimeoutSeconds: number,
  ) {
    const watch = new BoundedWatch(kc, watchTimeoutSeconds, () => this.healthy());
    const listFn = async () => {
      // A list that hangs (the API server accepted but never answers) counts as an error.
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`list timed out after ${LIST_TIMEOUT_MS} ms`)),
          LIST_TIMEOUT_MS,
        );
      });
      const result = await Promise.race([list(), timeout]).finally(() => clearTimeout(timer));
      this.synced = true;
      this.healthy();
      // The informer applies the list after this resolves: look at it afterwards.
      setImmediate(() => {
        if (!this.stopped) this.hooks.changed();
      });
      return result;
    };
    this.informer = new ListWatch<T>(
      path,
      watch,
      listFn,
      false,
      selectors.labelSelector,
      selectors.fieldSelector,
    );
    const changed = () => this.hooks.changed();
    this.informer.on('add', changed);
    this.informer.on('update', changed);
    this.informer.on('delete', changed);
    this.informer.on('error', (err?: unknown) => this.failed(err));
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    void this.informer.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.informer.stop();
  }

  list(): readonly T[] {
    return this.informer.list();
  }

  private healthy(): void {
    if (this.stopped) return;
    this.attempt = 0;
    this.hooks.healthy(this.what);
  }

  /** The list or the watch failed: the informer stopped; start it again after a backoff. */
  private failed(err: unknown): void {
    if (this.stopped || this.timer) return;
    this.hooks.error(this.what, err);
    const delay = backoffDelay(this.attempt, {
      minMs: this.backoff.baseMs,
      maxMs: this.backoff.maxMs,
      jitter: [0.8, 1.2],
    });
    this.attempt++;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.stopped) void this.informer.start();
    }, delay);
    this.timer.unref();
  }
}

function podReady(pod: V1Pod): { ready: boolean; reason: string | undefined } {
  if (pod.metadata?.deletionTimestamp) return { ready: false, reason: 'pod is being deleted' };
  const phase = pod.status?.phase;
  if (phase !== 'Running') return { ready: false, reason: `pod phase ${phase ?? 'unknown'}` };
  const cond = pod.status?.conditions?.find((c) => c.type === 'Ready');
  if (cond?.status !== 'True') return { ready: false, reason: 'pod is not Ready' };
  if (!pod.status?.podIP) return { ready: false, reason: 'pod has no IP' };
  return { ready: true, reason: undefined };
}

function baseUrl(ip: string, port: number): string {
  return ip.includes(':') ? `http://[${ip}]:${port}` : `http://${ip}:${port}`;
}

export class KubernetesTopology extends EventEmitter<TopologyEvents> implements Topology {
  readonly mode = 'kubernetes' as const;
  /** The addressable ordinals: topology.shards, or more after resize(). */
  shards: number;
  /**
   * The shards the cluster runs by, which spec.replicas is compared with: topology.shards,
   * then what the shard map needs (the last resize()). Unlike `shards` it comes down again
   * after a shrink: a StatefulSet scaled back to the shrunk map is no mismatch.
   */
  private expected: number;
  readonly states: KubernetesShardState[];
  readonly readinessKnown = true;
  readonly namespace: string;
  readonly statefulSet: string;
  private readonly port: number;
  private readonly adminPort: number;
  private readonly kc: KubeConfig;
  private readonly opts: Required<Omit<KubernetesTopologyOptions, 'kubeConfig'>>;
  private stsRunner: Runner<V1StatefulSet>;
  private podRunner: Runner<V1Pod> | undefined;
  private podSelector: string | undefined;
  private replicas: number | null = null;
  private statefulSetSeen = false;
  private statefulSetPresent = false;
  private ignored: string[] = [];
  private api: { connected: boolean; lastError: string | undefined; lastErrorAt: string | undefined } = {
    connected: false,
    lastError: undefined,
    lastErrorAt: undefined,
  };
  private started = false;
  private recomputeQueued = false;
  private lastRefresh = 0;
  private lastStatusKey = '';
  /** The first list of the StatefulSet and its pods has been applied (see whenSynced()). */
  private applied = false;
  /** Waiting for whenSynced(). */
  private syncWaiters: (() => void)[] = [];

  constructor(
    cfg: Config,
    private readonly log: Logger,
    options: KubernetesTopologyOptions = {},
  ) {
    super();
    const t = cfg.topology;
    this.shards = t.shards;
    this.expected = t.shards;
    this.namespace = t.namespace;
    this.statefulSet = t.kubernetes.statefulSet;
    this.port = t.kubernetes.port;
    this.adminPort = t.kubernetes.adminPort;
    this.opts = {
      backoffMs: options.backoffMs ?? 500,
      maxBackoffMs: options.maxBackoffMs ?? 30_000,
      watchTimeoutSeconds: options.watchTimeoutSeconds ?? 300,
      refreshIntervalMs: options.refreshIntervalMs ?? 5000,
    };
    if (options.kubeConfig) {
      this.kc = options.kubeConfig;
    } else {
      this.kc = new KubeConfig();
      this.kc.loadFromDefault();
    }
    this.states = Array.from({ length: this.shards }, (_, ordinal) => this.emptyState(ordinal));
    this.stsRunner = this.makeStatefulSetRunner();
  }

  private emptyState(ordinal: number): KubernetesShardState {
    return {
      ordinal,
      target: '',
      host: '',
      port: this.port,
      admin: undefined,
      ready: false,
      consecutiveFailures: 0,
      reason: 'no pod seen yet',
      since: new Date().toISOString(),
      pod: undefined,
      podIP: undefined,
      phase: undefined,
    };
  }

  /**
   * Tracks ordinals below `n` (never fewer): a shard map with more shards than
   * configured. Pods of the new ordinals already listed are applied at once.
   */
  resize(n: number): number {
    // spec.replicas is compared with the map's count, which comes down after a shrink
    // (`shards`, the addressable ordinals, never does).
    if (n !== this.expected) {
      this.expected = n;
      this.emitStatusIfChanged();
    }
    if (n <= this.states.length) return this.states.length;
    for (let i = this.states.length; i < n; i++) this.states.push(this.emptyState(i));
    this.shards = this.states.length;
    this.log.info({ shards: this.shards }, 'tracking more shard pods: the shard map grew');
    this.emit('grown', this.shards);
    this.applyPods();
    this.emitStatusIfChanged();
    return this.shards;
  }

  private hooks(): RunnerHooks {
    return {
      changed: () => this.scheduleRecompute(),
      error: (what, err) => {
        const msg = describeError(err);
        const first = this.api.connected || this.api.lastError !== msg;
        this.api = { connected: false, lastError: `${what}: ${msg}`, lastErrorAt: new Date().toISOString() };
        if (first) {
          this.log.warn(
            { what, err: msg, namespace: this.namespace },
            'Kubernetes API error: keeping the last known topology and retrying with backoff',
          );
        }
        this.emitStatusIfChanged();
      },
      healthy: () => {
        if (!this.api.connected) {
          if (this.api.lastError)
            this.log.info({ namespace: this.namespace }, 'Kubernetes API reachable again');
          this.api = { ...this.api, connected: true };
          this.emitStatusIfChanged();
        }
      },
    };
  }

  private makeStatefulSetRunner(): Runner<V1StatefulSet> {
    const apps = this.kc.makeApiClient(AppsV1Api);
    const fieldSelector = `metadata.name=${this.statefulSet}`;
    return new InformerRunner<V1StatefulSet>(
      `statefulset ${this.statefulSet}`,
      this.kc,
      `/apis/apps/v1/namespaces/${encodeURIComponent(this.namespace)}/statefulsets`,
      () => apps.listNamespacedStatefulSet({ namespace: this.namespace, fieldSelector }),
      { fieldSelector },
      this.hooks(),
      { baseMs: this.opts.backoffMs, maxMs: this.opts.maxBackoffMs },
      this.opts.watchTimeoutSeconds,
    );
  }

  private makePodRunner(labelSelector: string | undefined): Runner<V1Pod> {
    const core = this.kc.makeApiClient(CoreV1Api);
    return new InformerRunner<V1Pod>(
      `pods of ${this.statefulSet}`,
      this.kc,
      `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/pods`,
      () => core.listNamespacedPod({ namespace: this.namespace, labelSelector }),
      { labelSelector },
      this.hooks(),
      { baseMs: this.opts.backoffMs, maxMs: this.opts.maxBackoffMs },
      this.opts.watchTimeoutSeconds,
    );
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.stsRunner.start();
    this.podRunner?.start();
  }

  async stop(): Promise<void> {
    this.started = false;
    await Promise.all([this.stsRunner.stop(), this.podRunner?.stop()]);
  }

  isReady(ordinal: number): boolean {
    return this.states[ordinal]?.ready ?? false;
  }

  adminOf(ordinal: number): string | undefined {
    return this.states[ordinal]?.admin;
  }

  /** Readiness comes from the pods' conditions only (the kubelet probes /readyz). */
  markRefused(_ordinal: number, _reason?: string): void {}

  markConnected(_ordinal: number): void {}

  /**
   * After a 421: list again (at most once per refreshIntervalMs). A fresh pair of
   * informers replaces the running ones once their first list is in.
   */
  refresh(): void {
    const now = Date.now();
    if (!this.started || now - this.lastRefresh < this.opts.refreshIntervalMs) return;
    this.lastRefresh = now;
    void this.relist();
  }

  retryUnready(): void {
    this.refresh();
  }

  /**
   * Resolves true once the StatefulSet and its pods have been listed and applied (the
   * other shards' addresses are known), false after `timeoutMs` without.
   */
  whenSynced(timeoutMs: number): Promise<boolean> {
    if (this.applied) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.syncWaiters = this.syncWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      timer.unref();
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.syncWaiters.push(done);
    });
  }

  private async relist(): Promise<void> {
    const oldSts = this.stsRunner;
    const oldPods = this.podRunner;
    const sts = this.makeStatefulSetRunner();
    const pods = this.podSelector !== undefined || oldPods ? this.makePodRunner(this.podSelector) : undefined;
    // Start them, wait for their first list (bounded), then swap; on failure keep the old ones.
    sts.start();
    pods?.start();
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && this.started && !(sts.synced && (pods?.synced ?? true))) {
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!this.started || !(sts.synced && (pods?.synced ?? true))) {
      await Promise.all([sts.stop(), pods?.stop()]);
      return;
    }
    this.stsRunner = sts;
    if (this.podRunner === oldPods) {
      this.podRunner = pods;
      await Promise.all([oldSts.stop(), oldPods?.stop()]);
    } else {
      // The StatefulSet showed up meanwhile and its pod informer started: keep that one.
      await Promise.all([oldSts.stop(), pods?.stop()]);
    }
    this.scheduleRecompute();
  }

  status(): TopologyStatus {
    const warnings: string[] = [];
    const mismatch = this.replicas !== null && this.replicas !== this.expected;
    if (mismatch) {
      warnings.push(
        `StatefulSet ${this.namespace}/${this.statefulSet} has spec.replicas ${this.replicas} but topology.shards (S) is ${this.expected}: routing stays on ${this.expected} shards; changing S is a deliberate resharding, or scale the StatefulSet back to ${this.expected}`,
      );
    }
    if (this.stsRunner.synced && !this.statefulSetPresent) {
      warnings.push(
        this.statefulSetSeen
          ? `StatefulSet ${this.namespace}/${this.statefulSet} was deleted: its pods decide readiness until they are gone`
          : `StatefulSet ${this.namespace}/${this.statefulSet} not found: no shard is ready`,
      );
    }
    if (!this.api.connected && this.api.lastError) {
      warnings.push(`Kubernetes API unreachable (${this.api.lastError}): keeping the last known topology`);
    }
    if (this.ignored.length > 0) {
      warnings.push(`pods beyond S=${this.shards} are ignored: ${this.ignored.join(', ')}`);
    }
    return {
      mode: 'kubernetes',
      synced: this.synced,
      warnings,
      statefulSetReplicas: this.replicas,
      replicasMismatch: mismatch,
    };
  }

  /** Listed once: the StatefulSet, and its pods when it exists. */
  get synced(): boolean {
    if (!this.stsRunner.synced) return false;
    if (!this.statefulSetSeen) return true;
    return this.podRunner?.synced ?? false;
  }

  snapshot(): {
    mode: 'kubernetes';
    shards: number;
    members: KubernetesShardState[];
  } & Record<string, unknown> {
    const st = this.status();
    return {
      mode: 'kubernetes',
      shards: this.shards,
      namespace: this.namespace,
      statefulSet: this.statefulSet,
      podSelector: this.podSelector ?? null,
      statefulSetReplicas: this.replicas,
      replicasMismatch: st.replicasMismatch,
      synced: st.synced,
      api: { ...this.api },
      ignoredPods: [...this.ignored],
      warnings: st.warnings,
      members: this.states.map((s) => ({ ...s })),
    };
  }

  private scheduleRecompute(): void {
    if (this.recomputeQueued) return;
    this.recomputeQueued = true;
    queueMicrotask(() => {
      this.recomputeQueued = false;
      this.recompute();
    });
  }

  private recompute(): void {
    const sts = this.stsRunner
      .list()
      .find(
        (s) =>
          s.metadata?.name === this.statefulSet &&
          (s.metadata?.namespace ?? this.namespace) === this.namespace,
      );
    this.statefulSetSeen = this.statefulSetSeen || sts !== undefined;
    this.statefulSetPresent = sts !== undefined;
    if (sts) {
      // spec.replicas defaults to 1 when absent.
      const replicas = sts.spec?.replicas ?? 1;
      if (replicas !== this.replicas) {
        const before = this.replicas;
        this.replicas = replicas;
        if (replicas !== this.expected) {
          this.log.warn(
            { statefulSet: this.statefulSet, replicas, shards: this.expected, before },
            'StatefulSet spec.replicas differs from topology.shards (S): routing stays on S; changing S is a deliberate resharding',
          );
        } else if (before !== null) {
          this.log.info(
            { statefulSet: this.statefulSet, replicas, shards: this.expected },
            'StatefulSet replicas equal S again',
          );
        }
      }
      if (!this.podRunner) {
        const labels = sts.spec?.selector?.matchLabels ?? {};
        const sel = Object.entries(labels)
          .map(([k, v]) => `${k}=${v}`)
          .sort()
          .join(',');
        this.podSelector = sel || undefined;
        this.podRunner = this.makePodRunner(this.podSelector);
        this.log.info(
          { statefulSet: this.statefulSet, namespace: this.namespace, labelSelector: this.podSelector ?? '' },
          'watching the pods of the StatefulSet',
        );
        if (this.started) this.podRunner.start();
      }
    }
    this.applyPods();
    this.emitStatusIfChanged();
    if (this.synced && !this.applied) {
      this.applied = true;
      for (const w of this.syncWaiters.splice(0)) w();
    }
  }

  private applyPods(): void {
    const prefix = `${this.statefulSet}-`;
    const byOrdinal = new Map<number, V1Pod>();
    const ignored: string[] = [];
    for (const pod of this.podRunner?.list() ?? []) {
      const name = pod.metadata?.name ?? '';
      if ((pod.metadata?.namespace ?? this.namespace) !== this.namespace) continue;
      if (!name.startsWith(prefix)) continue;
      const rest = name.slice(prefix.length);
      if (!/^(0|[1-9]\d*)$/.test(rest)) continue;
      const ordinal = Number(rest);
      if (ordinal >= this.shards) ignored.push(name);
      else byOrdinal.set(ordinal, pod);
    }
    ignored.sort();
    if (ignored.join(',') !== this.ignored.join(',')) {
      const added = ignored.filter((n) => !this.ignored.includes(n));
      if (added.length > 0) {
        this.log.warn(
          { pods: added, shards: this.shards },
          'pods with an ordinal >= S are ignored: routing stays on S',
        );
      }
      this.ignored = ignored;
    }
    const now = new Date().toISOString();
    for (const s of this.states) {
      const pod = byOrdinal.get(s.ordinal);
      const ip = pod?.status?.podIP;
      s.pod = pod?.metadata?.name;
      s.podIP = ip;
      s.phase = pod?.status?.phase;
      if (ip) {
        const target = baseUrl(ip, this.port);
        if (target !== s.target) {
          s.target = target;
          s.host = ip;
          s.port = this.port;
          s.admin = baseUrl(ip, this.adminPort);
          this.emit('address', { ...s });
        }
      }
      const r = pod ? podReady(pod) : { ready: false, reason: 'no pod' };
      if (r.ready !== s.ready) {
        s.ready = r.ready;
        s.reason = r.reason;
        s.since = now;
        this.emit('change', { ...s });
      } else {
        s.reason = r.reason;
      }
    }
  }

  private emitStatusIfChanged(): void {
    const st = this.status();
    const key = JSON.stringify(st);
    if (key === this.lastStatusKey) return;
    this.lastStatusKey = key;
    this.emit('status', st);
  }
}
