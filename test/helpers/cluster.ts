/**
 * A real shardchat cluster on loopback for tests: S shard processes (each with its own
 * SQLite file under a temp dir) and a router in front, all on free ports, with a
 * generated auth secret and internal token. Dev tokens are on so tests can get tokens.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import {
  CLI,
  childEnv,
  defaultRegistry,
  freePortRange,
  freePorts,
  type ManagedProcess,
  type ProcessRegistry,
  startProcess,
  startTogether,
  writeYamlConfig,
} from './processes.js';
import { ATTEMPTS, portClash } from './shardchat.js';

export interface ShardProc {
  ordinal: number;
  port: number;
  adminPort: number;
  url: string;
  adminUrl: string;
  proc: ManagedProcess;
}

export interface Cluster {
  dir: string;
  dataDir: string;
  configPath: string;
  config: Record<string, unknown>;
  env: NodeJS.ProcessEnv;
  shards: ShardProc[];
  router: {
    port: number;
    adminPort: number;
    url: string;
    adminUrl: string;
    wsUrl: string;
    proc: ManagedProcess;
  };
  /** Restarts shard i (after a kill) on the same ports and data. */
  restartShard(i: number): Promise<ShardProc>;
  /** Starts shard i (maxShards clusters: an ordinal beyond S, for growing). */
  startShard(i: number): Promise<ShardProc>;
  /** Stops the router and starts it again on the same ports. */
  restartRouter(): Promise<void>;
  /** A token for userId (dev tokens, through the router). */
  token(userId: string): Promise<string>;
}

export interface ClusterOptions {
  shards?: number;
  /** Extra configuration merged per section (shardSpec, shard, router, auth, ...). */
  config?: Record<string, Record<string, unknown>>;
  registry?: ProcessRegistry;
  /** Extra environment for every process. */
  env?: NodeJS.ProcessEnv;
  /**
   * Addresses by templates for up to this many shards (contiguous ports), so that the
   * cluster can grow past S by resharding; S shards are started.
   */
  maxShards?: number;
}

async function startShardProc(
  configPath: string,
  env: NodeJS.ProcessEnv,
  ordinal: number,
  port: number,
  adminPort: number,
  registry: ProcessRegistry,
): Promise<ShardProc> {
  const proc = await startProcess({
    name: `shard-${ordinal}:${port}`,
    args: [CLI, 'shard', '--config', configPath],
    env: childEnv({
      ...env,
      SHARDCHAT__shard__ordinal: String(ordinal),
      SHARDCHAT__shard__port: String(port),
      SHARDCHAT__shard__adminPort: String(adminPort),
    }),
    waitForPorts: [port, adminPort],
    registry,
  });
  return {
    ordinal,
    port,
    adminPort,
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    proc,
  };
}

/**
 * Starts S shards and a router on free loopback ports. A port picked as free can be taken
 * by another suite's process before ours binds it: then what was started is stopped and
 * the cluster starts again on other ports (a few attempts).
 */
export async function startCluster(dir: string, opts: ClusterOptions = {}): Promise<Cluster> {
  for (let attempt = 1; ; attempt++) {
    const started: ManagedProcess[] = [];
    try {
      return await startClusterOnce(dir, opts, started);
    } catch (err) {
      await Promise.all(started.map((p) => p.kill().catch(() => undefined)));
      if (attempt >= ATTEMPTS || !portClash(err)) throw err;
    }
  }
}

