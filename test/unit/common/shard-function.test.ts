/**
 * The shard function (docs/architecture.md section 1): reference vectors, key extraction, hashing
 * and assignment, plus properties of both assignments under fast-check.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { xxh64 as nativeXxh64 } from '@node-rs/xxhash';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { assign, jumpShard, moduloShard } from '../../../common/assignment.js';
import { initHash, xxh64 } from '../../../common/hash.js';
import {
  DEFAULT_SHARD_SPEC,
  decodeKey,
  pathOf,
  ShardFunction,
  type ShardSpec,
} from '../../../common/shard-function.js';

interface Vector {
  key: string;
  xxh64: string;
  modulo: Record<string, number>;
  jump: Record<string, number>;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const fixtureFile = path.join(repoRoot, 'test/fixtures/shard-function-vectors.json');
const sharedFile = path.resolve(repoRoot, '../shared/shard-function-vectors.json');
const vectors = JSON.parse(readFileSync(fixtureFile, 'utf8')) as Vector[];

function sf(overrides: Partial<ShardSpec> = {}): ShardFunction {
  return new ShardFunction({ ...DEFAULT_SHARD_SPEC, ...overrides });
}

beforeAll(async () => {
  await initHash();
});

describe('reference vectors', () => {
  it('the fixture holds a non-trivial set of vectors', () => {
    expect(vectors.length).toBeGreaterThanOrEqual(5);
    for (const v of vectors) {
      expect(typeof v.key).toBe('string');
      expect(v.xxh64).toMatch(/^\d+$/);
      expect(Object.keys(v.modulo).length).toBeGreaterThan(0);
      expect(Object.keys(v.jump).length).toBeGreaterThan(0);
    }
    // The vectors cover non-ASCII keys and keys longer than one 32-byte XXH64 stripe.
    expect(vectors.some((v) => Buffer.byteLength(v.key, 'utf8') !== v.key.length)).toBe(true);
    expect(vectors.some((v) => Buffer.byteLength(v.key, 'utf8') > 32)).toBe(true);
  });

  it.skipIf(!existsSync(sharedFile))('the repo copy equals ../shared/shard-function-vectors.json', () => {
    const shared = JSON.parse(readFileSync(sharedFile, 'utf8')) as unknown;
    expect(vectors).toEqual(shared);
  });

  describe.each(
    vectors.map((v) => [v.key.length > 24 ? `${v.key.slice(0, 24)}… (${v.key.length})` : v.key, v] as const),
  )('key %s', (_label, v) => {
    it('xxh64 reproduces the reference hash', () => {
      expect(xxh64(v.key)).toBe(BigInt(v.xxh64));
      expect(xxh64(v.key).toString()).toBe(v.xxh64);
    });

    it('modulo assignment reproduces every listed S', () => {
      const h = BigInt(v.xxh64);
      for (const [s, shard] of Object.entries(v.modulo)) {
        const S = Number(s);
        expect(moduloShard(h, S), `modulo S=${S}`).toBe(shard);
        expect(assign(h, S, 'modulo'), `assign modulo S=${S}`).toBe(shard);
        expect(sf({ assignment: 'modulo' }).shardOfKey(v.key, S)).toBe(shard);
      }
    });

    it('jump assignment reproduces every listed S', () => {
      const h = BigInt(v.xxh64);
      for (const [s, shard] of Object.entries(v.jump)) {
        const S = Number(s);
        expect(jumpShard(h, S), `jump S=${S}`).toBe(shard);
        expect(assign(h, S, 'jump'), `assign jump S=${S}`).toBe(shard);
        expect(sf({ assignment: 'jump' }).shardOfKey(v.key, S)).toBe(shard);
      }
    });

    it('route() through the header rule yields the reference hash and shards', () => {
      for (const assignment of ['modulo', 'jump'] as const) {
        const f = sf({ assignment });
        for (const [s, shard] of Object.entries(v[assignment])) {
          const r = f.route('/health', { 'x-group-id': v.key }, Number(s));
          expect(r).toEqual({ kind: 'shard', shard, key: v.key, hash: BigInt(v.xxh64), rule: 'header' });
        }
      }
    });
  });

  it('/groups/<key> routes like the key itself (urlPattern rule, percent-encoded path)', () => {
    for (const v of vectors) {
      if (v.key.includes('/')) continue;
      const r = sf().route(`/groups/${encodeURIComponent(v.key)}/messages`, undefined, 4);
      expect(r).toEqual({
        kind: 'shard',
        shard: v.modulo['4'],
        key: v.key,
        hash: BigInt(v.xxh64),
        rule: 'urlPattern',
      });
    }
  });
});

describe('hash', () => {
  it('matches an independent XXH64 (native @node-rs/xxhash) over the UTF-8 bytes, seed 0', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 200 }), (s) => {
        expect(xxh64(s)).toBe(nativeXxh64(Buffer.from(s, 'utf8'), 0n));
      }),
      { numRuns: 500 },
    );
  });

  it('is an unsigned 64-bit integer', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        const h = xxh64(s);
        expect(typeof h).toBe('bigint');
        expect(h >= 0n && h < 1n << 64n).toBe(true);
      }),
    );
  });

  it('of the empty string is the XXH64 constant EF46DB3751D8E999', () => {
    expect(xxh64('')).toBe(0xef46db3751d8e999n);
  });
});

describe('assignment', () => {
  const hashArb = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
  const shardsArb = fc.integer({ min: 1, max: 1000 });

  it('modulo is h mod S on the full 64 bits (not a 53-bit number)', () => {
    // 2^64 - 1 is not representable as a double; reduce it exactly.
    const h = (1n << 64n) - 1n;
    expect(moduloShard(h, 10)).toBe(5); // 18446744073709551615 mod 10
    expect(moduloShard(h, 3)).toBe(0);
    expect(moduloShard(h, 7)).toBe(Number(h % 7n));
    expect(moduloShard(2n ** 53n + 1n, 2)).toBe(1);
  });

  it('assign refuses a shard count that is not a positive integer', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => assign(1n, bad, 'modulo')).toThrow(RangeError);
      expect(() => assign(1n, bad, 'jump')).toThrow(RangeError);
    }
  });

  it('with one shard everything goes to shard 0', () => {
    fc.assert(
      fc.property(hashArb, (h) => {
        expect(assign(h, 1, 'modulo')).toBe(0);
        expect(assign(h, 1, 'jump')).toBe(0);
      }),
    );
  });

  it('always yields an integer in [0, S) for S in 1..1000 under both assignments', () => {
    fc.assert(
      fc.property(hashArb, shardsArb, fc.constantFrom('modulo' as const, 'jump' as const), (h, S, a) => {
        const shard = assign(h, S, a);
        expect(Number.isInteger(shard)).toBe(true);
        expect(shard).toBeGreaterThanOrEqual(0);
        expect(shard).toBeLessThan(S);
      }),
      { numRuns: 2000 },
    );
  });

  it('is deterministic: same key, same shard, across calls and ShardFunction instances', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1 }),
        shardsArb,
        fc.constantFrom('modulo' as const, 'jump' as const),
        (key, S, a) => {
          const one = sf({ assignment: a, header: 'x-k' }).route('/', { 'x-k': key }, S);
          const two = sf({ assignment: a, header: 'x-k' }).route('/', { 'x-k': key }, S);
          expect(two).toEqual(one);
          expect(xxh64(key)).toBe(xxh64(key));
          expect(assign(xxh64(key), S, a)).toBe(assign(xxh64(key), S, a));
        },
      ),
    );
  });

  it('jump agrees with a separately written Lamping-Veach reference for large S', () => {
    // Written from the paper's C++ code with BigInt.asUintN for the 64-bit wrap-around.
    const reference = (key0: bigint, buckets: number): number => {
      let key = key0;
      let b = -1n;
      let j = 0n;
      while (j < BigInt(buckets)) {
        b = j;
        key = BigInt.asUintN(64, key * 2862933555777941757n + 1n);
        j = BigInt(Math.floor(Number(b + 1n) * (Number(1n << 31n) / Number((key >> 33n) + 1n))));
      }
      return Number(b);
    };
    fc.assert(
      fc.property(hashArb, fc.integer({ min: 1, max: 1 << 20 }), (h, S) => {
        expect(jumpShard(h, S)).toBe(reference(h, S));
      }),
      { numRuns: 1000 },
    );
  });

  it('growing S to S+1 under jump moves keys only to the new shard S', () => {
    fc.assert(
      fc.property(hashArb, fc.integer({ min: 1, max: 1000 }), (h, S) => {
        const before = jumpShard(h, S);
        const after = jumpShard(h, S + 1);
        if (after !== before) expect(after).toBe(S);
      }),
      { numRuns: 3000 },
    );
  });

  const keySet = fc.uniqueArray(fc.string({ minLength: 1, maxLength: 24 }), {
    minLength: 3000,
    maxLength: 3000,
  });
  /** Tolerance for a binomial share p over n keys: 5 standard deviations plus a little slack. */
  const tolerance = (p: number, n: number) => 5 * Math.sqrt((p * (1 - p)) / n) + 0.005;

  it('jump moves about 1/(S+1) of the keys when growing S to S+1, all to shard S', () => {
    fc.assert(
      fc.property(keySet, fc.integer({ min: 1, max: 60 }), (keys, S) => {
        let moved = 0;
        for (const key of keys) {
          const h = xxh64(key);
          const a = jumpShard(h, S);
          const b = jumpShard(h, S + 1);
          if (a !== b) {
            expect(b).toBe(S);
            moved++;
          }
        }
        const share = moved / keys.length;
        expect(Math.abs(share - 1 / (S + 1))).toBeLessThan(tolerance(1 / (S + 1), keys.length));
      }),
      { numRuns: 15 },
    );
  });

  it('modulo moves about S/(S+1) of the keys when growing S to S+1', () => {
    fc.assert(
      fc.property(keySet, fc.integer({ min: 1, max: 60 }), (keys, S) => {
        let moved = 0;
        for (const key of keys) {
          const h = xxh64(key);
          if (moduloShard(h, S) !== moduloShard(h, S + 1)) moved++;
        }
        const share = moved / keys.length;
        expect(Math.abs(share - S / (S + 1))).toBeLessThan(tolerance(S / (S + 1), keys.length));
      }),
      { numRuns: 15 },
    );
  });

  it('both assignments spread keys roughly evenly over the shards', () => {
    const n = 12000;
    const S = 6;
    for (const a of ['modulo', 'jump'] as const) {
      const counts = new Array<number>(S).fill(0);
      for (let i = 0; i < n; i++) {
        const s = assign(xxh64(`group-${i}`), S, a);
        counts[s] = (counts[s] ?? 0) + 1;
      }
      for (const c of counts) expect(Math.abs(c / n - 1 / S)).toBeLessThan(tolerance(1 / S, n));
    }
  });
});

