/**
 * An in-test Kubernetes API server for the kubernetes topology mode: the list/watch
 * protocol of /apis/apps/v1/namespaces/{ns}/statefulsets and /api/v1/namespaces/{ns}/pods
 * as the real API server speaks it (no API server runs on the CI machines).
 *
 * - list: {kind: XList, apiVersion, metadata: {resourceVersion}, items}
 * - watch=true (resourceVersion, allowWatchBookmarks, timeoutSeconds): newline-delimited
 *   JSON events {type: ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, object} on a chunked
 *   response; from a resourceVersion older than the kept history (see compact()) it
 *   answers one ERROR event with a Status {code: 410, reason: 'Expired'} and ends, as
 *   the API server does
 * - fieldSelector metadata.name=X and labelSelector k=v[,k=v]
 * - dropWatches(), goDown('refuse' | '503'), comeBack(); every request is recorded
 *
 * Plus writeKubeconfig(): a kubeconfig for KUBECONFIG (cluster http://127.0.0.1:port, a token user).
 */
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import yaml from 'js-yaml';

type Kind = 'statefulsets' | 'pods';
// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects as plain JSON
export type KubeObject = Record<string, any> & {
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    resourceVersion?: string;
    uid?: string;
    creationTimestamp?: string;
    deletionTimestamp?: string;
  };
};

interface HistoryEvent {
  rv: number;
  kind: Kind;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: KubeObject;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  watch: boolean;
  authorization: string | undefined;
  at: number;
}

interface WatchConn {
  kind: Kind;
  namespace: string;
  fieldName: string | undefined;
  labels: [string, string][];
  res: http.ServerResponse;
  timers: NodeJS.Timeout[];
}

const META: Record<Kind, { apiVersion: string; kind: string; listKind: string }> = {
  statefulsets: { apiVersion: 'apps/v1', kind: 'StatefulSet', listKind: 'StatefulSetList' },
  pods: { apiVersion: 'v1', kind: 'Pod', listKind: 'PodList' },
};

const ROUTE = /^\/(?:apis\/apps\/v1|api\/v1)\/namespaces\/([^/]+)\/(statefulsets|pods)$/;

export interface PodOptions {
  ip?: string;
  ready?: boolean;
  phase?: string;
  labels?: Record<string, string>;
  deleting?: boolean;
}

export class FakeKubeApi {
  readonly requests: RecordedRequest[] = [];
  /** Watches answered with 410 Gone (ERROR event, reason Expired). */
  expiredAnswers = 0;
  /** How often a BOOKMARK is sent to watches that allow them. */
  bookmarkIntervalMs = 1000;
  private rv = 100;
  /** Watches from a resourceVersion below this get 410 Gone. */
  private oldestRv = 100;
  private readonly objects = new Map<string, { kind: Kind; object: KubeObject }>();
  private readonly history: HistoryEvent[] = [];
  private readonly watches = new Set<WatchConn>();
  private readonly sockets = new Set<Socket>();
  private server: http.Server;
  private state: 'up' | 'refuse' | '503' = 'up';
  port = 0;

  private constructor() {
    this.server = this.makeServer();
  }

