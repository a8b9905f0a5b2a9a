/**
 * Real processes for integration tests: free ports, spawning with captured output,
 * waiting for readiness (a TCP port or an output line) with a bound, stopping
 * (SIGTERM, then SIGKILL after a bound), temp directories, and a cleanup registry so
 * that no test file leaves a process or a directory behind.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { afterAll, afterEach, beforeEach } from 'vitest';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The built CLI (`npm run build` first). */
export const CLI = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');
export const BACKEND = path.join(REPO_ROOT, 'test', 'fixtures', 'backend.mjs');

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// --- ports ---

/** Ports handed out by this test file, never handed out twice. */
const handedOut = new Set<number>();

/**
 * Test ports come from below the kernel's ephemeral range (32768-60999 on Linux), where no
 * outgoing connection can take a port between its check here and the bind of the process
 * that gets it; each vitest worker draws from its own slice of 2,500 ports (20000-29999),
 * so two workers never hand out the same one. (`shardchat local` tests use 30000-32767:
 * see test/helpers/local.ts.)
 */
export const TEST_PORTS = { base: 20_000, slice: 2_500, slices: 4 } as const;

function portSlice(): [number, number] {
  const worker = Number(process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID ?? 1);
  const k = (Number.isFinite(worker) && worker > 0 ? worker - 1 : 0) % TEST_PORTS.slices;
  const lo = TEST_PORTS.base + k * TEST_PORTS.slice;
  return [lo, lo + TEST_PORTS.slice];
}

function listenOn(port: number): Promise<net.Server | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/**
 * `n` distinct free TCP ports on 127.0.0.1 from this worker's slice (see TEST_PORTS): each
 * is bound (all at once) and closed again, and never handed out twice by this worker.
 */
