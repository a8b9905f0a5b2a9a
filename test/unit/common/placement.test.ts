/** Placement (common/placement.ts): the owner of a key under a shard map, as router, shards and CLI compute it. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../common/config.js';
import { initHash, xxh64 } from '../../../common/hash.js';
import {
  configuredMap,
  isValidMap,
  mapHeader,
  Placement,
  parseMapHeader,
  shardsNeeded,
} from '../../../common/placement.js';

interface Vector {
  key: string;
  xxh64: string;
  modulo: Record<string, number>;
  jump: Record<string, number>;
}

const vectors = JSON.parse(
  readFileSync(
    path.join(path.dirname(fileURLToPath(import.meta.url)), '../../fixtures/shard-function-vectors.json'),
    'utf8',
  ),
) as Vector[];

beforeAll(async () => {
  await initHash();
});

describe('Placement', () => {
  it('owns every reference vector where the independent implementation put it, under both assignments', () => {
    for (const v of vectors) {
      for (const [s, shard] of Object.entries(v.modulo))
        expect(new Placement({ version: 1, shards: Number(s), assignment: 'modulo' }).ownerOf(v.key)).toBe(
          shard,
        );
      for (const [s, shard] of Object.entries(v.jump))
        expect(new Placement({ version: 1, shards: Number(s), assignment: 'jump' }).ownerOf(v.key)).toBe(
          shard,
        );
    }
  });

  it('gives the same owner for a key and for its hash', () => {
    const p = new Placement({ version: 3, shards: 7, assignment: 'jump' });
    fc.assert(fc.property(fc.string(), (k) => p.ownerOf(k) === p.ownerOfHash(xxh64(k))));
  });

  it('always names an ordinal below S', () => {
    fc.assert(
      fc.property(fc.string(), fc.integer({ min: 1, max: 64 }), fc.boolean(), (k, shards, jump) => {
        const o = new Placement({ version: 0, shards, assignment: jump ? 'jump' : 'modulo' }).ownerOf(k);
        return Number.isInteger(o) && o >= 0 && o < shards;
      }),
    );
  });

  it('under jump, growing S to S+1 moves exactly the keys that land on the new shard', () => {
    fc.assert(
      fc.property(
        fc.array(fc.string(), { minLength: 50, maxLength: 200 }),
        fc.integer({ min: 1, max: 32 }),
        (keys, s) => {
          const before = new Placement({ version: 1, shards: s, assignment: 'jump' });
          const after = new Placement({ version: 2, shards: s + 1, assignment: 'jump' });
          return keys.every((k) => {
            const moved = before.ownerOf(k) !== after.ownerOf(k);
            return moved === (after.ownerOf(k) === s);
          });
        },
      ),
    );
  });

  it('refuses a map without shards, and freezes the map it holds', () => {
    expect(() => new Placement({ version: 0, shards: 0, assignment: 'modulo' })).toThrow(
      /positive whole number/,
    );
    const p = new Placement({ version: 5, shards: 2, assignment: 'modulo' });
    expect(Object.isFrozen(p.map)).toBe(true);
    expect([p.version, p.shards]).toEqual([5, 2]);
  });

  it('configuredMap takes S and the assignment from the configuration (version 1, the bootstrap)', () => {
    expect(configuredMap(parseConfig({}))).toEqual({ version: 1, shards: 3, assignment: 'modulo' });
    expect(
      configuredMap(
        parseConfig({
          shardSpec: { assignment: 'jump' },
          topology: { targets: ['http://a:1', 'http://b:1'] },
        }),
      ),
    ).toEqual({ version: 1, shards: 2, assignment: 'jump' });
  });
});

describe('the shard map on the wire and in a migration', () => {
  it('mapHeader and parseMapHeader round-trip; anything else is no map', () => {
    const map = { version: 7, shards: 4, assignment: 'jump' as const };
    expect(mapHeader(map)).toBe('7:4:jump');
    expect(parseMapHeader(mapHeader(map))).toEqual(map);
    for (const bad of [undefined, '', '0:3:modulo', '1:0:jump', '1:3:ring', '1:3', 'x:3:jump', '1:3:jump:x'])
      expect(parseMapHeader(bad)).toBeUndefined();
  });

  it('isValidMap accepts maps with and without a migration, refuses malformed ones', () => {
    const from = { shards: 3, assignment: 'modulo' as const };
    const to = { shards: 4, assignment: 'jump' as const };
    expect(isValidMap({ version: 1, ...from })).toBe(true);
    expect(isValidMap({ version: 2, ...from, migration: { from, to, state: 'copying', startedAt: 1 } })).toBe(
      true,
    );
    expect(isValidMap({ version: 2, ...from, migration: { from, to, state: 'done', startedAt: 1 } })).toBe(
      false,
    );
    expect(isValidMap({ version: 0, ...from })).toBe(false);
    expect(isValidMap({ version: 1, shards: 2.5, assignment: 'jump' })).toBe(false);
    expect(isValidMap(null)).toBe(false);
  });

  it('move() gives a key its owner on both sides of a migration; shardsNeeded the larger side', () => {
    const from = { shards: 3, assignment: 'jump' as const };
    const to = { shards: 4, assignment: 'jump' as const };
    const p = new Placement({ version: 2, ...from, migration: { from, to, state: 'copying', startedAt: 0 } });
    let moved = 0;
    for (let i = 0; i < 2000; i++) {
      const mv = p.move(`g${i}`);
      expect(mv?.from).toBe(p.ownerOf(`g${i}`));
      expect(mv?.to).toBe(new Placement({ version: 1, ...to }).ownerOf(`g${i}`));
      if (mv?.from !== mv?.to) {
        moved++;
        // Jump growing 3 to 4 moves keys only to the new shard.
        expect(mv?.to).toBe(3);
      }
    }
    expect(moved).toBeGreaterThan(300);
    expect(moved).toBeLessThan(700);
    expect(shardsNeeded(p.map)).toBe(4);
    expect(new Placement({ version: 1, ...from }).move('g1')).toBeUndefined();
  });
});

describe('the moving set of a migration (property)', () => {
  const key = fc.string({ minLength: 1, maxLength: 40 });
  const move = (s: number, t: number, k: string) =>
    new Placement({
      version: 2,
      shards: s,
      assignment: 'jump',
      migration: {
        from: { shards: s, assignment: 'jump' },
        to: { shards: t, assignment: 'jump' },
        state: 'copying',
        startedAt: 0,
      },
    }).move(k) as { from: number; to: number };

  it('under jump, growing S to S+1 moves exactly the keys whose bucket becomes S', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), key, (s, k) => {
        const mv = move(s, s + 1, k);
        const bucket = new Placement({ version: 1, shards: s + 1, assignment: 'jump' }).ownerOf(k);
        expect(mv.from !== mv.to).toBe(bucket === s);
        if (mv.from !== mv.to) expect(mv.to).toBe(s);
      }),
      { numRuns: 2000 },
    );
  });

  it('under jump, shrinking moves exactly the keys of the removed ordinals', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 200 }), fc.integer({ min: 1, max: 199 }), key, (s, d, k) => {
        const t = Math.max(1, s - d);
        const mv = move(s, t, k);
        expect(mv.from !== mv.to).toBe(mv.from >= t);
      }),
      { numRuns: 2000 },
    );
  });
});
