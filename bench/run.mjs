#!/usr/bin/env node
// Benchmark harness (`npm run bench`): HTTP proxies that route by a shard key, all in
// front of the same three backends, measured with wrk in one run on one machine.
// See bench/README.md for what each peer is and how it is configured.
//
//   node bench/run.mjs [--duration 10s] [--warmup 2s] [--connections 50] [--threads 1]
//                      [--only name,name] [--backend nginx|node] [--repeat 1] [--no-pin] [--write]
//                      [--baseline-dir DIR]
//
// Targets: direct nginx haproxy shardchat http-proxy-3 httpxy undici-pool node-http-agent
// node-floor (the floor under any Node.js router, not a candidate),
// plus `hash` (bench/hash.mjs), and `shardchat-before` (the router of another build, such
// as the commit before a change, given with --baseline-dir) in the same run. bench/RESULTS.md and bench/results/*.json are written
// by a run that measures every proxy target (or with --write); a partial run only
// prints its table, so that numbers from different runs are never mixed in one table.
//
// Each target gets two measured wrk runs: the throughput run (-c50 by default) and,
// right after it on the same process, a latency run with one connection (-t1 -c1 -d5s),
// where nothing queues and p50 minus direct's p50 is the proxy's own added latency.
// With 2+ CPUs and taskset, the proxy under test runs on CPU 1 and wrk and the
// backends on CPU 0 (for `direct`, the backend on CPU 1); --no-pin turns that off.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchCli } from './lib.mjs';
import { spliceSection } from './results-md.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BENCH = join(ROOT, 'bench');
const WORK = join(BENCH, '.work');
const PIDS_FILE = join(WORK, 'pids.json');
const RESULTS_MD = join(BENCH, 'RESULTS.md');
const RESULTS_DIR = join(BENCH, 'results');
const KEYS_LUA = join(BENCH, 'keys.lua');
const SHARDS = 3;
/** The latency run: one connection, one request at a time, so nothing queues. */
const LATENCY_LOAD = { threads: 1, connections: 1, durationS: 5 };
const LATENCY_WRK = `wrk -t${LATENCY_LOAD.threads} -c${LATENCY_LOAD.connections} -d${LATENCY_LOAD.durationS}s --latency -s bench/keys.lua`;
/** With pinning: the proxy under test (or, for `direct`, the backend) alone on one CPU, the load side on another. */
const PROXY_CPU = 1;
const LOAD_CPU = 0;

const PROXY_TARGETS = [
  'direct',
  'nginx',
  'haproxy',
  'shardchat',
  'http-proxy-3',
  'httpxy',
  'undici-pool',
  'node-http-agent',
  'node-floor',
];
const NODE_CANDIDATES = new Set(['http-proxy-3', 'httpxy', 'undici-pool', 'node-http-agent', 'node-floor']);
/** Targets that route with the project's ShardFunction: their answers are checked shard by shard. */
const OUR_SHARD_FUNCTION = new Set(['shardchat', 'shardchat-before', ...NODE_CANDIDATES]);

// ---------------------------------------------------------------- arguments

const USAGE = `usage: node bench/run.mjs [options]
  --duration D      measured wrk run per target (default 10s)
  --warmup D        wrk warm-up before each measured run (default 2s; 0 to skip)
  --connections N   wrk connections (default 50)
  --threads N       wrk threads (default 1)
  --only LIST       comma-separated subset of: hash,${PROXY_TARGETS.join(',')}
  --backend KIND    nginx (default: one nginx process, 1 worker, 3 server blocks) or node (3 bench/backend.mjs processes)
  --repeat N        rounds: every target measured N times, interleaved; the median run (by requests/s) is reported (default 1)
  --quiet-wait D    before each measured run, wait up to D for the rest of the machine to be idle
                    (busy < 0.2 cores over 1 s; default 10s; 0 to skip)
  --no-pin          do not pin with taskset (default when nproc >= 2 and taskset exists: the proxy under
                    test on CPU ${PROXY_CPU}, wrk and the backends on CPU ${LOAD_CPU}; for direct, the backend on CPU ${PROXY_CPU})
  --write           write RESULTS.md and results/*.json even for a partial run
  --baseline-dir D  also measure the router built in D (a checkout with dist/ built, or a dist/ folder,
                    such as the commit before a change) as target shardchat-before, right after shardchat`;

const {
  opts,
  usage: usageError,
  seconds,
  positive,
} = benchCli(USAGE, {
  duration: { type: 'string', default: '10s' },
  warmup: { type: 'string', default: '2s' },
  connections: { type: 'string', default: '50' },
  threads: { type: 'string', default: '1' },
  only: { type: 'string' },
  backend: { type: 'string', default: 'nginx' },
  repeat: { type: 'string', default: '1' },
  'quiet-wait': { type: 'string', default: '10s' },
  'no-pin': { type: 'boolean', default: false },
  write: { type: 'boolean', default: false },
  'baseline-dir': { type: 'string' },
});

const DURATION = Math.max(1, Math.round(seconds('duration', opts.duration)));
const WARMUP = Math.round(seconds('warmup', opts.warmup));
const CONNECTIONS = positive('connections', opts.connections);
const THREADS = positive('threads', opts.threads);
const REPEAT = positive('repeat', opts.repeat);
const QUIET_WAIT = seconds('quiet-wait', opts['quiet-wait']);
const QUIET_CORES = 0.2;
const BACKEND = opts.backend;
if (BACKEND !== 'nginx' && BACKEND !== 'node') usageError(`--backend: nginx or node, got ${BACKEND}`);
if (THREADS > CONNECTIONS) usageError('--threads must not exceed --connections');

/** The router of another build (--baseline-dir): its dist/cli/main.js. */
const BASELINE_CLI = opts['baseline-dir'] === undefined ? undefined : baselineCli(opts['baseline-dir']);
function baselineCli(dir) {
  for (const rel of ['dist/cli/main.js', 'cli/main.js']) {
    const file = join(dir, rel);
    if (fs.existsSync(file)) return fs.realpathSync(file);
  }
  usageError(`--baseline-dir: no dist/cli/main.js (nor cli/main.js) under ${dir}: build that checkout first`);
}
/** Every target of this run, in order: shardchat-before (with --baseline-dir) right after shardchat. */
const RUN_TARGETS = PROXY_TARGETS.flatMap((t) =>
  t === 'shardchat' && BASELINE_CLI ? [t, 'shardchat-before'] : [t],
);
const ALL = ['hash', ...RUN_TARGETS];
let selected = ALL;
if (opts.only) {
  selected = opts.only
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = selected.filter((s) => !ALL.includes(s));
  if (unknown.length) {
    const hint = unknown.includes('shardchat-before') ? ' (shardchat-before needs --baseline-dir)' : '';
    usageError(`--only: unknown target(s) ${unknown.join(', ')}; known: ${ALL.join(', ')}${hint}`);
  }
}
const runHash = selected.includes('hash');