export async function freePorts(n: number): Promise<number[]> {
  const [lo, hi] = portSlice();
  const out: number[] = [];
  for (let attempt = 0; out.length < n && attempt < 2000; attempt++) {
    const port = lo + Math.floor(Math.random() * (hi - lo));
    if (handedOut.has(port)) continue;
    const server = await listenOn(port);
    if (!server) continue;
    handedOut.add(port);
    out.push(port);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  if (out.length < n) throw new Error(`could not find ${n} free ports in ${lo}-${hi - 1}`);
  return out;
}

/** The first of n consecutive free ports (templated addresses: `{ordinal+base}`). */
export async function freePortRange(n: number): Promise<number> {
  const [lo, hi] = portSlice();
  for (let attempt = 0; attempt < 500; attempt++) {
    const base = lo + Math.floor(Math.random() * (hi - lo - n));
    const servers: net.Server[] = [];
    let ok = true;
    for (let p = base; p < base + n; p++) {
      const server = handedOut.has(p) ? undefined : await listenOn(p);
      if (!server) {
        ok = false;
        break;
      }
      servers.push(server);
    }
    await Promise.all(servers.map((sv) => new Promise<void>((resolve) => sv.close(() => resolve()))));
    if (!ok) continue;
    for (let p = base; p < base + n; p++) handedOut.add(p);
    return base;
  }
  throw new Error(`could not find ${n} consecutive free ports in ${lo}-${hi - 1}`);
}

export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port as number;
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
export function canConnect(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    const done = (ok: boolean) => {
      socket.removeAllListeners();
      socket.on('error', () => {});
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

// --- waiting ---

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Describes what is awaited, for the error message. */
  what?: string;
}

/**
 * Calls `fn` until it returns a value other than undefined/false (or stops throwing),
 * at most `timeoutMs`; then throws with the last error.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  opts: WaitOptions = {},
): Promise<Exclude<T, false | undefined>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as Exclude<T, false | undefined>;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      const reason = last instanceof Error ? `: ${last.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'a condition'}${reason}`, {
        cause: last,
      });
    }
    await sleep(intervalMs);
  }
}

// --- processes ---

export type Scope = 'file' | 'test';

export interface StartOptions {
  /** A label for diagnostics. */
  name: string;
  /** Arguments to `node`. */
  args: string[];
  /** A command that execs `node` with the arguments after its own (e.g. `prlimit --nofile=N:N`). */
  wrap?: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Ready once each of these ports accepts TCP connections. */
  waitForPorts?: number[];
  /** Ready once a line of stdout or stderr matches. */
  waitForLine?: RegExp | string;
  /** Bound on becoming ready (default 20 s). */
  timeoutMs?: number;
  /** 'test' processes are killed after each test, 'file' ones after the file (default). */
  scope?: Scope;
  registry?: ProcessRegistry;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const MAX_OUTPUT = 256 * 1024;

export class ManagedProcess {
  readonly child: ChildProcess;
  readonly name: string;
  readonly scope: Scope;
  /** Resolves when the process has exited. */
  readonly exited: Promise<Exit>;
  exit: Exit | undefined;
  private out = '';
  private lineWaiters: { re: RegExp; from: number; resolve: (line: string) => void }[] = [];

  constructor(name: string, child: ChildProcess, scope: Scope) {
    this.name = name;
    this.child = child;
    this.scope = scope;
    const onChunk = (stream: string) => (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      this.append(stream === 'stderr' ? text.replace(/^(?=.)/gm, '[stderr] ') : text);
    };
    child.stdout?.on('data', onChunk('stdout'));
    child.stderr?.on('data', onChunk('stderr'));
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
      child.once('error', (err) => {
        this.append(`[spawn error] ${err.message}\n`);
        if (!this.exit) {
          this.exit = { code: -1, signal: null };
          resolve(this.exit);
        }
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exit === undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Everything the process wrote so far (the last 256 KiB), stderr lines marked. */
  output(): string {
    return this.out;
  }

  /** Length of the output so far: pass it to waitForLine to look only at what comes later. */
  mark(): number {
    return this.out.length;
  }

  private append(text: string): void {
    this.out += text;
    if (this.out.length > MAX_OUTPUT) {
      const cut = this.out.length - MAX_OUTPUT;
      this.out = this.out.slice(cut);
      for (const w of this.lineWaiters) w.from = Math.max(0, w.from - cut);
    }
    this.checkLines();
  }

  private checkLines(): void {
    if (this.lineWaiters.length === 0) return;
    const remaining: typeof this.lineWaiters = [];
    for (const w of this.lineWaiters) {
      const line = this.findLine(w.re, w.from);
      if (line !== undefined) w.resolve(line);
      else remaining.push(w);
    }
    this.lineWaiters = remaining;
  }

  private findLine(re: RegExp, from: number): string | undefined {
    const text = this.out.slice(from);
    for (const line of text.split('\n')) if (re.test(line)) return line;
    return undefined;
  }

  /** Resolves with the first output line (after `from`) matching; rejects on exit or timeout. */
  waitForLine(pattern: RegExp | string, opts: { timeoutMs?: number; from?: number } = {}): Promise<string> {
    const re = typeof pattern === 'string' ? new RegExp(escapeRegExp(pattern)) : pattern;
    const from = opts.from ?? 0;
    const found = this.findLine(re, from);
    if (found !== undefined) return Promise.resolve(found);
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const waiter = {
        re,
        from,
        resolve: (line: string) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        this.lineWaiters = this.lineWaiters.filter((w) => w !== waiter);
        reject(
          new Error(`${this.name}: no output line matching ${re} within ${timeoutMs} ms\n${this.tail()}`),
        );
      }, timeoutMs);
      this.lineWaiters.push(waiter);
      void this.exited.then((exit) => {
        // Output may still be in flight when 'exit' fires; give it a moment.
        setTimeout(() => {
          if (!this.lineWaiters.includes(waiter)) return;
          this.lineWaiters = this.lineWaiters.filter((w) => w !== waiter);
          clearTimeout(timer);
          reject(
            new Error(`${this.name} exited (${describeExit(exit)}) before printing ${re}\n${this.tail()}`),
          );
        }, 100);
      });
    });
  }

  /** The last lines of output, for error messages. */
  tail(chars = 4000): string {
    const text = this.out.length > chars ? `...${this.out.slice(-chars)}` : this.out;
    return `--- output of ${this.name} (pid ${this.pid}) ---\n${text}\n--- end of output ---`;
  }

  /** Sends a signal (only to this process, by its pid). */
  signal(sig: NodeJS.Signals): void {
    if (this.running) this.child.kill(sig);
  }

  /** Resolves with the exit, or undefined when it has not exited within `ms`. */
  async waitExit(ms: number): Promise<Exit | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 5000): Promise<Exit> {
    if (this.exit) return this.exit;
    this.signal('SIGTERM');
    const exit = await this.waitExit(graceMs);
    if (exit) return exit;
    return this.kill();
  }

  /** SIGKILL, and wait for the exit. */
  async kill(): Promise<Exit> {
    if (this.exit) return this.exit;
    this.signal('SIGKILL');
    const exit = await this.waitExit(5000);
    if (!exit) throw new Error(`${this.name} (pid ${this.pid}) did not exit after SIGKILL`);
    return exit;
  }
}

export function describeExit(exit: Exit): string {
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The environment of a child: this process's, without any SHARDCHAT settings, plus `extra`. */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SHARDCHAT')) env[k] = v;
  return { ...env, ...extra };
}