describe('key extraction (ShardFunction.keyOf / route)', () => {
  it('default pattern: the id after /groups/ or /users/', () => {
    expect(sf().keyOf('/groups/lobby')).toEqual({ kind: 'key', key: 'lobby', rule: 'urlPattern' });
    expect(sf().keyOf('/groups/lobby/messages')).toEqual({ kind: 'key', key: 'lobby', rule: 'urlPattern' });
    expect(sf().keyOf('/users/alice')).toEqual({ kind: 'key', key: 'alice', rule: 'urlPattern' });
    expect(sf().keyOf('/users/alice', {})).toEqual({ kind: 'key', key: 'alice', rule: 'urlPattern' });
  });

  it('the header wins over the path', () => {
    expect(sf().keyOf('/groups/lobby', { 'x-group-id': 'other' })).toEqual({
      kind: 'key',
      key: 'other',
      rule: 'header',
    });
    const viaHeader = sf().route('/groups/lobby', { 'x-group-id': 'alice' }, 10);
    const viaPath = sf().route('/users/alice', undefined, 10);
    expect(viaHeader.kind).toBe('shard');
    if (viaHeader.kind === 'shard' && viaPath.kind === 'shard') {
      expect(viaHeader.key).toBe('alice');
      expect(viaHeader.shard).toBe(viaPath.shard);
      expect(viaHeader.hash).toBe(viaPath.hash);
      expect(viaHeader.rule).toBe('header');
      expect(viaPath.rule).toBe('urlPattern');
    }
  });

  it('an empty or absent header value falls through to the path', () => {
    expect(sf().keyOf('/groups/lobby', { 'x-group-id': '' })).toEqual({
      kind: 'key',
      key: 'lobby',
      rule: 'urlPattern',
    });
    expect(sf().keyOf('/groups/lobby', { 'x-group-id': undefined })).toEqual({
      kind: 'key',
      key: 'lobby',
      rule: 'urlPattern',
    });
    expect(sf().keyOf('/groups/lobby', { 'x-other': 'zzz' })).toEqual({
      kind: 'key',
      key: 'lobby',
      rule: 'urlPattern',
    });
  });

  it('a repeated header uses its first value', () => {
    expect(sf().keyOf('/groups/lobby', { 'x-group-id': ['first', 'second'] })).toEqual({
      kind: 'key',
      key: 'first',
      rule: 'header',
    });
  });

  it('the configured header name is matched case-insensitively (headers arrive lower-cased)', () => {
    expect(sf({ header: 'X-Tenant' }).keyOf('/groups/lobby', { 'x-tenant': 't1' })).toEqual({
      kind: 'key',
      key: 't1',
      rule: 'header',
    });
  });

  it("header '' turns the header rule off", () => {
    expect(sf({ header: '' }).keyOf('/groups/lobby', { 'x-group-id': 'other', '': 'x' })).toEqual({
      kind: 'key',
      key: 'lobby',
      rule: 'urlPattern',
    });
  });

  it('the named group `key` wins over group 1', () => {
    const f = sf({ urlPattern: '^/(groups|users)/(?<key>[^/]+)' });
    expect(f.keyOf('/groups/lobby')).toEqual({ kind: 'key', key: 'lobby', rule: 'urlPattern' });
    expect(f.keyOf('/users/alice/x')).toEqual({ kind: 'key', key: 'alice', rule: 'urlPattern' });
  });

  it('without a group named `key`, capture group 1 is the key (even if it is named otherwise)', () => {
    expect(sf({ urlPattern: '^/(groups|users)/([^/]+)' }).keyOf('/users/alice')).toEqual({
      kind: 'key',
      key: 'users',
      rule: 'urlPattern',
    });
    expect(sf({ urlPattern: '^/(?<kind>groups|users)/([^/]+)' }).keyOf('/users/alice')).toEqual({
      kind: 'key',
      key: 'users',
      rule: 'urlPattern',
    });
    expect(sf({ urlPattern: '^/t/(?<tenant>[^/]+)' }).keyOf('/t/acme/x')).toEqual({
      kind: 'key',
      key: 'acme',
      rule: 'urlPattern',
    });
  });

  it('an empty capture is no key: onNoMatch applies', () => {
    const f = sf({ urlPattern: '^/groups/([^/]*)' });
    expect(f.keyOf('/groups/')).toEqual({ kind: 'key', key: '/groups/', rule: 'path' });
    expect(sf({ urlPattern: '^/groups/([^/]*)', onNoMatch: 'reject' }).keyOf('/groups/')).toEqual({
      kind: 'reject',
    });
    // An optional group that did not take part in the match.
    expect(sf({ urlPattern: '^/x(?:/([^/]+))?', onNoMatch: 1 }).keyOf('/x')).toEqual({
      kind: 'fixed',
      shard: 1,
    });
  });

  it("onNoMatch 'path': the whole path is the key", () => {
    expect(sf().keyOf('/healthz')).toEqual({ kind: 'key', key: '/healthz', rule: 'path' });
    expect(sf().keyOf('/')).toEqual({ kind: 'key', key: '/', rule: 'path' });
    const r = sf().route('/healthz', undefined, 3);
    expect(r).toEqual({
      kind: 'shard',
      shard: Number(xxh64('/healthz') % 3n),
      key: '/healthz',
      hash: xxh64('/healthz'),
      rule: 'path',
    });
  });

  it("onNoMatch 'reject': no key, never hashed", () => {
    const f = sf({ onNoMatch: 'reject' });
    expect(f.keyOf('/healthz')).toEqual({ kind: 'reject' });
    expect(f.route('/healthz', undefined, 3)).toEqual({ kind: 'reject' });
    // A header still routes such a path.
    expect(f.keyOf('/healthz', { 'x-group-id': 'lobby' })).toEqual({
      kind: 'key',
      key: 'lobby',
      rule: 'header',
    });
  });

  it('onNoMatch <number>: a fixed shard', () => {
    const f = sf({ onNoMatch: 2 });
    expect(f.keyOf('/healthz')).toEqual({ kind: 'fixed', shard: 2 });
    expect(f.route('/healthz', undefined, 3)).toEqual({ kind: 'fixed', shard: 2 });
    expect(sf({ onNoMatch: 0 }).route('/', undefined, 3)).toEqual({ kind: 'fixed', shard: 0 });
    // Matching paths are unaffected.
    expect(f.route('/groups/lobby', undefined, 3)).toMatchObject({ kind: 'shard', key: 'lobby' });
  });

  it('percent-decodes the key: lobby%7E1 and lobby~1 are the same key', () => {
    const encoded = sf().route('/groups/lobby%7E1', undefined, 10);
    const plain = sf().route('/groups/lobby~1', undefined, 10);
    expect(encoded).toEqual(plain);
    expect(encoded).toEqual({
      kind: 'shard',
      key: 'lobby~1',
      hash: 2659047086184378660n,
      shard: 0,
      rule: 'urlPattern',
    });
    expect(sf().route('/groups/lobby%7e1', undefined, 10)).toEqual(plain);
    // The header rule and the path rule decode too.
    expect(sf().keyOf('/x', { 'x-group-id': 'lobby%7E1' })).toEqual({
      kind: 'key',
      key: 'lobby~1',
      rule: 'header',
    });
    expect(sf().keyOf('/a%20b')).toEqual({ kind: 'key', key: '/a b', rule: 'path' });
    // Multi-byte UTF-8 escapes.
    expect(sf().keyOf(`/users/${encodeURIComponent('ünïcødé')}`)).toEqual({
      kind: 'key',
      key: 'ünïcødé',
      rule: 'urlPattern',
    });
  });

  it('decodes exactly once (%257E is the key %7E, not ~)', () => {
    expect(sf().keyOf('/groups/lobby%257E1')).toEqual({ kind: 'key', key: 'lobby%7E1', rule: 'urlPattern' });
  });

  it('a malformed escape gives kind malformed with the raw key', () => {
    for (const raw of ['lobby%', 'lobby%7', 'lobby%zz', '%E0%A4%A', '%FF', '%C3']) {
      expect(sf().keyOf(`/groups/${raw}`), raw).toEqual({ kind: 'malformed', raw });
      expect(sf().route(`/groups/${raw}`, undefined, 3), raw).toEqual({ kind: 'malformed', raw });
    }
    expect(sf().keyOf('/x', { 'x-group-id': 'a%G1' })).toEqual({ kind: 'malformed', raw: 'a%G1' });
    expect(sf().keyOf('/bad%')).toEqual({ kind: 'malformed', raw: '/bad%' });
  });

  it('decodeKey: identity without %, undefined when malformed', () => {
    expect(decodeKey('plain')).toBe('plain');
    expect(decodeKey('a%2Fb')).toBe('a/b');
    expect(decodeKey('a+b')).toBe('a+b');
    expect(decodeKey('%')).toBeUndefined();
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => {
        expect(decodeKey(encodeURIComponent(s))).toBe(s);
      }),
    );
  });

  it("the Metaparticle tutorial's pattern \\/users\\/(.*)[^\\/] turns /users/alice into alic (the classic mistake)", () => {
    const metaparticle = sf({ urlPattern: '\\/users\\/(.*)[^\\/]' });
    expect(metaparticle.keyOf('/users/alice')).toEqual({ kind: 'key', key: 'alic', rule: 'urlPattern' });
    // ...and swallows the rest of the path, so /users/alice/messages is yet another key.
    expect(metaparticle.keyOf('/users/alice/messages')).toEqual({
      kind: 'key',
      key: 'alice/message',
      rule: 'urlPattern',
    });
    // The default pattern gets it right.
    expect(sf().keyOf('/users/alice')).toEqual({ kind: 'key', key: 'alice', rule: 'urlPattern' });
    expect(sf().keyOf('/users/alice/messages')).toEqual({ kind: 'key', key: 'alice', rule: 'urlPattern' });
  });

  it('the pattern is not anchored unless it says so', () => {
    expect(sf().keyOf('/api/groups/lobby')).toEqual({ kind: 'key', key: '/api/groups/lobby', rule: 'path' });
    expect(sf({ urlPattern: '/groups/([^/]+)' }).keyOf('/api/groups/lobby')).toEqual({
      kind: 'key',
      key: 'lobby',
      rule: 'urlPattern',
    });
  });

  it('ShardFunction copies its spec (later mutation of the input does not change routing)', () => {
    const spec: ShardSpec = { ...DEFAULT_SHARD_SPEC };
    const f = new ShardFunction(spec);
    spec.assignment = 'jump';
    spec.onNoMatch = 'reject';
    expect(f.spec.assignment).toBe('modulo');
    expect(f.keyOf('/healthz')).toEqual({ kind: 'key', key: '/healthz', rule: 'path' });
  });

  it('route uses the configured assignment', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), fc.integer({ min: 1, max: 1000 }), (key, S) => {
        const h = xxh64(key);
        const jm = sf({ assignment: 'jump', header: 'x-k' }).route(
          '/',
          { 'x-k': encodeURIComponent(key) },
          S,
        );
        const md = sf({ assignment: 'modulo', header: 'x-k' }).route(
          '/',
          { 'x-k': encodeURIComponent(key) },
          S,
        );
        expect(jm).toEqual({ kind: 'shard', shard: jumpShard(h, S), key, hash: h, rule: 'header' });
        expect(md).toEqual({ kind: 'shard', shard: moduloShard(h, S), key, hash: h, rule: 'header' });
      }),
    );
  });
});