/**
 * CPU pinning with taskset: on unless --no-pin, fewer than 2 CPUs, or no taskset.
 * {enabled, why}: `why` says why it is off.
 */
function pinning() {
  if (opts['no-pin']) return { enabled: false, why: '--no-pin' };
  const n = spawnSync('nproc', [], { encoding: 'utf8', timeout: 5000 });
  const cpus = Number(n.stdout?.trim()) || (os.availableParallelism?.() ?? os.cpus().length);
  if (cpus < 2) return { enabled: false, why: `nproc is ${cpus}` };
  if (spawnSync('sh', ['-c', 'command -v taskset'], { stdio: 'ignore' }).status !== 0)
    return { enabled: false, why: 'no taskset on the PATH' };
  for (const cpu of [LOAD_CPU, PROXY_CPU]) {
    const t = spawnSync('taskset', ['-c', String(cpu), 'true'], { encoding: 'utf8', timeout: 5000 });
    if (t.status !== 0)
      return { enabled: false, why: `taskset -c ${cpu} failed: ${(t.stderr ?? '').trim().split('\n')[0]}` };
  }
  return { enabled: true, why: '' };
}
const PIN = pinning();
const targets = RUN_TARGETS.filter((t) => selected.includes(t));
const fullRun = PROXY_TARGETS.every((t) => targets.includes(t));
const WRITE = opts.write || fullRun;

// ---------------------------------------------------------------- process management

fs.mkdirSync(WORK, { recursive: true });
const children = new Set();
let shuttingDown = false;

function log(line) {
  process.stdout.write(`${line}\n`);
}

function recordPids() {
  const list = [...children].map((c) => ({ pgid: c.pid, name: c.benchName, marker: c.benchMarker }));
  try {
    fs.writeFileSync(PIDS_FILE, JSON.stringify(list));
  } catch {}
}

/** Kills what an earlier run left behind when it was itself killed (SIGKILL leaves no chance to clean up). */
function reapStale() {
  let list;
  try {
    list = JSON.parse(fs.readFileSync(PIDS_FILE, 'utf8'));
  } catch {
    return;
  }
  for (const { pgid, name, marker } of list) {
    let cmdline = '';
    let environ = '';
    try {
      cmdline = fs.readFileSync(`/proc/${pgid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      environ = `\0${fs.readFileSync(`/proc/${pgid}/environ`, 'utf8')}`;
    } catch {
      continue;
    }
    // The marker is in the command line, or in BENCH_MARKER (shardchat replaces its command
    // line with a process title such as `shardchat router :8080`; nginx rewrites its environment).
    const ours = cmdline.includes(marker) || environ.includes(`\0BENCH_MARKER=${marker}\0`);
    if (!marker || !ours) continue; // the pid was reused by something else
    log(`killing ${name} (process group ${pgid}) left over by an earlier run`);
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {}
  }
  fs.rmSync(PIDS_FILE, { force: true });
}

/**
 * Starts a process in its own process group (so that nginx's and haproxy's workers
 * go with it), output to bench/.work/<name>.log. `marker` is a string of its command
 * line that identifies it as ours when a later run reaps leftovers (also passed as
 * BENCH_MARKER in its environment, for processes that replace their command line). With pinning on,
 * `cpu` runs it as `taskset -c <cpu> cmd args...`: taskset sets its own CPU affinity
 * and execs the command, so the pid (the process group), the command line a later run
 * checks `marker` against, and the affinity of every process and thread it starts are
 * the command's.
 */
function start(name, cmd, args, { marker = args.join(' '), env = process.env, cpu } = {}) {
  const logPath = join(WORK, `${name}.log`);
  const fd = fs.openSync(logPath, 'w');
  const [file, argv] =
    PIN.enabled && cpu !== undefined ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args];
  const child = spawn(file, argv, {
    cwd: ROOT,
    env: { ...env, BENCH_MARKER: marker },
    stdio: ['ignore', fd, fd],
    detached: true,
  });
  fs.closeSync(fd);
  child.benchName = name;
  child.benchMarker = marker;
  child.logPath = logPath;
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.once('error', (err) => {
    child.spawnError = err;
  });
  if (child.pid === undefined) throw new Error(`cannot start ${cmd}: not found?`);
  children.add(child);
  recordPids();
  child.exited.then(() => {
    // the group may outlive its leader for a moment (nginx workers); stop() deals with that
    if (!child.stopping) child.died = true;
  });
  return child;
}

function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM to the whole group, SIGKILL after `graceMs`. */
async function stop(child, graceMs = 3000) {
  if (!children.has(child)) return;
  child.stopping = true;
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {}
  const deadline = Date.now() + graceMs;
  while (groupAlive(child.pid) && Date.now() < deadline) await sleep(50);
  if (groupAlive(child.pid)) {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {}
    const hard = Date.now() + 2000;
    while (groupAlive(child.pid) && Date.now() < hard) await sleep(20);
  }
  children.delete(child);
  recordPids();
}

function killAllSync(signal = 'SIGKILL') {
  for (const c of children) {
    try {
      process.kill(-c.pid, signal);
    } catch {}
  }
}

async function stopAll() {
  await Promise.all([...children].map((c) => stop(c)));
}

process.on('exit', () => {
  killAllSync('SIGKILL');
  if (children.size === 0) fs.rmSync(PIDS_FILE, { force: true });
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (shuttingDown) return;
    shuttingDown = true;
    log(`\n${sig}: stopping every process the harness started`);
    stopAll().finally(() => process.exit(130));
  });
}

function tail(file, lines = 15) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------- ports and readiness

/** `n` distinct free loopback ports (all bound at once, then released). */
async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      await new Promise((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', resolve);
      });
      servers.push(s);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(500, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

async function waitForPorts(child, ports, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (const port of ports) {
    for (;;) {
      if (child.spawnError) throw new Error(`${child.benchName}: ${child.spawnError.message}`);
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(
          `${child.benchName} exited (${child.exitCode ?? child.signalCode}) before listening on ${port}:\n${tail(child.logPath)}`,
        );
      if (await canConnect(port)) break;
      if (Date.now() > deadline)
        throw new Error(
          `${child.benchName} did not listen on ${port} within ${timeoutMs} ms:\n${tail(child.logPath)}`,
        );
      await sleep(50);
    }
  }
}

/** One request on a fresh connection; {status, body}. */
function request(port, method, path, body) {
  return new Promise((resolve, reject) => {
    const headers = body
      ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
      : {};
    const req = http.request(
      { host: '127.0.0.1', port, method, path, headers, agent: false, timeout: 5000 },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 5 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------- peers

let shardFunction;
async function expectedShard(path) {
  if (!shardFunction) {
    const { initHash } = await import('../dist/common/hash.js');
    const { ShardFunction, pathOf } = await import('../dist/common/shard-function.js');
    await initHash();
    const sf = new ShardFunction({
      urlPattern: '^/(?:groups|users)/([^/]+)',
      header: 'x-group-id',
      onNoMatch: 'path',
      assignment: 'modulo',
    });
    shardFunction = (p) => sf.route(pathOf(p), {}, SHARDS).shard;
  }
  return shardFunction(path);
}

/**
 * Checks that a target answers, routes every shard's keys, and (for the peers that use
 * our shard function) routes each key to the shard the project's ShardFunction names.
 * Also a POST with a body, to check that bodies get through.
 */
async function probe(name, port) {
  const seen = new Set();
  for (let i = 0; i < 30; i++) {
    const path = `/groups/g${i}/messages`;
    const r = await request(port, 'GET', path);
    if (r.status !== 200)
      throw new Error(`${name}: GET ${path} answered ${r.status}: ${r.body.slice(0, 200)}`);
    let shard;
    try {
      shard = JSON.parse(r.body).shard;
    } catch {
      throw new Error(
        `${name}: GET ${path} answered a body that is not the backend's: ${r.body.slice(0, 200)}`,
      );
    }
    seen.add(shard);
    if (OUR_SHARD_FUNCTION.has(name)) {
      const want = await expectedShard(path);
      if (shard !== want)
        throw new Error(`${name}: GET ${path} reached shard ${shard}, ShardFunction says ${want}`);
    }
  }
  if (name !== 'direct' && seen.size !== SHARDS)
    throw new Error(`${name}: 30 keys reached only shards ${[...seen].join(',')}`);
  const post = await request(
    port,
    'POST',
    '/groups/g7/messages',
    JSON.stringify({ contents: 'x'.repeat(2000) }),
  );
  if (post.status !== 200)
    throw new Error(`${name}: POST answered ${post.status}: ${post.body.slice(0, 200)}`);
  return [...seen].sort();
}

