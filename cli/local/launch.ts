/**
 * `shardchat local` (= `npm start`): the embedded default. A router and the shards the
 * cluster needs as child processes on loopback, data and the generated secrets under
 * ./data (so tokens and conversations survive a restart), every process's log lines
 * prefixed with its name in one terminal. Processes that exit are restarted
 * (cli/local/supervisor.ts); the shard processes follow the cluster's shard map, so
 * `shardchat reshard --to T --config data/local.yaml` can grow and shrink it. Ctrl-C
 * stops everything cleanly.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { isValidMap, type ShardMap } from '../../common/placement.js';
import { seedDemo } from '../demo-seed.js';
import { humanLogLine } from '../log-lines.js';
import {
  type LocalOptions,
  localConfig,
  localConfigPath,
  localPorts,
  localSecrets,
  rewriteShards,
  shardsOnStart,
  WEB_DIR,
  writeLocalConfig,
} from './config.js';
import { type Proc, Supervisor } from './supervisor.js';

export type { LocalOptions } from './config.js';

const say = (line: string) => process.stdout.write(`shardchat local: ${line}\n`);

function prefixLines(child: ChildProcess, name: string): void {
  const pad = name.padEnd(8);
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream }).on('line', (line) =>
      process.stdout.write(`${pad}| ${humanLogLine(line)}\n`),
    );
  }
}

/** A child process of the CLI itself (`shardchat <args> --config <file>`), its output prefixed. */
function spawnCli(name: string, args: string[], configPath: string, env: NodeJS.ProcessEnv): Proc {
  const cli = fileURLToPath(new URL('../main.js', import.meta.url));
  const child = spawn(process.execPath, [cli, ...args, '--config', configPath], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  prefixLines(child, name);
  child.on('error', (err) => say(`${name}: ${err.message}`));
  return {
    pid: child.pid,
    kill: (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    onExit: (cb) => {
      child.once('exit', (code, signal) => cb(code, signal));
    },
  };
}

/** The newest map the running shards report in their /readyz (`map`), or undefined. */
export async function readMap(adminUrls: string[]): Promise<ShardMap | undefined> {
  const maps = await Promise.all(
    adminUrls.map(async (url) => {
      try {
        const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) });
        const body = (await res.json()) as { map?: unknown };
        return isValidMap(body?.map) ? body.map : undefined;
      } catch {
        return undefined;
      }
    }),
  );
  let newest: ShardMap | undefined;
  for (const m of maps) if (m && (!newest || m.version > newest.version)) newest = m;
  return newest;
}

/** Moves a shard's database out of the way after the cluster shrank (it owns nothing any more). */
function retireFiles(dataDir: string, ordinal: number): void {
  const base = path.join(dataDir, `shard-${ordinal}.sqlite`);
  if (!existsSync(base)) return;
  const dir = path.join(dataDir, 'retired');
  mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  for (const suffix of ['', '-wal', '-shm']) {
    if (existsSync(base + suffix))
      renameSync(base + suffix, path.join(dir, `shard-${ordinal}.${stamp}.sqlite${suffix}`));
  }
  say(`moved shard-${ordinal}.sqlite to ${dir} (its groups live on the other shards now)`);
}

export async function runLocal(o: LocalOptions): Promise<void> {
  if (!existsSync(path.join(WEB_DIR, 'index.html')))
    throw new Error(`the web UI is not built (${WEB_DIR}): run npm run build`);
  const shards = shardsOnStart(o.dataDir, o.shards);
  mkdirSync(o.dataDir, { recursive: true });
  const secrets = localSecrets(o.dataDir);
  const configPath = localConfigPath(o.dataDir);
  writeLocalConfig(configPath, localConfig({ shards, dataDir: o.dataDir, port: o.port }));
  const ports = localPorts(o.port);
  const baseEnv = {
    ...process.env,
    SHARDCHAT_AUTH_SECRET: secrets.authSecret,
    SHARDCHAT_INTERNAL_TOKEN: secrets.internalToken,
  };
  let finished = false;
  const finish = (code: number, unclean: string[]) => {
    if (finished) return;
    finished = true;
    say(unclean.length === 0 ? 'stopped cleanly' : `stopped; not cleanly: ${unclean.join(', ')}`);
    process.exit(unclean.length === 0 ? code : 1);
  };
  const sup = new Supervisor({
    shards,
    spawnShard: (i) =>
      spawnCli(`shard-${i}`, ['shard'], configPath, {
        ...baseEnv,
        SHARDCHAT__shard__ordinal: String(i),
        SHARDCHAT__shard__port: String(ports.shard(i)),
        SHARDCHAT__shard__adminPort: String(ports.shardAdmin(i)),
      }),
    spawnRouter: () => spawnCli('router', ['router'], configPath, baseEnv),
    readMap: (running) => readMap(running.map((i) => `http://127.0.0.1:${ports.shardAdmin(i)}`)),
    settled: (n) => rewriteShards(configPath, n),
    retired: (i) => retireFiles(o.dataDir, i),
    log: say,
    gaveUp: (r) => finish(1, r.unclean),
  });
  const stopAll = () => {
    if (sup.isStopping) return;
    say('stopping');
    void sup.stop().then((r) => finish(0, r.unclean));
  };
  process.on('SIGINT', stopAll);
  process.on('SIGTERM', stopAll);
  sup.start();
  say(
    `router on http://127.0.0.1:${ports.router} (admin http://127.0.0.1:${ports.routerAdmin}), ` +
      `${shards} shards on ports ${ports.shard(0)}-${ports.shard(shards - 1)}, data in ${path.resolve(o.dataDir)}`,
  );
  const url = `http://127.0.0.1:${ports.router}/`;
  const admins = [ports.routerAdmin, ...Array.from({ length: shards }, (_, i) => ports.shardAdmin(i))];
  if (!(await allReady(admins, 60_000, () => sup.isStopping))) {
    if (!sup.isStopping) say('not every process is ready after 60 s; see the log above');
  }
  if (o.demo !== false) {
    try {
      const demo = await seedDemo(url, o.dataDir);
      if (sup.isStopping) return;
      for (const c of demo.conversations) {
        say(`demo conversation ${c.groupId} on shard ${c.shard ?? '?'}: ${c.members.join(', ')}`);
      }
    } catch (err) {
      if (sup.isStopping) return;
      say(`could not seed the demo: ${(err as Error).message}`);
    }
  }
  if (!sup.isStopping) {
    say(`cluster view: http://127.0.0.1:${ports.routerAdmin}/cluster`);
    say(`ready: open ${url} in a browser; Ctrl-C stops`);
  }
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