/**
 * What a process that is not ready was doing (Linux): its CPU time so far and each
 * thread's state and kernel wait channel (`D` with `ext4_sync_file` or `jbd2_*`: an
 * fsync waiting for the disk; `R` for a long time: no CPU to be had).
 */
function threadStates(pid: number | undefined): string {
  if (pid === undefined) return '';
  try {
    const ticks = (stat: string) => {
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return { state: f[0], cpuTicks: Number(f[11]) + Number(f[12]) };
    };
    const tasks = readdirSync(`/proc/${pid}/task`).map((tid) => {
      const base = `/proc/${pid}/task/${tid}`;
      const read = (f: string) => readFileSync(`${base}/${f}`, 'utf8').trim();
      const { state } = ticks(read('stat'));
      return `${read('comm')}:${state}:${read('wchan') || '-'}`;
    });
    const cpuMs = ticks(readFileSync(`/proc/${pid}/stat`, 'utf8')).cpuTicks * 10;
    return `--- pid ${pid}: ${cpuMs} ms of CPU; threads (name:state:wait) ${tasks.join(' ')} ---\n`;
  } catch {
    return '';
  }
}

/**
 * Spawns `node ...args` and waits until it is ready (its ports accept connections
 * and/or a line appears), at most `timeoutMs`. On failure the process is killed and
 * the error carries its output.
 */
export async function startProcess(opts: StartOptions): Promise<ManagedProcess> {
  const registry = opts.registry ?? defaultRegistry;
  const [command = process.execPath, ...wrapArgs] = [...(opts.wrap ?? []), process.execPath];
  const child = spawn(command, [...wrapArgs, ...opts.args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: opts.env ?? childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = new ManagedProcess(opts.name, child, opts.scope ?? 'file');
  registry.track(proc);
  const timeoutMs = opts.timeoutMs ?? 20_000;
  try {
    const waits: Promise<unknown>[] = [];
    if (opts.waitForLine !== undefined) waits.push(proc.waitForLine(opts.waitForLine, { timeoutMs }));
    for (const port of opts.waitForPorts ?? []) {
      waits.push(
        waitFor(
          async () => {
            if (!proc.running) {
              throw new Error(
                `${opts.name} exited (${describeExit(proc.exit ?? { code: null, signal: null })})`,
              );
            }
            return canConnect(port);
          },
          { timeoutMs, intervalMs: 50, what: `${opts.name} to accept connections on port ${port}` },
        ),
      );
    }
    await Promise.all(waits);
    if (!proc.running) throw new Error(`${opts.name} exited right after starting`);
  } catch (err) {
    const stall = proc.running ? threadStates(proc.pid) : '';
    await proc.kill().catch(() => undefined);
    throw new Error(`${(err as Error).message}\n${stall}${proc.tail()}`, { cause: err });
  }
  return proc;
}

/**
 * Starts several processes at once. Each one that starts is handed to `started` even when
 * another fails (then the first failure is thrown, once every start has ended), so that
 * the caller can stop them all: with Promise.all, a start still under way when another
 * failed would be left running, unknown to a caller that retries on the same data.
 */
export async function startTogether<T>(starts: Promise<T>[], started: (t: T) => void): Promise<T[]> {
  const results = await Promise.allSettled(starts);
  for (const r of results) if (r.status === 'fulfilled') started(r.value);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

export interface RunResult extends Exit {
  stdout: string;
  stderr: string;
}

/** Runs `node ...args` to completion (killed after `timeoutMs`), capturing its output. */
export function runNode(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; registry?: ProcessRegistry } = {},
): Promise<RunResult> {
  const registry = opts.registry ?? defaultRegistry;
  const child = spawn(process.execPath, args, {
    cwd: opts.cwd ?? REPO_ROOT,
    env: opts.env ?? childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = new ManagedProcess(`node ${args.join(' ')}`, child, 'test');
  registry.track(proc);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => {
    stdout += c.toString('utf8');
  });
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  const timeoutMs = opts.timeoutMs ?? 20_000;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void proc
        .kill()
        .finally(() =>
          reject(new Error(`node ${args.join(' ')} did not finish within ${timeoutMs} ms\n${proc.tail()}`)),
        );
    }, timeoutMs);
    // 'close' (not 'exit') so that all output has been read.
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs the built `shardchat` CLI with `args`. */
export function runCli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; registry?: ProcessRegistry } = {},
): Promise<RunResult> {
  return runNode([CLI, ...args], opts);
}