function nginxCommon(prefix) {
  const tmp = join(WORK, 'tmp', prefix);
  fs.mkdirSync(tmp, { recursive: true });
  return `worker_processes 1;
daemon off;
pid ${join(WORK, `${prefix}.pid`)};
error_log ${join(WORK, `${prefix}.error.log`)} warn;
events { worker_connections 4096; }
`;
}
function nginxTemp(prefix) {
  const tmp = join(WORK, 'tmp', prefix);
  return ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((k) => `  ${k}_temp_path ${join(tmp, k)};`)
    .join('\n');
}
function startNginx(name, conf, cpu) {
  const file = join(WORK, `${name}.conf`);
  fs.writeFileSync(file, conf);
  const t = spawnSync('nginx', ['-t', '-q', '-e', join(WORK, `${name}.error.log`), '-p', WORK, '-c', file], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (t.status !== 0) throw new Error(`nginx -t rejected ${relative(ROOT, file)}:\n${t.stderr}${t.stdout}`);
  return start(name, 'nginx', ['-e', join(WORK, `${name}.error.log`), '-p', WORK, '-c', file], {
    marker: file,
    cpu,
  });
}

async function startBackends() {
  const ports = await freePorts(SHARDS);
  const procs = [];
  if (BACKEND === 'nginx') {
    const servers = ports
      .map(
        (p, i) => `  server { listen 127.0.0.1:${p}; location / { return 200 '{"shard":${i},"ok":true}'; } }`,
      )
      .join('\n');
    const conf = `${nginxCommon('backends')}http {
  access_log off;
  default_type application/json;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
${nginxTemp('backends')}
${servers}
}
`;
    const p = startNginx('backends', conf, LOAD_CPU);
    procs.push(p);
    await waitForPorts(p, ports);
  } else {
    for (let i = 0; i < SHARDS; i++)
      procs.push(
        start(`backend-${i}`, process.execPath, [join(BENCH, 'backend.mjs'), String(ports[i]), String(i)], {
          cpu: LOAD_CPU,
        }),
      );
    for (let i = 0; i < SHARDS; i++) await waitForPorts(procs[i], [ports[i]]);
  }
  return { ports, procs };
}

/** Starts one peer; {port, proc, notes}. `direct` starts nothing. */
async function startPeer(name, backendPorts) {
  if (name === 'direct') return { port: backendPorts[0], proc: undefined };
  const [port, adminPort] = await freePorts(2);
  let proc;
  if (name === 'nginx') {
    const servers = backendPorts.map((p) => `    server 127.0.0.1:${p};`).join('\n');
    const conf = `${nginxCommon('nginx-proxy')}http {
  access_log off;
${nginxTemp('nginx-proxy')}
  map $uri $key {
    ~^/(?:groups|users)/(?<k>[^/]+) $k;
    default $uri;
  }
  upstream shards {
    hash $key consistent;
${servers}
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port};
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    location / {
      proxy_pass http://shards;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
    proc = startNginx('nginx-proxy', conf, PROXY_CPU);
  } else if (name === 'haproxy') {
    const servers = backendPorts.map((p, i) => `  server s${i} 127.0.0.1:${p}`).join('\n');
    const file = join(WORK, 'haproxy.cfg');
    fs.writeFileSync(
      file,
      `global
  nbthread 1
  maxconn 4096

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s

frontend fe
  bind 127.0.0.1:${port}
  default_backend shards

backend shards
  # hash the 3rd '/'-separated field of the path: /groups/<key>/... -> <key>
  balance hash path,field(3,/)
  hash-type consistent
  http-reuse always
${servers}
`,
    );
    const c = spawnSync('haproxy', ['-c', '-q', '-f', file], { encoding: 'utf8', timeout: 10_000 });
    if (c.status !== 0)
      throw new Error(`haproxy -c rejected ${relative(ROOT, file)}:\n${c.stderr}${c.stdout}`);
    proc = start('haproxy', 'haproxy', ['-db', '-f', file], { marker: file, cpu: PROXY_CPU });
  } else if (name === 'shardchat' || name === 'shardchat-before') {
    const file = join(WORK, `${name}.yaml`);
    fs.writeFileSync(
      file,
      `topology: { targets: [${backendPorts.map((p) => `http://127.0.0.1:${p}`).join(', ')}] }
router: { host: 127.0.0.1, port: ${port}, adminPort: ${adminPort} }
log: { level: warn }
`,
    );
    const cli = name === 'shardchat' ? join(ROOT, 'dist/cli/main.js') : BASELINE_CLI;
    // extra node flags for the routers, e.g. ROUTER_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/rprof'
    const nodeArgs = (process.env.ROUTER_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
    proc = start(name, process.execPath, [...nodeArgs, cli, 'router', '--config', file], {
      marker: file,
      cpu: PROXY_CPU,
    });
  } else if (NODE_CANDIDATES.has(name)) {
    const script = join(BENCH, 'candidates', `${name}.mjs`);
    proc = start(name, process.execPath, [script, String(port), ...backendPorts.map(String)], {
      marker: script,
      cpu: PROXY_CPU,
    });
  } else {
    throw new Error(`unknown target ${name}`);
  }
  try {
    await waitForPorts(proc, [port]);
  } catch (err) {
    await stop(proc);
    throw err;
  }
  return { port, proc };
}

// ---------------------------------------------------------------- CPU accounting (Linux /proc)

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {}

/** Every live process in these process groups: [{pid, f}], f = /proc/<pid>/stat from field 3 (state) on. */
function groupProcs(pgids) {
  const want = new Set(pgids);
  const procs = [];
  if (want.size === 0) return procs;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state): pgrp is field 5
    if (want.has(Number(f[2]))) procs.push({ pid: Number(entry), f });
  }
  return procs;
}

/** User+system CPU seconds of every live process in these process groups. */
function groupCpu(pgids) {
  // utime is field 14, stime 15
  const ticks = groupProcs(pgids).reduce((sum, { f }) => sum + Number(f[11]) + Number(f[12]), 0);
  return ticks / CLK_TCK;
}

/** The CPUs the processes of these groups may run on (their distinct `Cpus_allowed_list`s, e.g. "1"). */
function groupAffinity(pgids) {
  const lists = new Set();
  for (const { pid } of groupProcs(pgids)) {
    try {
      const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) lists.add(m[1]);
    } catch {}
  }
  return [...lists].sort().join(' ');
}

/** Moves every process (all threads) of these groups to `cpu` (`taskset -a -p -c`). */
function pinGroups(pgids, cpu) {
  for (const { pid } of groupProcs(pgids)) {
    const r = spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], {
      encoding: 'utf8',
      timeout: 5000,
    });
    if (r.status !== 0) throw new Error(`taskset -a -p -c ${cpu} ${pid} failed: ${r.stderr}${r.stdout}`);
  }
}

/** CPU seconds of reaped children of this process (wrk, once it has exited) and of this process itself. */
function ownCpu() {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime 14, stime 15, cutime 16, cstime 17
  return {
    self: (Number(f[11]) + Number(f[12])) / CLK_TCK,
    children: (Number(f[13]) + Number(f[14])) / CLK_TCK,
  };
}

/** Busy CPU seconds of the whole machine (all CPUs), from /proc/stat. */
function machineBusy() {
  return busyOf(fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]);
}

/** Busy CPU seconds of each CPU (`cpu0`, `cpu1`, ... lines of /proc/stat), to see whether a pinned CPU saturates. */
function perCpuBusy() {
  return fs
    .readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .filter((l) => /^cpu\d+\s/.test(l))
    .map(busyOf);
}

function busyOf(statLine) {
  const f = statLine.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user + nice + system + irq + softirq + (steal || 0)) / CLK_TCK;
}

/**
 * Waits (at most QUIET_WAIT seconds) until the machine is idle apart from us: other
 * engineers' test runs on a shared 2-core machine would otherwise take CPU from the
 * run. Returns how long it waited and the last busy figure (cores).
 */
async function waitQuiet() {
  const t0 = Date.now();
  let busy = Number.NaN;
  if (QUIET_WAIT <= 0) return { waitedS: 0, busyCores: busy, quiet: undefined };
  for (;;) {
    const b0 = machineBusy();
    const w0 = process.hrtime.bigint();
    await sleep(1000);
    busy = (machineBusy() - b0) / (Number(process.hrtime.bigint() - w0) / 1e9);
    const waitedS = (Date.now() - t0) / 1000;
    if (busy < QUIET_CORES) return { waitedS, busyCores: busy, quiet: true };
    if (waitedS >= QUIET_WAIT) return { waitedS, busyCores: busy, quiet: false };
  }
}

// ---------------------------------------------------------------- wrk

const UNIT_MS = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
function toMs(text) {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text);
  return m ? Number(m[1]) * UNIT_MS[m[2]] : Number.NaN;
}

/** Parses wrk's --latency output: requests/s, p50/p75/p90/p99 (ms), counts and errors. */
function parseWrk(out) {
  const num = (re) => {
    const m = re.exec(out);
    return m ? Number(m[1]) : undefined;
  };
  const pct = {};
  for (const m of out.matchAll(/^\s+(50|75|90|99)%\s+([\d.]+(?:us|ms|s|m|h))\s*$/gm)) pct[m[1]] = toMs(m[2]);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const total = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(out);
  const r = {
    requestsPerSec: num(/^Requests\/sec:\s+([\d.]+)/m),
    p50Ms: pct['50'],
    p75Ms: pct['75'],
    p90Ms: pct['90'],
    p99Ms: pct['99'],
    requests: total ? Number(total[1]) : undefined,
    seconds: total ? toMs(`${total[2]}${total[3]}`) / 1000 : undefined,
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) ?? 0,
    socketErrors: sock
      ? { connect: +sock[1], read: +sock[2], write: +sock[3], timeout: +sock[4] }
      : { connect: 0, read: 0, write: 0, timeout: 0 },
  };
  if (r.requestsPerSec === undefined || r.p50Ms === undefined || r.p99Ms === undefined)
    throw new Error(`cannot parse wrk output:\n${out}`);
  return r;
}

async function wrk(port, durationS, { threads = THREADS, connections = CONNECTIONS } = {}) {
  const args = [
    '-t',
    String(threads),
    '-c',
    String(connections),
    '-d',
    `${durationS}s`,
    '--latency',
    '--timeout',
    '2s',
    '-s',
    KEYS_LUA,
    `http://127.0.0.1:${port}/`,
  ];
  const child = start('wrk', 'wrk', args, { marker: KEYS_LUA, cpu: LOAD_CPU });
  const killer = setTimeout(() => stop(child, 1000), (durationS + 20) * 1000);
  const { code, signal } = await child.exited;
  clearTimeout(killer);
  await stop(child, 500);
  const out = fs.readFileSync(child.logPath, 'utf8');
  if (code !== 0) throw new Error(`wrk exited with ${code ?? signal}:\n${out}`);
  return { ...parseWrk(out), raw: out };
}

// ---------------------------------------------------------------- measuring

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
};