  static async start(): Promise<FakeKubeApi> {
    const api = new FakeKubeApi();
    await api.listen(0);
    return api;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Watch connections open now. */
  get openWatches(): number {
    return this.watches.size;
  }

  // --- objects ---

  /** Creates or replaces an object (ADDED or MODIFIED). */
  put(kind: Kind, object: KubeObject): KubeObject {
    const ns = object.metadata.namespace ?? 'default';
    const key = `${kind}/${ns}/${object.metadata.name}`;
    const existed = this.objects.get(key);
    const stored: KubeObject = structuredClone(object);
    this.rv++;
    stored.apiVersion = META[kind].apiVersion;
    stored.kind = META[kind].kind;
    stored.metadata = {
      uid: existed?.object.metadata.uid ?? `uid-${this.rv}`,
      creationTimestamp: existed?.object.metadata.creationTimestamp ?? new Date().toISOString(),
      ...stored.metadata,
      namespace: ns,
      resourceVersion: String(this.rv),
    };
    this.objects.set(key, { kind, object: stored });
    this.publish({ rv: this.rv, kind, type: existed ? 'MODIFIED' : 'ADDED', object: stored });
    return stored;
  }

  /** Deletes an object (DELETED), if it exists. */
  delete(kind: Kind, name: string, namespace = 'default'): void {
    const key = `${kind}/${namespace}/${name}`;
    const existed = this.objects.get(key);
    if (!existed) return;
    this.objects.delete(key);
    this.rv++;
    const object = structuredClone(existed.object);
    object.metadata.resourceVersion = String(this.rv);
    this.publish({ rv: this.rv, kind, type: 'DELETED', object });
  }

  get(kind: Kind, name: string, namespace = 'default'): KubeObject | undefined {
    const o = this.objects.get(`${kind}/${namespace}/${name}`);
    return o ? structuredClone(o.object) : undefined;
  }

  putStatefulSet(
    name: string,
    replicas: number,
    opts: { namespace?: string; matchLabels?: Record<string, string> } = {},
  ): KubeObject {
    const matchLabels = opts.matchLabels ?? { 'app.kubernetes.io/name': name };
    return this.put('statefulsets', {
      metadata: { name, namespace: opts.namespace ?? 'default', labels: { ...matchLabels } },
      spec: {
        replicas,
        serviceName: name,
        selector: { matchLabels },
        template: { metadata: { labels: { ...matchLabels } }, spec: { containers: [] } },
      },
      status: { replicas, readyReplicas: replicas },
    });
  }

  /** Sets spec.replicas as `kubectl scale` does. */
  scale(name: string, replicas: number, namespace = 'default'): void {
    const sts = this.get('statefulsets', name, namespace);
    if (!sts) throw new Error(`no statefulset ${name}`);
    sts.spec.replicas = replicas;
    this.put('statefulsets', sts);
  }

  /** A pod `name` (e.g. shardchat-shard-1) with IP, phase and Ready condition. */
  putPod(name: string, opts: PodOptions = {}, namespace = 'default'): KubeObject {
    const ready = opts.ready ?? true;
    const phase = opts.phase ?? 'Running';
    const existing = this.get('pods', name, namespace);
    const pod: KubeObject = {
      metadata: {
        ...(existing?.metadata ?? {}),
        name,
        namespace,
        // Default: the labels putStatefulSet's default selector matches (name without -<ordinal>).
        labels: opts.labels ??
          existing?.metadata.labels ?? { 'app.kubernetes.io/name': name.replace(/-\d+$/, '') },
        ...(opts.deleting ? { deletionTimestamp: new Date().toISOString() } : {}),
      },
      spec: { hostname: name, containers: [{ name: 'shard', image: 'shardchat' }] },
      status: {
        phase,
        ...(opts.ip ? { podIP: opts.ip, podIPs: [{ ip: opts.ip }] } : {}),
        conditions: [
          { type: 'Initialized', status: 'True' },
          { type: 'Ready', status: ready ? 'True' : 'False' },
          { type: 'ContainersReady', status: ready ? 'True' : 'False' },
          { type: 'PodScheduled', status: 'True' },
        ],
      },
    };
    if (!opts.deleting) delete pod.metadata.deletionTimestamp;
    return this.put('pods', pod);
  }

  // --- faults ---

  /** Forgets the event history: watches from any resourceVersion before now get 410 Gone. */
  compact(): void {
    this.oldestRv = this.rv;
    this.history.length = 0;
  }

  /** Ends every open watch (clean end of the chunked response), as an API server restart does. */
  dropWatches(): void {
    for (const w of [...this.watches]) this.endWatch(w);
  }

  /** 'refuse': stop listening (connections refused); '503': answer 503 to everything. Open watches end. */
  async goDown(how: 'refuse' | '503' = 'refuse'): Promise<void> {
    this.state = how;
    if (how === 'refuse') {
      for (const w of [...this.watches]) this.endWatch(w);
      await new Promise<void>((resolve) => {
        this.server.close(() => resolve());
        for (const s of this.sockets) s.destroy();
      });
    } else {
      for (const w of [...this.watches]) {
        this.watches.delete(w);
        for (const t of w.timers) clearTimeout(t);
        w.res.socket?.destroy();
      }
    }
  }

  async comeBack(): Promise<void> {
    if (this.state === 'refuse') {
      this.server = this.makeServer();
      await this.listen(this.port);
    }
    this.state = 'up';
  }

  async close(): Promise<void> {
    for (const w of [...this.watches]) this.endWatch(w);
    if (this.state === 'refuse') return;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }

  /** Requests recorded so far (optionally only watches or lists of a kind). */
  requestsOf(kind: Kind, watch?: boolean): RecordedRequest[] {
    return this.requests.filter(
      (r) => r.path.endsWith(`/${kind}`) && (watch === undefined || r.watch === watch),
    );
  }

  /** Writes a kubeconfig pointing at this server, with a token user, and returns its path. */
  async writeKubeconfig(dir: string, namespace = 'default', fileName = 'kubeconfig'): Promise<string> {
    const file = path.join(dir, fileName);
    const config = {
      apiVersion: 'v1',
      kind: 'Config',
      // The client refuses plain http unless TLS verification is off (there is no TLS here at all).
      clusters: [{ name: 'fake', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'fake', user: { token: 'fake-token' } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake', namespace } }],
      'current-context': 'fake',
    };
    await writeFile(file, yaml.dump(config), 'utf8');
    return file;
  }

  // --- the server ---

  private makeServer(): http.Server {
    const server = http.createServer((req, res) => this.handle(req, res));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    return server;
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        this.port = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(url.searchParams.entries());
    const watch = query.watch === 'true' || query.watch === '1';
    this.requests.push({
      method: req.method ?? '',
      path: url.pathname,
      query,
      watch,
      authorization: req.headers.authorization,
      at: Date.now(),
    });
    if (this.state === '503') {
      this.status(res, 503, 'ServiceUnavailable', 'the fake API server is down');
      return;
    }
    const m = ROUTE.exec(url.pathname);
    if (!m || req.method !== 'GET') {
      this.status(res, 404, 'NotFound', `the fake API server does not serve ${req.method} ${url.pathname}`);
      return;
    }
    const namespace = decodeURIComponent(m[1] as string);
    const kind = m[2] as Kind;
    let fieldName: string | undefined;
    const fieldSelector = query.fieldSelector ?? '';
    if (fieldSelector) {
      const f = /^metadata\.name=(.+)$/.exec(fieldSelector);
      if (!f) {
        this.status(res, 400, 'BadRequest', `unsupported fieldSelector ${fieldSelector}`);
        return;
      }
      fieldName = f[1];
    }
    const labels: [string, string][] = [];
    for (const part of (query.labelSelector ?? '').split(',').filter(Boolean)) {
      const eq = /^([^=!]+)==?(.*)$/.exec(part);
      if (!eq) {
        this.status(res, 400, 'BadRequest', `unsupported labelSelector ${part}`);
        return;
      }
      labels.push([eq[1] as string, eq[2] as string]);
    }
    const filter = { kind, namespace, fieldName, labels };
    if (!watch) {
      const items = [...this.objects.values()]
        .filter((o) => this.matches(filter, o.kind, o.object))
        .map((o) => o.object);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          kind: META[kind].listKind,
          apiVersion: META[kind].apiVersion,
          metadata: { resourceVersion: String(this.rv) },
          items,
        }),
      );
      return;
    }
    this.startWatch(req, res, filter, query);
  }