// --- temp files ---

/** Writes a router/shard configuration as YAML (js-yaml dump) and returns its path. */
export async function writeYamlConfig(
  dir: string,
  config: unknown,
  fileName = 'shardchat.yaml',
): Promise<string> {
  const file = path.join(dir, fileName);
  await writeFile(file, yaml.dump(config, { noRefs: true, lineWidth: -1 }), 'utf8');
  return file;
}

// --- the registry ---

/** Every process and temp directory a test file creates, so that all of them go away. */
export class ProcessRegistry {
  private readonly procs = new Set<ManagedProcess>();
  private readonly dirs = new Set<string>();
  private readonly testDirs = new Set<string>();

  track(proc: ManagedProcess): void {
    this.procs.add(proc);
    void proc.exited.then(() => {
      // Keep exited 'file' processes out of the way; nothing to clean for them.
      this.procs.delete(proc);
    });
  }

  /** A fresh directory under os.tmpdir(), removed after the test ('test') or the file ('file'). */
  async tempDir(scope: Scope = 'file', prefix = 'shardchat-test-'): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
    (scope === 'test' ? this.testDirs : this.dirs).add(dir);
    return dir;
  }

  /** Processes still running. */
  get live(): ManagedProcess[] {
    return [...this.procs].filter((p) => p.running);
  }

  /** Stops the processes of `scope` (or all) and removes the matching temp directories. */
  async cleanup(scope?: Scope): Promise<void> {
    const procs = [...this.procs].filter((p) => scope === undefined || p.scope === scope);
    await Promise.all(procs.map((p) => p.stop(3000).catch(() => undefined)));
    const dirs = [...this.testDirs, ...(scope === 'test' ? [] : this.dirs)];
    this.testDirs.clear();
    if (scope !== 'test') this.dirs.clear();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }).catch(() => undefined)));
  }

  /** Last resort when the worker exits: SIGKILL whatever is left, synchronously. */
  killAllSync(): void {
    for (const p of this.procs) {
      if (p.running) {
        try {
          p.child.kill('SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  }
}

export const defaultRegistry = new ProcessRegistry();
process.once('exit', () => defaultRegistry.killAllSync());

/**
 * Installs the hooks of a test file: 'test' processes and directories go after each
 * test, everything after the file. Call once at the top level of the file.
 */
export function useProcessCleanup(registry: ProcessRegistry = defaultRegistry): ProcessRegistry {
  beforeEach((ctx) => {
    // When a test fails, show what the processes it talked to said.
    ctx.onTestFailed(() => {
      for (const p of registry.live) process.stderr.write(`${p.tail(1500)}\n`);
    });
  });
  afterEach(async () => {
    await registry.cleanup('test');
  });
  afterAll(async () => {
    await registry.cleanup();
  });
  return registry;
}