/**
 * One measured wrk run against `port` (after waiting for a quiet machine), with the CPU
 * use of the proxy's process groups `pg`, the backends' `bg`, wrk and the rest of the machine.
 */
async function measuredWrk(port, pg, bg, load) {
  const quiet = await waitQuiet();
  if (quiet.quiet === false)
    process.stdout.write(
      `(machine still busy before the -c${load.connections} run: ${quiet.busyCores.toFixed(2)} cores after ${Math.round(quiet.waitedS)} s) `,
    );
  const load1 = os.loadavg()[0];
  const own0 = ownCpu();
  const cpu0 = {
    proxy: groupCpu(pg),
    backend: groupCpu(bg),
    machine: machineBusy(),
    perCpu: perCpuBusy(),
    t: process.hrtime.bigint(),
  };
  const w = await wrk(port, load.durationS, load);
  const wall = Number(process.hrtime.bigint() - cpu0.t) / 1e9;
  const own1 = ownCpu();
  const proxyCpu = pg.length ? (groupCpu(pg) - cpu0.proxy) / wall : null;
  const backendCpu = (groupCpu(bg) - cpu0.backend) / wall;
  const wrkCpu = (own1.children - own0.children) / wall;
  const machineCpu = (machineBusy() - cpu0.machine) / wall;
  const perCpu = perCpuBusy().map((b, i) => (b - (cpu0.perCpu[i] ?? 0)) / wall);
  // whatever else ran on the machine meanwhile: other users' work, steal, unattributed kernel time
  const otherCpu = Math.max(
    0,
    machineCpu - (proxyCpu ?? 0) - backendCpu - wrkCpu - (own1.self - own0.self) / wall,
  );
  const { raw, ...numbers } = w;
  return {
    raw,
    numbers: {
      ...numbers,
      proxyCpuCores: proxyCpu,
      backendCpuCores: backendCpu,
      wrkCpuCores: wrkCpu,
      machineCpuCores: machineCpu,
      otherCpuCores: otherCpu,
      perCpuBusyCores: perCpu,
      loadavg1Before: load1,
      idleBefore: quiet,
    },
  };
}