describe('pathOf', () => {
  it('returns an origin-form target unchanged when it has no query or fragment', () => {
    expect(pathOf('/groups/lobby')).toBe('/groups/lobby');
    expect(pathOf('/')).toBe('/');
    expect(pathOf('//double//slashes')).toBe('//double//slashes');
  });

  it('strips the query string', () => {
    expect(pathOf('/groups/lobby?since=10')).toBe('/groups/lobby');
    expect(pathOf('/groups/lobby?')).toBe('/groups/lobby');
    expect(pathOf('/?a=/groups/x')).toBe('/');
  });

  it('strips the fragment, whichever of ? and # comes first', () => {
    expect(pathOf('/groups/lobby#top')).toBe('/groups/lobby');
    expect(pathOf('/groups/lobby?a=1#top')).toBe('/groups/lobby');
    expect(pathOf('/groups/lobby#top?a=1')).toBe('/groups/lobby');
  });

  it('takes the path of absolute-form targets', () => {
    expect(pathOf('http://router.example:8080/groups/lobby?x=1')).toBe('/groups/lobby');
    expect(pathOf('https://router.example/users/alice#f')).toBe('/users/alice');
    expect(pathOf('http://user@router.example/groups/a')).toBe('/groups/a');
    expect(pathOf('http://router.example')).toBe('/');
    expect(pathOf('http://[::1]:8080/groups/a')).toBe('/groups/a');
  });

  // Regression: the authority of an absolute-form target ends at '/', '?' or '#'.
  it('an absolute-form target without a path has the path / even when its query holds a slash', () => {
    // The authority ends at the first '/', '?' or '#'; a '/' inside the query is not the path.
    expect(pathOf('http://router.example?next=/groups/lobby')).toBe('/');
    expect(pathOf('http://router.example#/groups/lobby')).toBe('/');
  });

  it('feeds key extraction: the query never becomes part of the key', () => {
    expect(sf().keyOf(pathOf('/groups/lobby?x=/users/bob'))).toEqual({
      kind: 'key',
      key: 'lobby',
      rule: 'urlPattern',
    });
    expect(sf().keyOf(pathOf('/healthz?probe=1'))).toEqual({ kind: 'key', key: '/healthz', rule: 'path' });
  });

  it('never returns something containing ? or # for origin-form targets', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        const p = pathOf(`/${s}`);
        expect(p.includes('?') || p.includes('#')).toBe(false);
        expect(`/${s}`.startsWith(p)).toBe(true);
      }),
    );
  });
});
