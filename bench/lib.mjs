// Helpers the benchmark scripts share: formatting, percentiles, CPU accounting from /proc,
// waiting for a quiet machine, free ports, bounded concurrency.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { parseArgs } from 'node:util';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Command-line checks of the bench scripts: `usage(message)` prints the script's usage
 * and exits 2. Durations are `10s`, `500ms` or `2m`, in seconds; counts whole and >= 1.
 */
export function argParsers(usage) {
  const seconds = (name, v) => {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v);
    if (!m) usage(`--${name} wants a duration like 10s, got ${JSON.stringify(v)}`);
    const n = Number(m[1]);
    return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n;
  };
  const positive = (name, v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 1_000_000) usage(`--${name} wants a positive integer, got ${v}`);
    return n;
  };
  const list = (name, v) => v.split(',').map((x) => positive(name, x.trim()));
  return { seconds, positive, list };
}
/**
 * A bench script's command line: parses `options` (node:util parseArgs, `--help` added),
 * prints `usageText` and exits 0 on --help or 2 on a bad option. Returns the values,
 * `usage(message)` for the script's own checks, and the argParsers.
 */
export function benchCli(usageText, options) {
  const usage = (message) => {
    process.stderr.write(`${message}\n\n${usageText}\n`);
    process.exit(2);
  };
  let opts;
  try {
    opts = parseArgs({
      options: { ...options, help: { type: 'boolean', short: 'h', default: false } },
    }).values;
  } catch (err) {
    usage(err.message);
  }
  if (opts.help) {
    process.stdout.write(`${usageText}\n`);
    process.exit(0);
  }
  return { opts, usage, ...argParsers(usage) };
}

/**
 * One request on an undici Pool: `{status, json, text}` (json undefined when the body is
 * not JSON); never throws on an HTTP error status.
 */
export async function request(pool, method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await pool.request({
    method,
    path,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
  });
  const text = await r.body.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: r.statusCode, json, text };
}

export const log = (s) => process.stdout.write(`${s}\n`);
export const fmt = (n, d = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d })
    : '-';
export const ms = (n) => (Number.isFinite(n) ? `${n.toFixed(2)} ms` : '-');
export const ratio = (n, target) => `${(n / target).toFixed(2)}x`;

export function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function latencyStats(values) {
  const a = Float64Array.from(values).sort();
  return {
    count: a.length,
    p50: percentile(a, 50),
    p90: percentile(a, 90),
    p99: percentile(a, 99),
    max: a.length ? a[a.length - 1] : Number.NaN,
  };
}

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // keep 100
}

function busyOf(statLine) {
  const f = statLine.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user + nice + system + irq + softirq + (steal || 0)) / CLK_TCK;
}

/** Busy CPU seconds of the whole machine (all CPUs), from /proc/stat. */
export function machineBusy() {
  try {
    return busyOf(fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]);
  } catch {
    return Number.NaN;
  }
}

/** user+system CPU seconds of one process (all its threads), from /proc/<pid>/stat. */
export function processCpu(pid) {
  if (!pid) return 0;
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

/** Write system calls a process made so far (`syscw` of /proc/<pid>/io: write, writev, send...). */
export function processWriteCalls(pid) {
  if (!pid) return Number.NaN;
  try {
    const m = /^syscw: (\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/io`, 'utf8'));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

export function selfCpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const sumCpu = (pids) => pids().reduce((a, pid) => a + processCpu(pid), 0);

/**
 * CPU use over a measured interval, in cores: the processes `pids()` names (the system
 * under test), this process (the load), and everything else on the machine.
 */
export function cpuMeter(pids) {
  const t0 = performance.now();
  const m0 = machineBusy();
  const s0 = sumCpu(pids);
  const c0 = selfCpu();
  return () => {
    const wall = (performance.now() - t0) / 1000;
    const serverCores = (sumCpu(pids) - s0) / wall;
    const clientCores = (selfCpu() - c0) / wall;
    const machineCores = (machineBusy() - m0) / wall;
    return {
      wallS: wall,
      serverCores,
      clientCores,
      machineCores,
      otherCores: Math.max(0, machineCores - serverCores - clientCores),
      loadavg: os.loadavg(),
    };
  };
}

/**
 * Waits (at most maxS seconds) until the rest of the machine (all but `pids()` and this
 * process) is idle: under 0.2 busy cores over one second. Returns what it saw.
 */
export async function waitQuiet(maxS, pids) {
  const t0 = Date.now();
  if (maxS <= 0) return { waitedS: 0, busyCores: Number.NaN, quiet: undefined };
  for (let i = 0; i < 600; i++) {
    const b0 = machineBusy();
    const s0 = sumCpu(pids);
    const c0 = selfCpu();
    const w0 = performance.now();
    await sleep(1000);
    const wall = (performance.now() - w0) / 1000;
    const busy = (machineBusy() - b0 - (sumCpu(pids) - s0 || 0) - (selfCpu() - c0)) / wall;
    const waitedS = (Date.now() - t0) / 1000;
    if (busy < 0.2) return { waitedS, busyCores: busy, quiet: true };
    if (waitedS >= maxS) return { waitedS, busyCores: busy, quiet: false };
  }
  return { waitedS: (Date.now() - t0) / 1000, busyCores: Number.NaN, quiet: false };
}

/** Runs fn over items with at most `limit` at a time. */
export async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Prometheus text: the sum of a metric's samples whose labels include `labels`. */
export function metricSum(text, name, labels = {}) {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = {};
    for (const kv of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      got[kv[1]] = kv[2];
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) sum += Number(m[4]);
  }
  return sum;
}

/** The first of n consecutive free loopback ports (for a shard address template `{ordinal+BASE}`). */
export async function freePortRange(n, lo = 20000, hi = 60000) {
  const listen = (p) =>
    new Promise((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(undefined));
      srv.listen(p, '127.0.0.1', () => resolve(srv));
    });
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = lo + Math.floor(Math.random() * (hi - lo - n));
    const servers = [];
    for (let p = base; p < base + n; p++) {
      const srv = await listen(p);
      if (!srv) break;
      servers.push(srv);
    }
    await Promise.all(servers.map((s) => new Promise((r) => s.close(() => r()))));
    if (servers.length === n) return base;
  }
  throw new Error(`no ${n} consecutive free ports in ${lo}-${hi}`);
}