/**
 * One measured round of one target: start it, (pin it,) probe, warm up, the throughput
 * run, then the latency run (one connection) on the same warm process, stop it.
 * {run, latency, latencyError}: a failed latency run does not discard the throughput run.
 */
async function measure(name, backends, round) {
  let peer;
  for (let attempt = 1; ; attempt++) {
    try {
      peer = await startPeer(name, backends.ports);
      break;
    } catch (err) {
      if (attempt >= 2) throw err;
      log(`  ${name}: failed to start (${err.message.split('\n')[0]}); retrying once in 3 s`);
      await sleep(3000);
    }
  }
  const pg = peer.proc ? [peer.proc.pid] : [];
  const bg = backends.procs.map((p) => p.pid);
  // `direct` has no proxy: the backend takes the proxy's CPU, wrk stays on the load CPU
  const repin = PIN.enabled && name === 'direct';
  try {
    if (repin) pinGroups(bg, PROXY_CPU);
    let cpuAffinity;
    if (PIN.enabled) {
      cpuAffinity = {
        proxy: pg.length ? groupAffinity(pg) : null,
        backend: groupAffinity(bg),
        wrk: String(LOAD_CPU),
      };
      const want = {
        proxy: pg.length ? String(PROXY_CPU) : null,
        backend: String(repin ? PROXY_CPU : LOAD_CPU),
      };
      if (cpuAffinity.proxy !== want.proxy || cpuAffinity.backend !== want.backend)
        throw new Error(
          `${name}: CPU pinning did not take: proxy on CPUs ${cpuAffinity.proxy}, backends on ${cpuAffinity.backend} (want ${want.proxy}, ${want.backend})`,
        );
    }
    const shardsSeen = await probe(name, peer.port);
    if (WARMUP > 0) await wrk(peer.port, WARMUP);
    const alive = () => {
      if (peer.proc && (peer.proc.exitCode !== null || peer.proc.signalCode !== null))
        throw new Error(`${name} died during the run:\n${tail(peer.proc.logPath)}`);
    };
    const suffix = REPEAT > 1 ? `-${round}` : '';
    const t = await measuredWrk(peer.port, pg, bg, {
      threads: THREADS,
      connections: CONNECTIONS,
      durationS: DURATION,
    });
    alive();
    fs.writeFileSync(join(WORK, `wrk-${name}${suffix}.txt`), t.raw);
    const run = { ...t.numbers, shardsSeen, cpuAffinity };
    try {
      const l = await measuredWrk(peer.port, pg, bg, LATENCY_LOAD);
      alive();
      fs.writeFileSync(join(WORK, `wrk-c1-${name}${suffix}.txt`), l.raw);
      return { run, latency: { ...l.numbers, cpuAffinity } };
    } catch (err) {
      return { run, latencyError: err.message };
    }
  } finally {
    if (peer.proc) await stop(peer.proc);
    if (repin) pinGroups(bg, LOAD_CPU);
  }
}

