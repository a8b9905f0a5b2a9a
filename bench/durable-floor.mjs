#!/usr/bin/env node
// What a durable HTTP write path in Node.js can reach on this machine at all, to read the
// shard's HTTP numbers against (issue 16's "HTTP POST >= 0.7x of SQLite alone").
//
//   node bench/durable-floor.mjs [--duration 8s] [--connections 64] [--groups 100]
//                                [--clients undici,wrk] [--via http,ws] [--ws-window 16]
//                                [--echo] [--rounds 1] [--quiet-wait 10s]
//
// The server is bench/durable-floor/server.mjs: bare node:http, JSON.parse of the body, a
// writer thread committing batches with the shard's own statements and schema (WAL,
// synchronous=FULL), 201 after the commit: none of the shard's authentication,
// membership, limits or fan-out. It is loaded by N keep-alive connections POSTing one
// message after the other, as bench/shard.mjs's HTTP rows do, from one of two clients:
// `undici` (the Pool in this process, the shard bench's own client) or `wrk` (C, with a
// Lua script making the distinct bodies). Then SQLite alone commits the same number of
// rows at the run's mean batch size (bench/sqlite-alone.mjs), and the ratio is printed.
// Every stored row is counted against the 201 answers (a run stores at least what it
// acknowledged; with wrk, requests still in flight when it stops may be stored unanswered).
// CPU: the server's (both threads) and the client's (this process for undici; wrk's
// process read from /proc every 100 ms), in cores and per acknowledged message.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Pool } from 'undici';
import WebSocket from 'ws';
import { benchCli, fmt, freePort, log, processCpu, ratio, selfCpu, sleep, waitQuiet } from './lib.mjs';
import { BenchProcesses, stopOnSignalsAndTimeout } from './processes.mjs';
import { sqliteAlone } from './sqlite-alone.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const WORK = join(ROOT, 'bench/.work/durable-floor');
const USAGE = `usage: node bench/durable-floor.mjs [options]
  --duration D       measured time of each run (default 8s)
  --connections N    keep-alive connections posting one message after the other (default 64)
  --groups N         groups the messages go to, round robin (default 100)
  --clients LIST     over HTTP: undici (the Pool in this process, as bench/shard.mjs) and/or wrk (default undici,wrk)
  --via LIST         http and/or ws (default http,ws); ws: CONNECTIONS WebSockets from this process, each with
                     --ws-window messages awaiting their ack, as bench/shard.mjs's WebSocket rows
  --ws-window N      messages awaiting their ack per WebSocket (default 16)
  --echo             over WebSockets, also send each message back as its group's \`message\` event after the
                     ack, as a shard does to the group's sockets (in this load, the sender's own socket)
  --rounds N         rounds, each client once per round (default 1)
  --quiet-wait D     before each run, wait up to D for the rest of the machine to be idle (default 10s)`;
const { opts, usage, seconds, positive } = benchCli(USAGE, {
  duration: { type: 'string', default: '8s' },
  connections: { type: 'string', default: '64' },
  groups: { type: 'string', default: '100' },
  clients: { type: 'string', default: 'undici,wrk' },
  rounds: { type: 'string', default: '1' },
  via: { type: 'string', default: 'http,ws' },
  'ws-window': { type: 'string', default: '16' },
  echo: { type: 'boolean', default: false },
  'quiet-wait': { type: 'string', default: '10s' },
});
const DURATION_S = seconds('duration', opts.duration);
const CONNECTIONS = positive('connections', opts.connections);
const GROUPS = positive('groups', opts.groups);
const ROUNDS = positive('rounds', opts.rounds);
const QUIET_WAIT_S = seconds('quiet-wait', opts['quiet-wait']);
const CLIENTS = opts.clients.split(',').map((c) => c.trim());
for (const c of CLIENTS) if (c !== 'undici' && c !== 'wrk') usage(`--clients: unknown ${JSON.stringify(c)}`);
const VIA = opts.via.split(',').map((v) => v.trim());
for (const v of VIA) if (v !== 'http' && v !== 'ws') usage(`--via: unknown ${JSON.stringify(v)}`);
const WS_WINDOW = positive('ws-window', opts['ws-window']);
/** The runs of a round: each HTTP client, then the WebSocket one. */
const RUNS = [...(VIA.includes('http') ? CLIENTS : []), ...(VIA.includes('ws') ? ['ws'] : [])];