  private startWatch(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    filter: Omit<WatchConn, 'res' | 'timers'>,
    query: Record<string, string>,
  ): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: WatchConn = { ...filter, res, timers: [] };
    const fromRaw = query.resourceVersion ?? '';
    if (fromRaw === '' || fromRaw === '0') {
      // "any version": the current state as ADDED events, then changes.
      for (const o of this.objects.values()) {
        if (this.matches(filter, o.kind, o.object)) this.send(w, 'ADDED', o.object);
      }
    } else {
      const from = Number(fromRaw);
      if (!Number.isFinite(from) || from < this.oldestRv) {
        this.expiredAnswers++;
        this.send(w, 'ERROR', {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: `too old resource version: ${fromRaw} (${this.oldestRv})`,
          reason: 'Expired',
          code: 410,
        });
        res.end();
        return;
      }
      for (const e of this.history) {
        if (e.rv > from && this.matches(filter, e.kind, e.object)) this.send(w, e.type, e.object);
      }
    }
    this.watches.add(w);
    const timeoutSeconds = Number(query.timeoutSeconds ?? 0);
    if (timeoutSeconds > 0) w.timers.push(setTimeout(() => this.endWatch(w), timeoutSeconds * 1000));
    if (query.allowWatchBookmarks === 'true') {
      const t = setInterval(() => {
        this.send(w, 'BOOKMARK', {
          kind: META[w.kind].kind,
          apiVersion: META[w.kind].apiVersion,
          metadata: { resourceVersion: String(this.rv) },
        });
      }, this.bookmarkIntervalMs);
      w.timers.push(t);
    }
    const gone = () => {
      this.watches.delete(w);
      for (const t of w.timers) clearTimeout(t);
    };
    req.on('close', gone);
    res.on('close', gone);
  }

  private endWatch(w: WatchConn): void {
    this.watches.delete(w);
    for (const t of w.timers) clearTimeout(t);
    w.res.end();
  }

  private publish(e: HistoryEvent): void {
    this.history.push(e);
    for (const w of this.watches) {
      if (this.matches(w, e.kind, e.object)) this.send(w, e.type, e.object);
    }
  }

  private send(w: WatchConn, type: string, object: unknown): void {
    if (!w.res.writableEnded) w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  private matches(
    f: { kind: Kind; namespace: string; fieldName: string | undefined; labels: [string, string][] },
    kind: Kind,
    object: KubeObject,
  ): boolean {
    if (kind !== f.kind || (object.metadata.namespace ?? 'default') !== f.namespace) return false;
    if (f.fieldName !== undefined && object.metadata.name !== f.fieldName) return false;
    const have = object.metadata.labels ?? {};
    return f.labels.every(([k, v]) => have[k] === v);
  }

  private status(res: http.ServerResponse, code: number, reason: string, message: string): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message,
        reason,
        code,
      }),
    );
  }
}
