/** The members of a group by session host (shard/delivery/member-cache.ts), as the fan-out reads them. */
import { describe, expect, it } from 'vitest';
import { MemberCache } from '../../../../shard/delivery/member-cache.js';

const members = ['ann', 'bob', 'cy'];
const store = {
  listMembers: (_g: string, after: string, limit: number) =>
    members
      .filter((u) => u > after)
      .slice(0, limit)
      .map((userId) => ({ userId, joinedAt: 0 })),
};

describe('MemberCache', () => {
  it('groups members by host, cached until invalidated', () => {
    const hosts: Record<string, number> = { ann: 0, bob: 1, cy: 1 };
    const cache = new MemberCache(store, (u) => hosts[u] as number, 100);
    expect(Object.fromEntries(cache.byHost('g'))).toEqual({ 0: ['ann'], 1: ['bob', 'cy'] });
    hosts.bob = 2;
    expect(Object.fromEntries(cache.byHost('g'))).toEqual({ 0: ['ann'], 1: ['bob', 'cy'] });
    cache.invalidate('g');
    expect(Object.fromEntries(cache.byHost('g'))).toEqual({ 0: ['ann'], 1: ['cy'], 2: ['bob'] });
  });

  it('a new shard map (users moved to other session hosts) forgets every group', () => {
    // The bug this guards: after a resharding moved a user, the fan-out kept sending to
    // the user's old session host, where no connection of the user was left.
    let host = 0;
    const cache = new MemberCache(store, () => host, 100);
    cache.byHost('g1');
    cache.byHost('g2');
    host = 3;
    cache.invalidateAll();
    expect([...cache.byHost('g1').keys()]).toEqual([3]);
    expect([...cache.byHost('g2').keys()]).toEqual([3]);
  });
});