const bp = new BenchProcesses({
  root: ROOT,
  work: WORK,
  mainJs: join(ROOT, 'bench/durable-floor/server.mjs'),
  pidsFile: join(WORK, 'pids.json'),
});
const cleanup = () => bp.stopAll(5000);
stopOnSignalsAndTimeout(cleanup, 600, 'the durable floor');

/** A fresh database with the shard's schema and GROUPS groups; closed again. */
async function freshDatabase(dir) {
  const { openDatabase } = await import(pathToFileURL(join(ROOT, 'dist/shard/storage/database.js')).href);
  fs.rmSync(dir, { recursive: true, force: true });
  const file = join(dir, 'floor.db');
  const { db } = openDatabase(dir, file);
  const now = Date.now();
  const put = db.prepare(
    `INSERT INTO groups (id, subject, owner, capacity, overflow, closed, epoch, last_msg_id, member_count, parent, created_at, updated_at)
     VALUES (?, ?, 'bench', 1250, 'reject', 0, 'e0', 0, 0, NULL, ?, ?)`,
  );
  db.transaction(() => {
    for (let i = 0; i < GROUPS; i++) put.run(`g${i}`, `g${i}`, now, now);
  })();
  db.close();
  return file;
}

async function stats(pool) {
  const r = await pool.request({ method: 'GET', path: '/stats' });
  return r.body.json();
}

/** The shard bench's client: CONNECTIONS loops, each POSTing and awaiting the answer. */
async function undiciLoad(pool, label) {
  let created = 0;
  let other = 0;
  const deadline = performance.now() + DURATION_S * 1000;
  const loop = async (w) => {
    for (let i = 0; performance.now() < deadline; i++) {
      const clientMsgId = `${label}-${w}-${i}`;
      const r = await pool.request({
        method: 'POST',
        path: `/groups/g${(w + i * CONNECTIONS) % GROUPS}/messages`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ contents: `bench message ${clientMsgId}`, clientMsgId }),
      });
      await r.body.dump();
      if (r.statusCode === 201) created++;
      else other++;
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, (_, w) => loop(w)));
  return { created, other };
}

/** CONNECTIONS WebSockets, socket w on group w mod GROUPS, WS_WINDOW messages awaiting their ack on each. */
async function wsLoad(port, label) {
  let created = 0;
  let other = 0;
  const deadline = performance.now() + DURATION_S * 1000;
  const sockets = await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { perMessageDeflate: false });
      const waiting = new Map();
      ws.on('message', (data) => {
        const ev = JSON.parse(data.toString());
        const done = waiting.get(ev.clientMsgId);
        waiting.delete(ev.clientMsgId);
        done?.(ev);
      });
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      return { ws, waiting };
    }),
  );
  const lane = async ({ ws, waiting }, w, k) => {
    for (let i = 0; performance.now() < deadline; i++) {
      const clientMsgId = `${label}-${w}-${k}-${i}`;
      const ev = await new Promise((resolve) => {
        waiting.set(clientMsgId, resolve);
        ws.send(
          JSON.stringify({
            groupId: `g${w % GROUPS}`,
            contents: `bench message ${clientMsgId}`,
            clientMsgId,
          }),
        );
      });
      if (ev.type === 'ack') created++;
      else other++;
    }
  };
  await Promise.all(sockets.flatMap((s, w) => Array.from({ length: WS_WINDOW }, (_, k) => lane(s, w, k))));
  for (const { ws } of sockets) ws.close();
  return { created, other };
}

const LUA = `local n = 0
local groups = ${GROUPS}
local threads = {}
created = 0
other = 0
function setup(thread) table.insert(threads, thread) end
local hdrs = { ["content-type"] = "application/json" }
function request()
  n = n + 1
  local id = os.getenv("FLOOR_LABEL") .. "-" .. n
  return wrk.format("POST", "/groups/g" .. (n % groups) .. "/messages", hdrs,
    '{"contents":"bench message ' .. id .. '","clientMsgId":"' .. id .. '"}')
end
function response(status, headers, body)
  if status == 201 then created = created + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local c, o = 0, 0
  for _, t in ipairs(threads) do c = c + t:get("created"); o = o + t:get("other") end
  io.write(string.format("FLOOR created %d other %d\\n", c, o))
end
`;