async function startClusterOnce(
  dir: string,
  opts: ClusterOptions,
  started: ManagedProcess[],
): Promise<Cluster> {
  const S = opts.shards ?? 3;
  const registry = opts.registry ?? defaultRegistry;
  const max = opts.maxShards;
  let shardPorts: number[];
  let shardAdmin: number[];
  let routerPort: number;
  let routerAdmin: number;
  let addresses: Record<string, unknown>;
  if (max === undefined) {
    const ports = await freePorts(2 * S + 2);
    shardPorts = ports.slice(0, S);
    shardAdmin = ports.slice(S, 2 * S);
    [routerPort, routerAdmin] = ports.slice(2 * S) as [number, number];
    addresses = {
      targets: shardPorts.map((p) => `http://127.0.0.1:${p}`),
      adminTargets: shardAdmin.map((p) => `http://127.0.0.1:${p}`),
    };
  } else {
    const base = await freePortRange(max);
    const adminBase = await freePortRange(max);
    shardPorts = Array.from({ length: max }, (_, i) => base + i);
    shardAdmin = Array.from({ length: max }, (_, i) => adminBase + i);
    [routerPort, routerAdmin] = (await freePorts(2)) as [number, number];
    addresses = {
      shards: S,
      targetTemplate: `http://127.0.0.1:{ordinal+${base}}`,
      adminTemplate: `http://127.0.0.1:{ordinal+${adminBase}}`,
    };
  }
  const dataDir = path.join(dir, 'data');
  const extra = opts.config ?? {};
  const config: Record<string, unknown> = {
    ...extra,
    shardSpec: { ...(extra.shardSpec ?? {}) },
    topology: {
      ...addresses,
      probeIntervalMs: 500,
      ...(extra.topology ?? {}),
    },
    router: { host: '127.0.0.1', port: routerPort, adminPort: routerAdmin, ...(extra.router ?? {}) },
    shard: {
      host: '127.0.0.1',
      dataDir,
      ...(extra.shard ?? {}),
      // The suites post as fast as the machine lets them, some as one user: the per-user
      // message limit (default 50/s, bursts of 200) would fail them on a fast machine and
      // pass them on a slow one. It is off here unless a suite sets it (security.test.ts
      // tests it); every other limit keeps its default.
      limits: {
        userMessagesPerSecond: 1_000_000,
        userMessageBurst: 1_000_000,
        ...((extra.shard as { limits?: Record<string, unknown> } | undefined)?.limits ?? {}),
      },
    },
    auth: { devTokens: true, ...(extra.auth ?? {}) },
    log: { level: 'warn', ...(extra.log ?? {}) },
  };
  const configPath = await writeYamlConfig(dir, config, 'cluster.yaml');
  const env: NodeJS.ProcessEnv = {
    SHARDCHAT_AUTH_SECRET: randomBytes(32).toString('base64'),
    SHARDCHAT_INTERNAL_TOKEN: randomBytes(16).toString('hex'),
    ...(opts.env ?? {}),
  };
  // A shard that failed (a port taken meanwhile: startCluster tries again on the same data
  // directory) must not leave the others of this attempt running unknown to the retry.
  const shards = await startTogether(
    shardPorts
      .slice(0, S)
      .map((p, i) => startShardProc(configPath, env, i, p, shardAdmin[i] as number, registry)),
    (shard) => started.push(shard.proc),
  );
  const startRouterProc = () =>
    startProcess({
      name: `router:${routerPort}`,
      args: [CLI, 'router', '--config', configPath],
      env: childEnv(env),
      waitForPorts: [routerPort, routerAdmin],
      registry,
    });
  const routerProc = await startRouterProc();
  started.push(routerProc);
  const router = {
    port: routerPort,
    adminPort: routerAdmin,
    url: `http://127.0.0.1:${routerPort}`,
    adminUrl: `http://127.0.0.1:${routerAdmin}`,
    wsUrl: `ws://127.0.0.1:${routerPort}`,
    proc: routerProc,
  };
  const cluster: Cluster = {
    dir,
    dataDir,
    configPath,
    config,
    env,
    shards,
    router,
    async restartShard(i) {
      const old = shards[i] as ShardProc;
      const fresh = await startShardProc(configPath, env, i, old.port, old.adminPort, registry);
      shards[i] = fresh;
      return fresh;
    },
    async startShard(i) {
      const port = shardPorts[i];
      const admin = shardAdmin[i];
      if (port === undefined || admin === undefined)
        throw new Error(`shard ${i} has no ports: start the cluster with maxShards > ${i}`);
      const fresh = await startShardProc(configPath, env, i, port, admin, registry);
      shards[i] = fresh;
      return fresh;
    },
    async restartRouter() {
      await router.proc.kill();
      router.proc = await startRouterProc();
    },
    async token(userId) {
      const res = await fetch(`${router.url}/users/${encodeURIComponent(userId)}/token`, { method: 'POST' });
      if (res.status !== 201) throw new Error(`token for ${userId}: ${res.status} ${await res.text()}`);
      return ((await res.json()) as { token: string }).token;
    },
  };
  return cluster;
}

/** fetch through the router with a bearer token and JSON body. */
export async function api(
  base: string,
  method: string,
  path: string,
  token?: string,
  body?: unknown,
  // biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary JSON answers
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed, headers: res.headers };
}
