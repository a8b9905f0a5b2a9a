/** The router's shard map (router/shard-map.ts): adoption, and where a 421 sends a request. */
import { beforeAll, describe, expect, it } from 'vitest';
import { initHash, xxh64 } from '../../../common/hash.js';
import { ownerUnder, type ShardMap } from '../../../common/placement.js';
import type { ParsedRequest } from '../../../router/request-parser.js';
import { MAX_HOPS, type Redispatch, RouterShardMap } from '../../../router/shard-map.js';

beforeAll(async () => {
  await initHash();
});

function tracker() {
  const adopted: Array<[number, number]> = [];
  const m = new RouterShardMap({ version: 0, shards: 2, assignment: 'modulo' }, (map, previous) =>
    adopted.push([previous.version, map.version]),
  );
  return { m, adopted };
}

function redispatchFor(key: string, hops = 0): Redispatch {
  return { req: {} as ParsedRequest, body: undefined, hash: xxh64(key), requestId: 'r', hops };
}

/** A key whose owners under the given layouts are as given. */
function keyWith(owners: Array<[shards: number, assignment: 'modulo' | 'jump', owner: number]>): string {
  for (let i = 0; ; i++) {
    const key = `key-${i}`;
    if (owners.every(([shards, assignment, o]) => ownerUnder({ shards, assignment }, xxh64(key)) === o))
      return key;
  }
}

describe('RouterShardMap', () => {
  it('adopts only newer maps from headers, once each', () => {
    const { m, adopted } = tracker();
    expect(m.version).toBe(0);
    m.seen('3:4:jump');
    m.seen('3:4:jump');
    m.seen('2:3:modulo');
    m.seen('garbage');
    m.seen('3:5:modulo');
    expect(adopted).toEqual([[0, 3]]);
    expect(m.view()).toEqual({ version: 3, shards: 4, assignment: 'jump' });
    m.seen('4:5:jump');
    expect(adopted).toEqual([
      [0, 3],
      [3, 4],
    ]);
    expect(m.placement.shards).toBe(5);
  });

  it('keeps the full map of probes: its migration shows for the same version', () => {
    const { m, adopted } = tracker();
    const migration = {
      from: { shards: 2, assignment: 'modulo' as const },
      to: { shards: 3, assignment: 'modulo' as const },
      state: 'copying' as const,
      startedAt: 1,
    };
    const full: ShardMap = { version: 2, shards: 2, assignment: 'modulo', migration };
    m.probedMap({ ordinal: 0, header: '2:2:modulo', map: full });
    expect(adopted).toEqual([[0, 2]]);
    expect(m.view()).toEqual(full);
    // A header of the same version changes nothing; a newer one drops the old migration.
    m.seen('2:2:modulo');
    m.seen('3:3:modulo');
    expect(m.view()).toEqual({ version: 3, shards: 3, assignment: 'modulo' });
    // A map adopted from a header gets its migration from a probe of the same version.
    m.probedMap({
      ordinal: 0,
      header: '3:3:modulo',
      map: { version: 3, shards: 3, assignment: 'modulo', migration },
    });
    expect(adopted).toEqual([
      [0, 2],
      [2, 3],
      [3, 3],
    ]);
    expect(m.view()).toEqual({ version: 3, shards: 3, assignment: 'modulo', migration });
    // A probe with only a header adopts as a header would.
    m.probedMap({ ordinal: 1, header: '4:3:jump', map: undefined });
    expect(m.version).toBe(4);
  });

  it('a 421 sends the request to the owner under an equal or newer map, never back, at most MAX_HOPS times', () => {
    const { m } = tracker();
    const key = keyWith([
      [2, 'modulo', 0],
      [3, 'modulo', 2],
    ]);
    expect(m.redirect(0, '2:3:modulo', redispatchFor(key))).toBe(2);
    expect(m.version).toBe(2);
    // Equal map, same owner: passes.
    expect(m.redirect(2, '2:3:modulo', redispatchFor(key))).toBeUndefined();
    // Stale map: passes, even with another owner.
    expect(m.redirect(2, '1:2:modulo', redispatchFor(key))).toBeUndefined();
    // Nothing kept (large body, fixed shard): passes, though the map is adopted.
    expect(m.redirect(2, '5:4:jump', undefined)).toBeUndefined();
    expect(m.version).toBe(5);
    // Hop limit.
    const other = ownerUnder({ shards: 2, assignment: 'modulo' }, xxh64(key));
    expect(m.redirect(1 - other, '5:2:modulo', redispatchFor(key, MAX_HOPS - 1))).toBe(other);
    expect(m.redirect(1 - other, '5:2:modulo', redispatchFor(key, MAX_HOPS))).toBeUndefined();
  });
});