/** wrk, one thread, CONNECTIONS connections; its CPU is read from /proc while it runs. */
async function wrkLoad(port, label, onPid) {
  const script = join(WORK, 'post.lua');
  fs.writeFileSync(script, LUA);
  return new Promise((resolve, reject) => {
    const child = execFile(
      'wrk',
      ['-t1', `-c${CONNECTIONS}`, `-d${DURATION_S}s`, '-s', script, `http://127.0.0.1:${port}/`],
      { env: { ...process.env, FLOOR_LABEL: label }, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`wrk failed: ${err.message}\n${stderr}`));
        const m = /FLOOR created (\d+) other (\d+)/.exec(stdout);
        if (!m) return reject(new Error(`wrk printed no counts:\n${stdout}`));
        resolve({ created: Number(m[1]), other: Number(m[2]) });
      },
    );
    onPid(child.pid);
  });
}

async function run(client, round) {
  const dir = join(WORK, 'data');
  const file = await freshDatabase(dir);
  const port = await freePort();
  const server = bp.start(
    `server-${client}-${round}`,
    [String(port), file],
    { FLOOR_ECHO: opts.echo ? '1' : '0' },
    { capture: true },
  );
  await new Promise((resolve, reject) => {
    server.child.stdout.on('data', (d) => String(d).includes('listening') && resolve());
    server.child.once('exit', (code) => reject(new Error(`the floor server exited (${code})`)));
  });
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: CONNECTIONS, pipelining: 1 });
  try {
    const quiet = await waitQuiet(QUIET_WAIT_S, () => [server.pid]);
    const s0 = await stats(pool);
    const label = `${client}-${round}`;
    // wrk's CPU from /proc while it runs (sampled every 100 ms; the last sample before it exits).
    let wrkCpu0 = Number.NaN;
    let wrkCpu1 = Number.NaN;
    let sampler;
    const t0 = performance.now();
    const srv0 = processCpu(server.pid);
    const self0 = selfCpu();
    const load =
      client === 'wrk'
        ? await wrkLoad(port, label, (pid) => {
            wrkCpu0 = processCpu(pid);
            sampler = setInterval(() => {
              const c = processCpu(pid);
              if (Number.isFinite(c)) wrkCpu1 = c;
            }, 100);
          }).finally(() => clearInterval(sampler))
        : client === 'ws'
          ? await wsLoad(port, label)
          : await undiciLoad(pool, label);
    const wallS = (performance.now() - t0) / 1000;
    const serverCores = (processCpu(server.pid) - srv0) / wallS;
    const clientCores = client === 'wrk' ? (wrkCpu1 - wrkCpu0) / wallS : (selfCpu() - self0) / wallS;
    await sleep(200);
    const s1 = await stats(pool);
    const commits = s1.commits - s0.commits;
    const rows = s1.rows - s0.rows;
    const perS = load.created / wallS;
    const meanBatch = rows / commits;
    const alone = await sqliteAlone({
      root: ROOT,
      dir: join(WORK, 'sqlite-alone'),
      rows: Math.max(1000, Math.min(load.created, 50_000)),
      batch: meanBatch,
      groups: GROUPS,
    });
    const res = {
      client,
      round,
      perS,
      created: load.created,
      other: load.other,
      rows,
      commits,
      meanBatch,
      serverCores,
      serverUsPerMsg: ((serverCores * wallS) / load.created) * 1e6,
      clientCores,
      alone,
      vsAlone: perS / alone.rowsPerS,
      quiet,
    };
    log(
      `  ${client.padEnd(6)} ${fmt(perS)} msg/s (${fmt(load.created)} answered 201, ${load.other} other; ${fmt(rows)} stored), ` +
        `mean batch ${fmt(meanBatch, 1)}, server ${fmt(serverCores, 2)} cores (${fmt(res.serverUsPerMsg)} us/msg)` +
        `, client ${fmt(clientCores, 2)} cores (${fmt(((clientCores * wallS) / load.created) * 1e6)} us/msg); ` +
        `SQLite alone ${fmt(alone.rowsPerS)} rows/s at ${alone.batch} per commit: ${ratio(perS, alone.rowsPerS)}`,
    );
    if (rows < load.created) throw new Error(`stored ${rows} < acknowledged ${load.created}`);
    return res;
  } finally {
    await pool.close();
    await bp.stop(server);
  }
}

bp.reapLeftovers();
log(
  `durable floor: bare node:http (and ws) + a writer thread, ${CONNECTIONS} connections, ${GROUPS} groups, ${DURATION_S}s runs` +
    `${VIA.includes('ws') ? `, ${WS_WINDOW} in flight per WebSocket${opts.echo ? ', each message echoed as an event' : ''}` : ''}`,
);
try {
  for (let round = 1; round <= ROUNDS; round++) {
    log(` round ${round}/${ROUNDS}`);
    for (const client of RUNS) await run(client, round);
  }
} finally {
  await cleanup();
}
