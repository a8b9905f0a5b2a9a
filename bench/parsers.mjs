// The router's head parsers alone, in one process: nanoseconds per call of
// ResponseParser.consume on an nginx response, parseRequestHead and buildRequestHead.
//
//   node bench/parsers.mjs [--rounds 5] [--iterations 1000000] [--baseline-dir DIR]
//
// --baseline-dir times a second build (a worktree of an older commit, built, with
// dist/router) in the same process, round by round after this tree's, so the two are
// compared under the same machine state. Each figure is the median over the rounds.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const { values: opts } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    iterations: { type: 'string', default: '1000000' },
    'baseline-dir': { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (opts.help) {
  process.stdout.write(
    'usage: node bench/parsers.mjs [--rounds 5] [--iterations 1000000] [--baseline-dir DIR]\n',
  );
  process.exit(0);
}
const positive = (name, text) => {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${text}`);
  return n;
};
const ROUNDS = positive('rounds', opts.rounds);
const ITERATIONS = positive('iterations', opts.iterations);

// A response head as nginx 1.22 sends it for the benchmark backends, with its body.
const RESPONSE = Buffer.from(
  'HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 10:11:17 GMT\r\n' +
    'Content-Type: application/octet-stream\r\nContent-Length: 22\r\nConnection: keep-alive\r\n\r\n' +
    '{"shard":0,"ok":true}\n',
);
// The head wrk sends with bench/keys.lua, without its final CRLF CRLF (as the router hands it over).
const REQUEST = 'GET /groups/g123/messages HTTP/1.1\r\nHost: 127.0.0.1:8080';
const HEAD_OPTIONS = {
  shardHeader: '1/3',
  defaultHost: 'x',
  remoteAddress: '127.0.0.1',
  bodyLength: undefined,
  upgrade: false,
};

async function load(root, label) {
  const dist = (file) => pathToFileURL(path.join(root, 'dist', 'router', file)).href;
  const { ResponseParser } = await import(dist('response-parser.js'));
  const { parseRequestHead } = await import(dist('request-parser.js'));
  const { buildRequestHead } = await import(dist('request-head.js'));
  const parser = new ResponseParser(16384);
  const sink = { onHead() {}, onBody() {}, onEnd() {} };
  const request = parseRequestHead(REQUEST, 100); // throws if this build refuses it
  // Check once that the response is read whole, so a build that refuses it is not timed.
  let ended = false;
  parser.reset(
    {
      onHead() {},
      onBody() {},
      onEnd() {
        ended = true;
      },
    },
    'GET',
  );
  parser.consume(RESPONSE);
  if (!ended) throw new Error(`${label}: the benchmark response is not read to its end`);
  return {
    label,
    cases: {
      'response consume': () => {
        parser.reset(sink, 'GET');
        parser.consume(RESPONSE);
      },
      parseRequestHead: () => parseRequestHead(REQUEST, 100),
      buildRequestHead: () => buildRequestHead(request, HEAD_OPTIONS),
    },
  };
}

/** Nanoseconds per call of f over ITERATIONS calls, after ITERATIONS / 10 unmeasured. */
function time(f) {
  for (let i = 0; i < ITERATIONS / 10; i++) f();
  const start = process.hrtime.bigint();
  for (let i = 0; i < ITERATIONS; i++) f();
  return Number(process.hrtime.bigint() - start) / ITERATIONS;
}

const builds = [await load(path.join(HERE, '..'), 'this tree')];
if (opts['baseline-dir']) builds.push(await load(path.resolve(opts['baseline-dir']), 'baseline'));
const samples = new Map(); // `${build}\0${case}` -> ns per call, one per round
for (let round = 0; round < ROUNDS; round++) {
  for (const build of builds) {
    for (const [name, f] of Object.entries(build.cases)) {
      const key = `${build.label}\0${name}`;
      samples.set(key, [...(samples.get(key) ?? []), time(f)]);
    }
  }
}
const median = (xs) => {
  const q = [...xs].sort((a, b) => a - b);
  return q.length % 2 ? q[(q.length - 1) / 2] : (q[q.length / 2 - 1] + q[q.length / 2]) / 2;
};
process.stdout.write(
  `router head parsers: node ${process.version}, ${ITERATIONS.toLocaleString('en-US')} calls per round, median of ${ROUNDS} rounds (ns per call)\n`,
);
const names = Object.keys(builds[0].cases);
const header = [
  'case',
  ...builds.map((b) => b.label),
  ...(builds.length > 1 ? ['this tree / baseline'] : []),
];
const rows = names.map((name) => {
  const ns = builds.map((b) => median(samples.get(`${b.label}\0${name}`)));
  return [name, ...ns.map((x) => x.toFixed(0)), ...(ns.length > 1 ? [(ns[0] / ns[1]).toFixed(2)] : [])];
});
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells) =>
  cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
process.stdout.write(`${line(header)}\n${line(widths.map((w) => '-'.repeat(w)))}\n`);
for (const r of rows) process.stdout.write(`${line(r)}\n`);
