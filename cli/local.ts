/**
 * `shardchat local` (= `npm start`): the embedded default. A router and S shards as
 * child processes on loopback, data and the generated secrets under ./data (so tokens
 * and conversations survive a restart), every process's log lines prefixed with its
 * name in one terminal. Ctrl-C stops everything cleanly.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { seedDemo } from './demo-seed.js';
import { humanLogLine } from './log-lines.js';

export interface LocalOptions {
  shards: number;
  dataDir: string;
  port: number;
  /** Seed the demo conversation on the first start (default true). */
  demo?: boolean;
}

/** The bundled browser chat (dist/web, built by `npm run build`). */
export const WEB_DIR = fileURLToPath(new URL('../web/', import.meta.url));

interface Secrets {
  authSecret: string;
  internalToken: string;
}

/** The secrets of a local installation: generated once, kept in the data folder. */
export function localSecrets(dataDir: string): Secrets {
  const file = path.join(dataDir, 'secrets.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Secrets;
  const secrets = {
    authSecret: randomBytes(32).toString('base64'),
    internalToken: randomBytes(24).toString('hex'),
  };
  writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
  return secrets;
}

/** The configuration of the local cluster: router on `port`, shard i on port+1+i, admin ports from port+1010. */
export function localConfig(o: LocalOptions): Record<string, unknown> {
  const shardPort = (i: number) => o.port + 1 + i;
  const adminPort = (i: number) => o.port + 1011 + i;
  return {
    topology: {
      targets: Array.from({ length: o.shards }, (_, i) => `http://127.0.0.1:${shardPort(i)}`),
      adminTargets: Array.from({ length: o.shards }, (_, i) => `http://127.0.0.1:${adminPort(i)}`),
    },
    router: { host: '127.0.0.1', port: o.port, adminPort: o.port + 1010, webDir: WEB_DIR },
    shard: { host: '127.0.0.1', dataDir: path.resolve(o.dataDir) },
    auth: { devTokens: true },
    log: { level: 'info' },
  };
}

function prefixLines(child: ChildProcess, name: string): void {
  const pad = name.padEnd(8);
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream }).on('line', (line) =>
      process.stdout.write(`${pad}| ${humanLogLine(line)}\n`),
    );
  }
}

export async function runLocal(o: LocalOptions): Promise<void> {
  if (!existsSync(path.join(WEB_DIR, 'index.html')))
    throw new Error(`the web UI is not built (${WEB_DIR}): run npm run build`);
  mkdirSync(o.dataDir, { recursive: true });
  const secrets = localSecrets(o.dataDir);
  const cfg = localConfig(o);
  const configPath = path.join(o.dataDir, 'local.yaml');
  writeFileSync(configPath, `# written by shardchat local on every start\n${yaml.dump(cfg)}`);
  const cli = fileURLToPath(new URL('./main.js', import.meta.url));
  const baseEnv = {
    ...process.env,
    SHARDCHAT_AUTH_SECRET: secrets.authSecret,
    SHARDCHAT_INTERNAL_TOKEN: secrets.internalToken,
  };
  const children: { name: string; child: ChildProcess }[] = [];
  let stopping = false;
  const stopAll = (code: number) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write('shardchat local: stopping\n');
    for (const { child } of children) if (child.exitCode === null) child.kill('SIGTERM');
    const deadline = setTimeout(() => {
      for (const { child } of children) if (child.exitCode === null) child.kill('SIGKILL');
    }, 15_000);
    deadline.unref();
    Promise.all(
      children.map(
        ({ child }) =>
          new Promise<void>((r) =>
            child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r()),
          ),
      ),
    ).then(() => {
      const unclean = children
        .filter(({ child }) => child.exitCode !== 0)
        .map(({ name, child }) => `${name} (${child.signalCode ?? child.exitCode})`);
      process.stdout.write(
        unclean.length === 0
          ? 'shardchat local: stopped cleanly\n'
          : `shardchat local: stopped; not cleanly: ${unclean.join(', ')}\n`,
      );
      process.exit(unclean.length === 0 ? code : 1);
    });
  };
  const start = (name: string, args: string[], env: NodeJS.ProcessEnv) => {
    const child = spawn(process.execPath, [cli, ...args, '--config', configPath], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    prefixLines(child, name);
    child.on('exit', (code, signal) => {
      if (!stopping) {
        process.stdout.write(`shardchat local: ${name} exited (${signal ?? code}); stopping everything\n`);
        stopAll(1);
      }
    });
    children.push({ name, child });
  };
  for (let i = 0; i < o.shards; i++) {
    start(`shard-${i}`, ['shard'], {
      ...baseEnv,
      SHARDCHAT__shard__ordinal: String(i),
      SHARDCHAT__shard__port: String(o.port + 1 + i),
      SHARDCHAT__shard__adminPort: String(o.port + 1011 + i),
    });
  }
  start('router', ['router'], baseEnv);
  process.on('SIGINT', () => stopAll(0));
  process.on('SIGTERM', () => stopAll(0));
  process.stdout.write(
    `shardchat local: router on http://127.0.0.1:${o.port} (admin http://127.0.0.1:${o.port + 1010}), ` +
      `${o.shards} shards on ports ${o.port + 1}-${o.port + o.shards}, data in ${path.resolve(o.dataDir)}\n`,
  );
  const url = `http://127.0.0.1:${o.port}/`;
  const admins = [o.port + 1010, ...Array.from({ length: o.shards }, (_, i) => o.port + 1011 + i)];
  if (!(await allReady(admins, 60_000, () => stopping))) {
    if (!stopping)
      process.stdout.write('shardchat local: not every process is ready after 60 s; see the log above\n');
  }
  if (o.demo !== false) {
    try {
      const demo = await seedDemo(url, o.dataDir);
      if (stopping) return;
      for (const c of demo.conversations) {
        process.stdout.write(
          `shardchat local: demo conversation ${c.groupId} on shard ${c.shard ?? '?'}: ${c.members.join(', ')}\n`,
        );
      }
    } catch (err) {
      if (stopping) return;
      process.stdout.write(`shardchat local: could not seed the demo: ${(err as Error).message}\n`);
    }
  }
  if (!stopping) process.stdout.write(`shardchat local: ready: open ${url} in a browser; Ctrl-C stops\n`);
}

/** Waits until every admin port answers /readyz with 200 (the router's once it sees all shards ready). */
async function allReady(ports: number[], timeoutMs: number, stopped: () => boolean): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  const ready = async (port: number) => {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(1000) });
      const body = (await res.json()) as { notReadyShards?: unknown[] };
      return res.ok && (body.notReadyShards === undefined || body.notReadyShards.length === 0);
    } catch {
      return false;
    }
  };
  while (Date.now() < until && !stopped()) {
    if ((await Promise.all(ports.map(ready))).every(Boolean)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}
