/**
 * shardchat processes for integration tests: test backends standing in for shards
 * (test/fixtures/backend.mjs) and routers started from a YAML file through the built
 * CLI, each on free ports. Also the project's own shard function, loaded from dist/.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  BACKEND,
  CLI,
  childEnv,
  freePorts,
  type ManagedProcess,
  type ProcessRegistry,
  REPO_ROOT,
  type Scope,
  startProcess,
  writeYamlConfig,
} from './processes.js';

export const ATTEMPTS = 3;

/** A start failed because a port picked as free was taken meanwhile (by another suite's process). */
export function portClash(err: unknown): boolean {
  return /EADDRINUSE/.test(String((err as Error)?.message ?? err));
}

export interface Backend {
  name: string;
  port: number;
  adminPort: number;
  url: string;
  adminUrl: string;
  proc: ManagedProcess;
}

export interface BackendOptions {
  scope?: Scope;
  registry?: ProcessRegistry;
  /** Fixed ports (a restart); otherwise free ones are picked. */
  port?: number;
  adminPort?: number;
}

/** Starts `node test/fixtures/backend.mjs <port> <name> <adminPort>` and waits for both ports. */
export async function startBackend(name: string, opts: BackendOptions = {}): Promise<Backend> {
  const fixed = opts.port !== undefined;
  for (let attempt = 1; ; attempt++) {
    const [port, adminPort] =
      opts.port !== undefined && opts.adminPort !== undefined
        ? [opts.port, opts.adminPort]
        : await freePorts(2);
    const p = port as number;
    const a = adminPort as number;
    try {
      const proc = await startProcess({
        name,
        args: [BACKEND, String(p), name, String(a)],
        waitForLine: new RegExp(`^listening ${p}$`),
        waitForPorts: [p, a],
        scope: opts.scope,
        registry: opts.registry,
      });
      return {
        name,
        port: p,
        adminPort: a,
        url: `http://127.0.0.1:${p}`,
        adminUrl: `http://127.0.0.1:${a}`,
        proc,
      };
    } catch (err) {
      if (fixed || attempt >= ATTEMPTS || !portClash(err)) throw err;
    }
  }
}

/** Starts backends `${prefix}-0` .. `${prefix}-{n-1}`. */
export function startBackends(n: number, prefix = 'shard', opts: BackendOptions = {}): Promise<Backend[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => startBackend(`${prefix}-${i}`, opts)));
}

/** Starts a backend again on the same ports after it stopped. */
export function restartBackend(
  b: Backend,
  opts: Omit<BackendOptions, 'port' | 'adminPort'> = {},
): Promise<Backend> {
  return startBackend(b.name, { ...opts, port: b.port, adminPort: b.adminPort });
}

export interface RouterProcess {
  port: number;
  adminPort: number;
  url: string;
  adminUrl: string;
  wsUrl: string;
  proc: ManagedProcess;
  configPath: string;
  config: Record<string, unknown>;
}

export interface RouterOptions {
  /** Extra environment (SHARDCHAT__ overrides). */
  env?: NodeJS.ProcessEnv;
  scope?: Scope;
  registry?: ProcessRegistry;
  /** Run through this command (see StartOptions.wrap). */
  wrap?: string[];
}

/** A router configuration whose targets are these backends (S = backends.length). */
export function routerConfig(
  backends: Backend[],
  extra: {
    shardSpec?: Record<string, unknown>;
    topology?: Record<string, unknown>;
    router?: Record<string, unknown>;
    withAdminTargets?: boolean;
  } = {},
): Record<string, unknown> {
  return {
    shardSpec: { ...(extra.shardSpec ?? {}) },
    topology: {
      mode: 'static',
      targets: backends.map((b) => b.url),
      ...(extra.withAdminTargets ? { adminTargets: backends.map((b) => b.adminUrl) } : {}),
      ...(extra.topology ?? {}),
    },
    router: { ...(extra.router ?? {}) },
    log: { level: 'info' },
  };
}

/**
 * Writes `config` (with host 127.0.0.1 and free ports filled in) to a YAML file in
 * `dir`, starts `node dist/cli/main.js router --config FILE` and waits until both of
 * its ports accept connections.
 */
export async function startRouter(
  dir: string,
  config: Record<string, unknown>,
  opts: RouterOptions = {},
): Promise<RouterProcess> {
  for (let attempt = 1; ; attempt++) {
    const [port, adminPort] = (await freePorts(2)) as [number, number];
    const routerSection = (config.router ?? {}) as Record<string, unknown>;
    const full = { ...config, router: { ...routerSection, host: '127.0.0.1', port, adminPort } };
    const configPath = await writeYamlConfig(dir, full, `router-${port}.yaml`);
    try {
      const proc = await startProcess({
        name: `router:${port}`,
        args: [CLI, 'router', '--config', configPath],
        wrap: opts.wrap,
        env: childEnv(opts.env),
        waitForPorts: [port, adminPort],
        scope: opts.scope,
        registry: opts.registry,
      });
      return {
        port,
        adminPort,
        url: `http://127.0.0.1:${port}`,
        adminUrl: `http://127.0.0.1:${adminPort}`,
        wsUrl: `ws://127.0.0.1:${port}`,
        proc,
        configPath,
        config: full,
      };
    } catch (err) {
      if (attempt >= ATTEMPTS || !portClash(err)) throw err;
    }
  }
}

// --- the project's own shard function, from the build ---

type ShardFunctionModule = typeof import('../../common/shard-function.js');
type HashModule = typeof import('../../common/hash.js');

export interface ShardFunctionApi {
  ShardFunction: ShardFunctionModule['ShardFunction'];
  DEFAULT_SHARD_SPEC: ShardFunctionModule['DEFAULT_SHARD_SPEC'];
  xxh64: HashModule['xxh64'];
}

function distUrl(rel: string): string {
  return pathToFileURL(path.join(REPO_ROOT, 'dist', rel)).href;
}

/**
 * A module as built in dist/ (`npm run build`), typed as its source: for code that
 * starts worker threads, which load the built JavaScript (the store's message writer).
 */
export async function fromDist<T>(rel: string): Promise<T> {
  return (await import(distUrl(rel))) as T;
}

/** ShardFunction from dist/common/shard-function.js, with the hash initialised. */
export async function loadShardFunction(): Promise<ShardFunctionApi> {
  const hash = (await import(distUrl('common/hash.js'))) as HashModule;
  await hash.initHash();
  const sf = (await import(distUrl('common/shard-function.js'))) as ShardFunctionModule;
  return { ShardFunction: sf.ShardFunction, DEFAULT_SHARD_SPEC: sf.DEFAULT_SHARD_SPEC, xxh64: hash.xxh64 };
}