/** The run with the median `key` of a target's runs (all of them kept when there are several). */
function summarize(name, runs, errors, key = 'requestsPerSec') {
  if (runs.length === 0) return { target: name, ok: false, error: errors.join('\n---\n') };
  const mid = median(runs.map((r) => r[key]));
  const chosen = runs.find((r) => r[key] === mid);
  return {
    target: name,
    ok: true,
    ...chosen,
    runs: REPEAT > 1 ? runs : undefined,
    failedRuns: errors.length ? errors : undefined,
  };
}

/** Latency runs: the median run by p50, and its p50 minus direct's. */
function summarizeLatency(names, runs, errors) {
  const results = names.map((t) => summarize(t, runs.get(t), errors.get(t), 'p50Ms'));
  const direct = results.find((r) => r.target === 'direct' && r.ok);
  for (const r of results)
    if (r.ok && direct && r.target !== 'direct') r.p50AddedVsDirectMs = r.p50Ms - direct.p50Ms;
  return results;
}

// ---------------------------------------------------------------- reporting

function versions() {
  const run = (cmd, args) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
    return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? '';
  };
  return {
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    node: process.version,
    nginx: run('nginx', ['-v']).replace(/^nginx version:\s*/, ''),
    haproxy: run('haproxy', ['-v'])
      .replace(/^HAProxy version\s*/, 'HAProxy ')
      .replace(/ - https:.*/, ''),
    wrk: run('wrk', ['-v']).replace(/ Copyright.*/, ''),
    kernel: `${os.type()} ${os.release()}`,
  };
}

const fmt = {
  rps: (x) => (x === undefined ? '-' : Math.round(x).toLocaleString('en-US')),
  ms: (x) => (x === undefined || Number.isNaN(x) ? '-' : `${x.toFixed(2)} ms`),
  ratio: (x) => (x === undefined ? '-' : `${x.toFixed(2)}x`),
  delta: (x) => (x === undefined ? '-' : `${x >= 0 ? '+' : ''}${x.toFixed(2)} ms`),
  cores: (x) => (x === null || x === undefined ? '-' : x.toFixed(2)),
};

function tableRows(results) {
  const nginx = results.find((r) => r.target === 'nginx' && r.ok);
  const direct = results.find((r) => r.target === 'direct' && r.ok);
  return results.map((r) => {
    if (!r.ok)
      return [
        r.target,
        'FAILED',
        '-',
        '-',
        '-',
        '-',
        '-',
        '-',
        '-',
        '-',
        r.error.split('\n')[0].slice(0, 90),
      ];
    return [
      r.target,
      fmt.rps(r.requestsPerSec),
      fmt.ms(r.p50Ms),
      fmt.ms(r.p99Ms),
      nginx ? fmt.ratio(r.requestsPerSec / nginx.requestsPerSec) : '-',
      direct && r.target !== 'direct' ? fmt.delta(r.p50Ms - direct.p50Ms) : '-',
      fmt.cores(r.proxyCpuCores),
      cpuPerRequest(r) === null ? '-' : `${cpuPerRequest(r).toFixed(1)} us`,
      nginx && cpuPerRequest(r) && cpuPerRequest(nginx)
        ? fmt.ratio(cpuPerRequest(nginx) / cpuPerRequest(r))
        : '-',
      fmt.cores(r.backendCpuCores),
      fmt.cores(r.wrkCpuCores),
      fmt.cores(r.otherCpuCores),
      errorsCell(r),
    ];
  });
}
/** The proxy's CPU time per request in microseconds (null for `direct`). */
const cpuPerRequest = (r) =>
  r.proxyCpuCores === null || r.proxyCpuCores === undefined || !r.requestsPerSec
    ? null
    : (r.proxyCpuCores / r.requestsPerSec) * 1e6;
const errorsCell = (r) => {
  const errs = r.non2xx + Object.values(r.socketErrors).reduce((a, b) => a + b, 0);
  return errs === 0 ? '0' : `${r.non2xx} non-2xx, ${JSON.stringify(r.socketErrors)}`;
};

/** The latency table: one request at a time, p50 added relative to `direct`. */
function latencyRows(results) {
  return results.map((r) =>
    r.ok
      ? [
          r.target,
          fmt.ms(r.p50Ms),
          fmt.ms(r.p99Ms),
          r.p50AddedVsDirectMs === undefined ? '-' : fmt.delta(r.p50AddedVsDirectMs),
          fmt.rps(r.requestsPerSec),
          fmt.cores(r.otherCpuCores),
          errorsCell(r),
        ]
      : [r.target, 'FAILED', '-', '-', '-', '-', r.error.split('\n')[0].slice(0, 90)],
  );
}
const LATENCY_HEADER = ['target', 'p50', 'p99', 'p50 added vs direct', 'requests/s', 'other CPU', 'errors'];

const HEADER = [
  'target',
  'requests/s',
  'p50',
  'p99',
  'vs nginx (req/s)',
  'p50 added vs direct',
  'proxy CPU',
  'proxy CPU/request',
  'vs nginx (CPU/request)',
  'backend CPU',
  'wrk CPU',
  'other CPU',
  'errors',
];

function printTable(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) =>
    cells
      .map((c, i) =>
        i === 0 || i === cells.length - 1 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]),
      )
      .join('  ')
      .trimEnd();
  log(line(header));
  log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) log(line(r));
}

/** A GitHub table, first column left-aligned, the others right-aligned, padded as the repo's formatter lays it out. */
function markdownTable(header, rows) {
  const esc = (c) => String(c).replaceAll('|', '\\|');
  const all = [header, ...rows].map((r) => r.map(esc));
  const widths = header.map((_, i) => Math.max(3, ...all.map((r) => r[i].length)));
  const line = (r) =>
    `| ${r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (i === 0 ? '-'.repeat(w) : `${'-'.repeat(w - 1)}:`)).join(' | ')} |`;
  return [line(all[0]), rule, ...all.slice(1).map(line)].join('\n');
}

/** Replaces the text between this harness's markers for `section` (appends the section when absent). */
function writeSection(section, body) {
  const begin = `<!-- BEGIN generated by bench/run.mjs: ${section} -->`;
  const end = `<!-- END generated by bench/run.mjs: ${section} -->`;
  let text = '';
  try {
    text = fs.readFileSync(RESULTS_MD, 'utf8');
  } catch {
    text = `# Benchmark results\n\nReproduce with \`npm run bench\` (see bench/README.md). The sections below are\noverwritten by bench/run.mjs; text outside them is kept.\n`;
  }
  text = spliceSection(text, begin, end, body.trim());
  fs.writeFileSync(RESULTS_MD, text);
  // keep `npm run lint` clean: biome formats Markdown in this repository
  const biome = join(ROOT, 'node_modules/.bin/biome');
  if (fs.existsSync(biome))
    spawnSync(biome, ['format', '--write', RESULTS_MD], { cwd: ROOT, stdio: 'ignore', timeout: 30_000 });
}

