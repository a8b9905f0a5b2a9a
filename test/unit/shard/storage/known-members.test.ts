/** shard/storage/known-members.ts: what it remembers and its bounds. */
import { describe, expect, it } from 'vitest';
import { KnownMembers } from '../../../../shard/storage/known-members.js';

describe('KnownMembers', () => {
  it('remembers what was added, per group, and forgets a group whole', () => {
    const k = new KnownMembers();
    expect(k.has('g', 'u')).toBe(false);
    k.add('g', 'u');
    k.add('h', 'v');
    expect(k.has('g', 'u')).toBe(true);
    expect(k.has('g', 'v')).toBe(false);
    expect(k.has('h', 'v')).toBe(true);
    k.forget('g');
    expect(k.has('g', 'u')).toBe(false);
    expect(k.has('h', 'v')).toBe(true);
  });

  it('holds at most maxGroups groups, forgetting the oldest first, and maxPerGroup members of each', () => {
    const k = new KnownMembers(2, 3);
    k.add('a', 'u');
    k.add('b', 'u');
    k.add('c', 'u');
    expect(k.size).toBe(2);
    expect(k.has('a', 'u')).toBe(false);
    expect(k.has('b', 'u')).toBe(true);
    expect(k.has('c', 'u')).toBe(true);
    for (const u of ['u1', 'u2', 'u3', 'u4']) k.add('c', u);
    // 'u' and two more fit; the rest is left to the database.
    expect(['u', 'u1', 'u2', 'u3', 'u4'].filter((u) => k.has('c', u))).toEqual(['u', 'u1', 'u2']);
  });
});
