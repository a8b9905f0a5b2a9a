/**
 * Ownership (shard/cluster/ownership.ts): the owner of an id under the shard map, which
 * every message asks for and which is answered from memory once asked, follows a new map
 * at once.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initHash } from '../../../../common/hash.js';
import { Placement } from '../../../../common/placement.js';
import { Ownership } from '../../../../shard/cluster/ownership.js';

beforeAll(async () => {
  await initHash();
});

describe('Ownership.ownerOf', () => {
  it('answers as the placement does, and follows an adopted map at once', () => {
    const two = { version: 1, shards: 2, assignment: 'modulo' as const };
    const three = { version: 2, shards: 3, assignment: 'modulo' as const };
    const own = new Ownership(two, 0);
    const ids = Array.from({ length: 200 }, (_, i) => `g${i}`);
    const under = (map: typeof two) => ids.map((id) => new Placement(map).ownerOf(id));
    // Asked twice: the second answer comes from memory and is the same.
    expect(ids.map((id) => own.ownerOf(id))).toEqual(under(two));
    expect(ids.map((id) => own.ownerOf(id))).toEqual(under(two));
    own.adopt(three);
    const moved = ids.filter((_, i) => under(two)[i] !== under(three)[i]);
    expect(moved.length).toBeGreaterThan(0);
    expect(ids.map((id) => own.ownerOf(id))).toEqual(under(three));
    for (const id of moved) expect(own.owns(id)).toBe(new Placement(three).ownerOf(id) === 0);
  });
});