/** How the run pinned its processes, for the console and RESULTS.md. */
function pinningText() {
  return PIN.enabled
    ? `the proxy under test on CPU ${PROXY_CPU}, wrk and the backends on CPU ${LOAD_CPU} (for \`direct\`: the backend on CPU ${PROXY_CPU}, wrk on CPU ${LOAD_CPU})`
    : `off (${PIN.why}): the scheduler places wrk, the proxy and the backends`;
}

function machineLines(v, date) {
  return [
    `- machine: ${v.nproc} CPUs (\`nproc\`), ${v.cpu}, ${v.kernel}`,
    `- node ${v.node}; ${v.nginx}; ${v.haproxy}; ${v.wrk}`,
    `- date: ${date}`,
  ].join('\n');
}

/** Writes a results file, fractions rounded to 4 decimals. */
function writeJson(file, value) {
  const round = (_k, x) => (typeof x === 'number' && !Number.isInteger(x) ? Number(x.toFixed(4)) : x);
  fs.writeFileSync(file, `${JSON.stringify(value, round, 2)}\n`);
}

// ---------------------------------------------------------------- hash section

async function hashBench() {
  log('== XXH64: xxhash-wasm vs @node-rs/xxhash (bench/hash.mjs)');
  const r = spawnSync(process.execPath, [join(BENCH, 'hash.mjs'), '--json'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 180_000,
  });
  if (r.error || r.status !== 0)
    throw new Error(`bench/hash.mjs failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  for (const x of out.results)
    log(
      `  ${x.name.padEnd(56)} ${x.nsPerOp.toFixed(1).padStart(8)} ns/op  (min ${x.minNsPerOp.toFixed(1)}, max ${x.maxNsPerOp.toFixed(1)})`,
    );
  log(
    `  ${out.vectorsChecked} reference vectors (test/fixtures/shard-function-vectors.json) match both libraries`,
  );
  return out;
}

// ---------------------------------------------------------------- main

async function main() {
  reapStale();
  const date = new Date().toISOString();
  const v = versions();
  const tools = targets.length ? ['wrk'] : [];
  if (targets.includes('haproxy')) tools.push('haproxy');
  if (targets.length && (BACKEND === 'nginx' || targets.includes('nginx'))) tools.push('nginx');
  for (const tool of tools) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
      throw new Error(`${tool} is not installed (apt-get install nginx-light haproxy wrk)`);
  }
  if (!fs.existsSync(join(ROOT, 'dist/cli/main.js')))
    throw new Error('dist/ is missing: run `npm run build` (npm run bench does)');
  log(`shardchat bench: ${v.nproc} CPUs, node ${v.node}, ${v.nginx}, ${v.haproxy}, ${v.wrk}`);

  let hash;
  if (runHash) {
    hash = await hashBench();
    if (WRITE || !targets.length) {
      fs.mkdirSync(RESULTS_DIR, { recursive: true });
      writeJson(join(RESULTS_DIR, 'hash.json'), { date, machine: v, ...hash });
      writeSection(
        'hash',
        `## XXH64 implementations (bench/hash.mjs)

${machineLines(v, date)}
- ${hash.keys} keys x ${hash.rounds} rounds per trial, median of ${hash.trials} trials; all ${hash.vectorsChecked} keys of
  test/fixtures/shard-function-vectors.json hash to their \`xxh64\` under both libraries.

${markdownTable(
  ['implementation', 'ns/op (median)', 'min', 'max'],
  hash.results.map((x) => [x.name, x.nsPerOp.toFixed(1), x.minNsPerOp.toFixed(1), x.maxNsPerOp.toFixed(1)]),
)}`,
      );
    }
  }
  if (!targets.length) return;

  log(
    `\n== proxies: wrk -t${THREADS} -c${CONNECTIONS} -d${DURATION}s --latency -s bench/keys.lua (warm-up ${WARMUP}s), backends: ${BACKEND}`,
  );
  log(`   then ${LATENCY_WRK} on the same process (latency at one request at a time)`);
  log(`   CPU pinning: ${pinningText()}`);
  for (const f of fs.readdirSync(WORK))
    if (/^wrk-.*\.txt$/.test(f)) fs.rmSync(join(WORK, f), { force: true });
  const backends = await startBackends();
  log(`  backends on ${backends.ports.join(', ')}`);
  // Rounds are interleaved (every target once per round) so that slow drift on the
  // machine spreads over all targets rather than landing on one.
  const runs = new Map(targets.map((t) => [t, []]));
  const errors = new Map(targets.map((t) => [t, []]));
  const latencyRuns = new Map(targets.map((t) => [t, []]));
  const latencyErrors = new Map(targets.map((t) => [t, []]));
  for (let round = 1; round <= REPEAT && !shuttingDown; round++) {
    if (REPEAT > 1) log(` round ${round}/${REPEAT}`);
    for (const name of targets) {
      if (shuttingDown) break;
      process.stdout.write(`  ${name.padEnd(16)} `);
      try {
        const { run: r, latency: l, latencyError } = await measure(name, backends, round);
        runs.get(name).push(r);
        if (l) latencyRuns.get(name).push(l);
        else latencyErrors.get(name).push(latencyError);
        log(
          `${fmt.rps(r.requestsPerSec).padStart(8)} req/s  p50 ${fmt.ms(r.p50Ms)}  p99 ${fmt.ms(r.p99Ms)}  (other CPU ${fmt.cores(r.otherCpuCores)}, busy per CPU ${r.perCpuBusyCores.map(fmt.cores).join('/')});  ` +
            (l
              ? `-c1: p50 ${fmt.ms(l.p50Ms)}  p99 ${fmt.ms(l.p99Ms)}  (other CPU ${fmt.cores(l.otherCpuCores)})`
              : `-c1 FAILED: ${latencyError}`),
        );
      } catch (err) {
        errors.get(name).push(err.message);
        latencyErrors.get(name).push(err.message);
        log(`FAILED: ${err.message}`);
      }
      // a backend that died invalidates everything after it
      for (const p of backends.procs)
        if (p.exitCode !== null || p.signalCode !== null)
          throw new Error(`backend ${p.benchName} died:\n${tail(p.logPath)}`);
    }
  }
  const results = targets.map((t) => summarize(t, runs.get(t), errors.get(t)));
  const latency = summarizeLatency(targets, latencyRuns, latencyErrors);
  for (const p of backends.procs) await stop(p);

  log('');
  const rows = tableRows(results);
  printTable(HEADER, rows);
  log(
    `\n== latency at one request at a time: ${LATENCY_WRK}${REPEAT > 1 ? ` (median of ${REPEAT} rounds by p50)` : ''}`,
  );
  const lrows = latencyRows(latency);
  printTable(LATENCY_HEADER, lrows);

  if (!WRITE) {
    log(
      '\n(partial run: RESULTS.md and results/proxy.json left as they were; add --write to overwrite them)',
    );
    return;
  }
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const settings = {
    durationS: DURATION,
    warmupS: WARMUP,
    quietWaitS: QUIET_WAIT,
    connections: CONNECTIONS,
    threads: THREADS,
    repeat: REPEAT,
    backend: BACKEND,
    keys: 1000,
    latencyRun: { ...LATENCY_LOAD, command: LATENCY_WRK, chosenBy: 'median p50' },
    cpuPinning: PIN.enabled
      ? { proxy: PROXY_CPU, backends: LOAD_CPU, wrk: LOAD_CPU, directBackend: PROXY_CPU }
      : { off: PIN.why },
  };
  writeJson(join(RESULTS_DIR, 'proxy.json'), {
    date,
    machine: v,
    settings,
    results,
    latencyOneAtATime: latency,
  });
  const failed = results.filter((r) => !r.ok);
  const latencyFailed = latency.filter((r) => !r.ok);
  writeSection(
    'proxies',
    `## Shard-routing proxies (bench/run.mjs)

Reproduce: \`npm run bench\` (= \`npm run build && node bench/run.mjs\`).

${machineLines(v, date)}
- load: \`wrk -t${THREADS} -c${CONNECTIONS} -d${DURATION}s --latency -s bench/keys.lua\` (paths \`/groups/g<i>/messages\`, i in 0..999),
  after a ${WARMUP}s warm-up per target${QUIET_WAIT > 0 ? ` and a wait (at most ${QUIET_WAIT}s) for the rest of the machine to go idle` : ''}${REPEAT > 1 ? `; median of ${REPEAT} interleaved rounds by requests/s` : '; one measured run per target'}${fullRun ? '' : `; partial run (${targets.join(', ')})`}
- backends: ${BACKEND === 'nginx' ? 'one nginx process, 1 worker, 3 server blocks answering `return 200 \'{"shard":N,"ok":true}\'`' : '3 Node processes (bench/backend.mjs)'};
  every proxy runs in front of the same three; \`direct\` is wrk against backend 0 alone.
- CPU columns: user+system CPU seconds per wall second over the measured run (1.00 = one core busy), for the
  proxy's and the backends' process groups, wrk, and everything else on the machine (\`other\`: /proc/stat busy
  time minus the rest; high values mean the run shared the machine with other work and is less reliable).
- \`proxy CPU/request\`: the proxy's CPU time per request (proxy CPU / requests/s), and \`vs nginx (CPU/request)\`
  nginx's CPU per request divided by the target's: how many requests the target serves per CPU second relative to
  nginx. When the load side, not the proxy, limits requests/s, this ratio still compares the proxies themselves.
- CPU pinning (\`taskset\`): ${pinningText()}.
${
  PIN.enabled
    ? `- wrk takes about one core by itself and shares CPU ${LOAD_CPU} with the backends: when \`backend CPU\` + \`wrk CPU\` nears 1.00,
  the load side, not the proxy, limits requests/s.`
    : '- wrk itself takes about one core, so on a 2-CPU machine wrk, the proxy and the backends share 2 cores.'
}

