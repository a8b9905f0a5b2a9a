/**
 * Joins and leaves (shard/cluster/membership.ts) on a real store, with the other shards
 * played by a fake internal client: the parent fills to capacity, then the least
 * populated sub-conversation; a placement is pending until the sub's shard confirmed
 * it, and a retried join finishes it where it began; leaves go to the sub first.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../../common/config.js';
import { initHash } from '../../../../common/hash.js';
import { ApiError } from '../../../../common/http-answers.js';
import { createLogger } from '../../../../common/logger.js';
import { Placement } from '../../../../common/placement.js';
import { InternalCallError, type InternalClient } from '../../../../shard/cluster/internal-client.js';
import { Membership } from '../../../../shard/cluster/membership.js';
import { Ownership } from '../../../../shard/cluster/ownership.js';
import type { SubSpec } from '../../../../shard/cluster/subconversations.js';
import type { GroupRow, Store } from '../../../../shard/storage/store.js';
import { fromDist } from '../../../helpers/shardchat.js';

type StoreModule = typeof import('../../../../shard/storage/store.js');
let StoreClass: StoreModule['Store'];

/** The other shard's side of the internal calls: its subs and members, and injected failures. */
class FakeOtherShard {
  subs = new Map<string, { spec: SubSpec; members: Set<string> }>();
  calls: string[] = [];
  failAdd = 0;

  client(): InternalClient {
    const self = this;
    return {
      async ensureSub(ordinal: number, subId: string, spec: SubSpec) {
        self.calls.push(`ensure ${ordinal} ${subId}`);
        if (!self.subs.has(subId)) self.subs.set(subId, { spec, members: new Set() });
      },
      async addMember(ordinal: number, subId: string, userId: string) {
        self.calls.push(`add ${ordinal} ${subId} ${userId}`);
        const sub = self.subs.get(subId);
        if (!sub) throw new InternalCallError(`${subId} does not exist`, 404, 'not_found');
        // The member is added, but the answer is lost (a timeout, as seen by the caller).
        sub.members.add(userId);
        if (self.failAdd > 0) {
          self.failAdd--;
          throw new InternalCallError(`shard did not answer PUT ${subId}`, undefined);
        }
      },
      async removeMember(ordinal: number, subId: string, userId: string) {
        self.calls.push(`remove ${ordinal} ${subId} ${userId}`);
        const sub = self.subs.get(subId);
        if (!sub) throw new InternalCallError(`${subId} does not exist`, 404, 'not_found');
        sub.members.delete(userId);
      },
    } as unknown as InternalClient;
  }
}

let dir: string;
let store: Store;
let other: FakeOtherShard;
const S = 2;
let own: Ownership;
let membership: Membership;
/** A parent on shard 0 whose ~1 and ~2 are on shard 1 (the other shard), found by hashing. */
let parent: string;

beforeAll(async () => {
  await initHash();
  ({ Store: StoreClass } = await fromDist<StoreModule>('shard/storage/store.js'));
  const p = new Placement({ version: 0, shards: S, assignment: 'modulo' });
  for (let i = 0; ; i++) {
    const g = `room${i}`;
    if (p.ownerOf(g) === 0 && p.ownerOf(`${g}~1`) === 1 && p.ownerOf(`${g}~2`) === 1) {
      parent = g;
      break;
    }
  }
});

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'shardchat-membership-'));
  store = new StoreClass(dir, 0);
  other = new FakeOtherShard();
  own = new Ownership({ version: 0, shards: S, assignment: 'modulo' }, 0);
  membership = new Membership({
    cfg: parseConfig({}),
    log: createLogger('test', 'silent'),
    store,
    own,
    internal: other.client(),
  });
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const create = (capacity: number, overflow: 'shard' | 'reject' = 'shard'): GroupRow => {
  const { group } = store.createGroup({
    id: parent,
    subject: 'The room',
    owner: 'owner',
    capacity,
    overflow,
    closed: false,
    parent: null,
    firstMember: 'owner',
  });
  if (overflow === 'shard') store.placeInRoster(parent, 'owner', parent);
  return group;
};

