// XXH64 micro-benchmark: xxhash-wasm (h64 on a JS string, what common/hash.ts uses)
// against @node-rs/xxhash (native xxh64), plus the project's wrapper and the whole
// ShardFunction.route per request path. Both libraries are first checked against
// test/fixtures/shard-function-vectors.json (key, xxh64 as a decimal string).
//   node bench/hash.mjs [--json] [--keys 1000] [--rounds 1000] [--trials 5]
// Run `npm run build` first (it imports dist/).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { xxh64 as nativeXxh64 } from '@node-rs/xxhash';
import xxhash from 'xxhash-wasm';
import { initHash, xxh64 as projectXxh64 } from '../dist/common/hash.js';
import { ShardFunction } from '../dist/common/shard-function.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    keys: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '1000' },
    trials: { type: 'string', default: '5' },
  },
});
const nKeys = Number(values.keys);
const rounds = Number(values.rounds);
const trials = Number(values.trials);

const { h64 } = await xxhash();
await initHash();

// 1. Correctness against the reference vectors.
const vectors = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/shard-function-vectors.json'), 'utf8'));
const mismatches = [];
for (const v of vectors) {
  const want = BigInt(v.xxh64);
  const got = {
    'xxhash-wasm': h64(v.key),
    '@node-rs/xxhash': nativeXxh64(v.key),
    'dist/common/hash.js': projectXxh64(v.key),
  };
  for (const [impl, h] of Object.entries(got)) {
    if (h !== want) mismatches.push({ impl, key: v.key, want: v.xxh64, got: h.toString() });
  }
}
if (mismatches.length) {
  process.stderr.write(
    `hash.mjs: XXH64 mismatches against the vectors:\n${JSON.stringify(mismatches, null, 1)}\n`,
  );
  process.exit(1);
}

// 2. Timing: the vector keys first, then group ids like the load test's, nKeys in all.
const keys = vectors.map((v) => v.key).slice(0, nKeys);
for (let i = 0; keys.length < nKeys; i++) keys.push(`g${i}`);
const paths = keys.map((k) => `/groups/${encodeURIComponent(k)}/messages`);
const sf = new ShardFunction({
  urlPattern: '^/(?:groups|users)/([^/]+)',
  header: 'x-group-id',
  onNoMatch: 'path',
  assignment: 'modulo',
});
const noHeaders = {};

const cases = {
  'xxhash-wasm h64(string)': () => {
    let acc = 0n;
    for (let r = 0; r < rounds; r++) for (let i = 0; i < keys.length; i++) acc ^= h64(keys[i]);
    return acc;
  },
  '@node-rs/xxhash xxh64(string)': () => {
    let acc = 0n;
    for (let r = 0; r < rounds; r++) for (let i = 0; i < keys.length; i++) acc ^= nativeXxh64(keys[i]);
    return acc;
  },
  'dist/common/hash.js xxh64 (wasm wrapper)': () => {
    let acc = 0n;
    for (let r = 0; r < rounds; r++) for (let i = 0; i < keys.length; i++) acc ^= projectXxh64(keys[i]);
    return acc;
  },
  'ShardFunction.route(path) (regex+decode+hash+modulo)': () => {
    let acc = 0;
    for (let r = 0; r < rounds; r++)
      for (let i = 0; i < paths.length; i++) {
        const res = sf.route(paths[i], noHeaders, 3);
        acc += res.kind === 'shard' ? res.shard : 0;
      }
    return BigInt(acc);
  },
};

const ops = rounds * keys.length;
const results = [];
let sink = 0n;
for (const [name, fn] of Object.entries(cases)) {
  sink ^= fn(); // warm-up: one full pass, lets the JIT settle
  const ns = [];
  for (let t = 0; t < trials; t++) {
    const t0 = process.hrtime.bigint();
    sink ^= fn();
    ns.push(Number(process.hrtime.bigint() - t0) / ops);
  }
  ns.sort((a, b) => a - b);
  results.push({
    name,
    nsPerOp: ns[Math.floor(ns.length / 2)],
    minNsPerOp: ns[0],
    maxNsPerOp: ns[ns.length - 1],
    trials: ns,
  });
}

const out = {
  keys: keys.length,
  rounds,
  trials,
  opsPerTrial: ops,
  vectorsChecked: vectors.length,
  vectorsMatch: true,
  node: process.version,
  results,
  sink: (sink & 1n).toString(),
};
if (values.json) {
  process.stdout.write(`${JSON.stringify(out)}\n`);
} else {
  process.stdout.write(
    `XXH64: ${keys.length} keys x ${rounds} rounds, median of ${trials} trials; ${vectors.length} reference vectors match\n`,
  );
  for (const r of results)
    process.stdout.write(
      `  ${r.name.padEnd(56)} ${r.nsPerOp.toFixed(1).padStart(8)} ns/op  (min ${r.minNsPerOp.toFixed(1)}, max ${r.maxNsPerOp.toFixed(1)})\n`,
    );
}