${markdownTable(HEADER, rows)}
${failed.length ? `\nFailures:\n\n${failed.map((r) => `- ${r.target}:\n\n\`\`\`\n${r.error}\n\`\`\``).join('\n')}\n` : ''}
### Latency at one request at a time

\`${LATENCY_WRK}\` against each target right after its measured run above (the same warm process,
the same pinning${QUIET_WAIT > 0 ? ', after the same wait for an idle machine' : ''}). With one request in flight nothing queues, so
\`p50 added vs direct\` (the target's p50 minus \`direct\`'s) is the proxy's own added latency: what the issue's
"under 1 ms added p50 latency" target refers to. The table above shows throughput under load, where p50 is mostly
queueing.${REPEAT > 1 ? ` Median of ${REPEAT} rounds by p50 (p99 and the other columns from that run).` : ''}

${markdownTable(LATENCY_HEADER, lrows)}
${latencyFailed.length ? `\nFailures:\n\n${latencyFailed.map((r) => `- ${r.target}:\n\n\`\`\`\n${r.error}\n\`\`\``).join('\n')}\n` : ''}
Raw numbers: bench/results/proxy.json (\`results\`, and \`latencyOneAtATime\` for this table); wrk's own output of each
run: bench/.work/wrk-<target>${REPEAT > 1 ? '-<round>' : ''}.txt and bench/.work/wrk-c1-<target>${REPEAT > 1 ? '-<round>' : ''}.txt.`,
  );
  log(`\nwrote ${relative(ROOT, RESULTS_MD)} and ${relative(ROOT, join(RESULTS_DIR, 'proxy.json'))}`);
}

// The whole run is bounded: a watchdog ends it (and every process) when it overruns.
const perTarget =
  15 +
  15 +
  20 +
  REPEAT * (WARMUP + DURATION + 25 + QUIET_WAIT + 2 + LATENCY_LOAD.durationS + 20 + QUIET_WAIT + 2) +
  10;
const budgetS = 240 + targets.length * perTarget;
const watchdog = setTimeout(() => {
  process.stderr.write(`run.mjs: overran its ${budgetS} s budget; stopping everything\n`);
  killAllSync('SIGKILL');
  process.exit(124);
}, budgetS * 1000);

main()
  .then(async () => {
    await stopAll();
    clearTimeout(watchdog);
  })
  .catch(async (err) => {
    process.stderr.write(`run.mjs: ${err.stack ?? err.message}\n`);
    await stopAll();
    clearTimeout(watchdog);
    process.exitCode = 1;
  });