describe('Membership', () => {
  it('fills the parent to capacity, then the sub-conversations on their shard, least populated first', async () => {
    const g = create(2);
    expect(await membership.join(g, 'u1')).toBe(parent);
    expect(await membership.join(g, 'u2')).toBe(`${parent}~1`);
    expect(await membership.join(g, 'u3')).toBe(`${parent}~1`);
    expect(await membership.join(g, 'u4')).toBe(`${parent}~2`);
    expect(store.getGroup(parent)?.memberCount).toBe(2);
    expect([...(other.subs.get(`${parent}~1`)?.members ?? [])]).toEqual(['u2', 'u3']);
    expect(other.subs.get(`${parent}~1`)?.spec).toEqual({
      subject: 'The room',
      owner: 'owner',
      capacity: 2,
      parent,
      closed: false,
    });
    // A leave frees a place in ~1, which the next join takes (the least populated).
    expect(await membership.leave(g, 'u2')).toBe(true);
    expect(other.calls).toContain(`remove 1 ${parent}~1 u2`);
    expect(store.rosterOf(parent, 'u2')).toBeUndefined();
    expect(await membership.join(g, 'u5')).toBe(`${parent}~1`);
    // A repeated join answers the same conversation without calling anyone.
    const calls = other.calls.length;
    expect(await membership.join(g, 'u3')).toBe(`${parent}~1`);
    expect(other.calls.length).toBe(calls);
  });

  it('keeps a placement pending when the answer is lost, and a retried join finishes it in the same sub', async () => {
    const g = create(1);
    await membership.join(g, 'u1'); // ~1 has u1
    other.failAdd = 1;
    await expect(membership.join(g, 'u2')).rejects.toMatchObject({ status: 503, code: 'shard_unavailable' });
    expect(store.rosterOf(parent, 'u2')).toEqual({ conversation: `${parent}~2`, pending: true });
    // The pending place counts: another user does not get ~2 past its capacity.
    expect(await membership.join(g, 'u3')).toBe(`${parent}~3`);
    // The retry goes to ~2 again (where the other shard already has u2), never to a second sub.
    expect(await membership.join(g, 'u2')).toBe(`${parent}~2`);
    expect(store.rosterOf(parent, 'u2')).toEqual({ conversation: `${parent}~2`, pending: false });
    const seats = [...other.subs.values()].flatMap((s) => [...s.members]);
    expect(seats.filter((u) => u === 'u2')).toEqual(['u2']);
    for (const s of other.subs.values()) expect(s.members.size).toBeLessThanOrEqual(1);
  });

  it('never overfills under concurrent joins (one at a time per parent)', async () => {
    const g = create(3);
    const placed = await Promise.all(Array.from({ length: 10 }, (_, i) => membership.join(g, `c${i}`)));
    const counts = new Map<string, number>();
    for (const c of placed) counts.set(c, (counts.get(c) ?? 0) + 1);
    // owner + 2 joiners fill the parent; the rest spread over ~1, ~2, ~3 at 3 each at most.
    expect(counts.get(parent)).toBe(2);
    for (const [conv, n] of counts) if (conv !== parent) expect(n).toBeLessThanOrEqual(3);
    expect([...counts.values()].reduce((a, b) => a + b)).toBe(10);
  });

  it('refuses joins past capacity without overflow, and joins and leaves of a ~k directly', async () => {
    const g = create(1, 'reject');
    await expect(membership.join(g, 'u1')).rejects.toMatchObject({ status: 409, code: 'group_full' });
    const sub = { ...g, id: `${parent}~1`, parent };
    await expect(membership.join(sub, 'u1')).rejects.toBeInstanceOf(ApiError);
    await expect(membership.leave(sub, 'u1')).rejects.toMatchObject({
      status: 409,
      code: 'sub_conversation',
    });
  });

  it('a leave from a sub that is gone on its shard still leaves the roster', async () => {
    const g = create(1);
    await membership.join(g, 'u1');
    other.subs.clear();
    expect(await membership.leave(g, 'u1')).toBe(true);
    expect(store.rosterOf(parent, 'u1')).toBeUndefined();
    expect(await membership.leave(g, 'u1')).toBe(false);
  });
});
