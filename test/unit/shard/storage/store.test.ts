/**
 * The store (shard/storage/store.ts) on real SQLite files: its change events reach every
 * listener, and a group (row, members, roster, messages) and a user move whole from one
 * store to another, keeping the epoch and the msgIds.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Message } from '../../../../common/protocol.js';
import type { GroupSnapshot, Store as StoreType, UserSnapshot } from '../../../../shard/storage/store.js';
import { fromDist } from '../../../helpers/shardchat.js';

type StoreModule = typeof import('../../../../shard/storage/store.js');
// The store's writer thread runs the built JavaScript: the store is loaded from dist/.
let Store: StoreModule['Store'];
let StorageError: StoreModule['StorageError'];
beforeAll(async () => {
  ({ Store, StorageError } = await fromDist<StoreModule>('shard/storage/store.js'));
});

let dir: string;
const stores: StoreType[] = [];
const open = (ordinal: number) => {
  const s = new Store(dir, ordinal);
  stores.push(s);
  return s;
};

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'shardchat-store-'));
});
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

const group = (
  id: string,
  owner = 'alice',
  extra: Partial<Parameters<StoreType['createGroup']>[0]> = {},
) => ({
  id,
  subject: `subject of ${id}`,
  owner,
  capacity: 10,
  overflow: 'shard' as const,
  closed: false,
  parent: null,
  firstMember: owner,
  ...extra,
});

async function post(s: StoreType, groupId: string, n: number, from = 0): Promise<Message[]> {
  const out: Message[] = [];
  for (let i = 0; i < n; i++)
    out.push((await s.append(groupId, 'alice', `m${from + i}`, `c${from + i}`)).message);
  return out;
}

describe('Store events', () => {
  it('tells every listener of committed messages, membership changes and removals', async () => {
    const s = open(0);
    const committed: [number[], number][] = [];
    const committed2: number[] = [];
    const changed: string[] = [];
    const removed: string[] = [];
    s.on('committed', (ms, seconds) => committed.push([ms.map((m) => m.msgId), seconds]));
    s.on('committed', (ms) => committed2.push(...ms.map((m) => m.msgId)));
    s.on('members-changed', (g) => changed.push(g));
    s.on('member-removed', (g, u) => removed.push(`${g}/${u}`));
    s.createGroup(group('g'));
    expect(s.addMember('g', 'bob')).toBe(true);
    expect(s.addMember('g', 'bob')).toBe(false);
    await Promise.all([s.append('g', 'alice', 'a', 'x1'), s.append('g', 'bob', 'b', 'x2')]);
    // A repeated clientMsgId stores nothing new: no event for it.
    await s.append('g', 'alice', 'again', 'x1');
    expect(s.removeMember('g', 'bob')).toBe(true);
    expect(s.removeMember('g', 'bob')).toBe(false);
    expect(committed.flatMap(([ids]) => ids)).toEqual([1, 2]);
    expect(committed.every(([, sec]) => sec >= 0)).toBe(true);
    expect(committed2).toEqual([1, 2]);
    expect(changed).toEqual(['g', 'g', 'g']);
    expect(removed).toEqual(['g/bob']);
  });
});

describe('group commit', () => {
  it('sends the next batch to the writer thread before answering the one that committed', async () => {
    const s = open(3);
    s.createGroup(group('g'));
    const reader = new Database(s.file, { readonly: true });
    const stored = reader.prepare("SELECT count(*) AS n FROM messages WHERE group_id = 'g'").pluck();
    let seenWhileAnswering = -1;
    s.once('committed', () => {
      // The main thread is busy with the first batch's answers (blocked here): the batch
      // queued meanwhile commits on the writer thread all the same (never, when it is sent
      // only after these answers).
      const until = Date.now() + 5000;
      do seenWhileAnswering = stored.get() as number;
      while (seenWhileAnswering < 6 && Date.now() < until);
    });
    try {
      const first = s.append('g', 'alice', 'first', 'c0');
      await new Promise((r) => setImmediate(r)); // the first batch is on its way to the thread
      const rest = Promise.all(Array.from({ length: 5 }, (_, i) => s.append('g', 'alice', `m${i}`, `d${i}`)));
      await Promise.all([first, rest]);
      expect(seenWhileAnswering).toBe(6);
    } finally {
      reader.close();
    }
  });
});

describe('moving a group and a user between stores', () => {
  it('copies row, members, roster and messages; the epoch stays and msgIds continue', async () => {
    const a = open(0);
    const b = open(1);
    a.createGroup(group('lobby'));
    for (const u of ['bob', 'carol', 'dave']) a.addMember('lobby', u);
    a.placeInRoster('lobby', 'alice', 'lobby');
    a.placeInRoster('lobby', 'erin', 'lobby~1', true);
    await post(a, 'lobby', 25);
    const snap = a.exportGroup('lobby') as GroupSnapshot;
    expect(snap.group).toMatchObject({ id: 'lobby', lastMsgId: 25, memberCount: 4 });
    expect(snap.members.map((m) => m.userId)).toEqual(['alice', 'bob', 'carol', 'dave']);
    expect(snap.roster).toEqual([
      expect.objectContaining({ userId: 'alice', conversation: 'lobby', pending: false }),
      expect.objectContaining({ userId: 'erin', conversation: 'lobby~1', pending: true }),
    ]);

    b.importGroup(snap);
    // Messages move in pages, in msgId order.
    for (let after = 0; ; ) {
      const page = a.messagesAfter('lobby', after, 10);
      if (page.length === 0) break;
      expect(b.importMessages('lobby', page)).toBe(page.length);
      after = (page[page.length - 1] as Message).msgId;
    }
    expect(b.getGroup('lobby')).toMatchObject({
      epoch: snap.group.epoch,
      lastMsgId: 25,
      memberCount: 4,
      subject: 'subject of lobby',
      owner: 'alice',
      createdAt: snap.group.createdAt,
    });
    expect(b.messagesAfter('lobby', 0, 100)).toEqual(a.messagesAfter('lobby', 0, 100));
    expect(b.rosterOf('lobby', 'erin')).toEqual({ conversation: 'lobby~1', pending: true });
    expect(b.isMember('lobby', 'dave')).toBe(true);

    // Importing again (a resumed copy) changes nothing and adds no message twice.
    b.importGroup(snap);
    expect(b.importMessages('lobby', a.messagesAfter('lobby', 0, 100))).toBe(0);
    expect(b.getGroup('lobby')?.lastMsgId).toBe(25);

    // The new owner appends after the copied history, in the same epoch; idempotency keys moved too.
    const next = await b.append('lobby', 'bob', 'after the move', 'n1');
    expect(next.message).toMatchObject({ msgId: 26, prevMsgId: 25, epoch: snap.group.epoch });
    const repeat = await b.append('lobby', 'alice', 'ignored', 'c3');
    expect(repeat).toMatchObject({ created: false, message: { msgId: 4, contents: 'm3' } });
  });

  it('a snapshot taken before the tail keeps the higher lastMsgId of the messages already copied', async () => {
    const a = open(0);
    const b = open(1);
    a.createGroup(group('g'));
    const snap = a.exportGroup('g') as GroupSnapshot;
    b.importGroup(snap);
    const tail = await post(a, 'g', 5);
    b.importMessages('g', tail);
    // A later snapshot of the (still lastMsgId 0) row, e.g. after a membership change, keeps 5.
    b.importGroup(snap);
    expect(b.getGroup('g')?.lastMsgId).toBe(5);
  });

  it('refuses messages of another group or epoch, and messages for a group it does not hold', async () => {
    const a = open(0);
    const b = open(1);
    a.createGroup(group('g'));
    b.createGroup(group('g')); // same id, another history (another epoch)
    const ms = await post(a, 'g', 2);
    expect(() => b.importMessages('g', ms)).toThrow(StorageError);
    expect(() => b.importMessages('nope', ms)).toThrow(/does not exist/);
    expect(b.messagesAfter('g', 0, 10)).toEqual([]);
  });

  it('moves a user profile, and deletes a moved group and user with everything stored with them', async () => {
    const a = open(0);
    const b = open(1);
    const { user } = a.putUser('alice', 'Alice', 'alice@example.com', null);
    a.applyMembershipChanges([{ userId: 'alice', groupId: 'g', member: true, joinedAt: 5 }]);
    b.importUser(a.exportUser('alice') as UserSnapshot);
    expect(b.getUser('alice')).toEqual(user);
    expect(b.groupsOf('alice', '', 10)).toEqual([{ groupId: 'g', joinedAt: 5 }]);
    a.createGroup(group('g'));
    a.placeInRoster('g', 'alice', 'g');
    await post(a, 'g', 3);
    const changed: string[] = [];
    a.on('members-changed', (g) => changed.push(g));
    expect(a.deleteGroup('g')).toBe(true);
    expect(a.getGroup('g')).toBeUndefined();
    expect(a.messagesAfter('g', 0, 10)).toEqual([]);
    expect(a.rosterOf('g', 'alice')).toBeUndefined();
    expect(a.isMember('g', 'alice')).toBe(false);
    expect(changed).toEqual(['g']);
    expect(a.deleteGroup('g')).toBe(false);
    expect(a.deleteUser('alice')).toBe(true);
    expect(a.getUser('alice')).toBeUndefined();
    expect(a.groupsOf('alice', '', 10)).toEqual([]);
    expect(a.exportUser('alice')).toBeUndefined();
    expect(a.counts()).toEqual({ groups: 0, members: 0 });
  });

  it('knows which groups exist from memory once read, and forgets a deleted one', () => {
    const a = open(0);
    expect(a.hasGroup('g')).toBe(false);
    a.createGroup(group('g'));
    expect(a.hasGroup('g')).toBe(true);
    expect(a.hasGroup('g')).toBe(true);
    expect(a.deleteGroup('g')).toBe(true);
    expect(a.hasGroup('g')).toBe(false);
    // Imported (a group moving here) is known as well.
    const b = open(1);
    b.createGroup(group('h'));
    a.importGroup(b.exportGroup('h') as GroupSnapshot);
    expect(a.hasGroup('h')).toBe(true);
  });

  it('answers membership from memory once read, never after a leave, a replacing import or a delete', () => {
    const a = open(0);
    const b = open(1);
    a.createGroup(group('g'));
    expect(a.isMember('g', 'bob')).toBe(false);
    expect(a.addMember('g', 'bob')).toBe(true);
    expect(a.isMember('g', 'bob')).toBe(true);
    expect(a.isMember('g', 'bob')).toBe(true);
    // A leave: the next answer is the database's.
    expect(a.removeMember('g', 'bob')).toBe(true);
    expect(a.isMember('g', 'bob')).toBe(false);
    expect(a.addMember('g', 'bob')).toBe(true);
    expect(a.isMember('g', 'bob')).toBe(true);
    // An import replaces the member list: bob is not in the snapshot (a group of alice's only).
    b.createGroup(group('g'));
    a.importGroup(b.exportGroup('g') as GroupSnapshot);
    expect(a.isMember('g', 'bob')).toBe(false);
    expect(a.isMember('g', 'alice')).toBe(true);
    // A delete: nobody is a member any more.
    expect(a.deleteGroup('g')).toBe(true);
    expect(a.isMember('g', 'alice')).toBe(false);
  });

  describe('the groups of each user', () => {
    const changes = (s: StoreType) =>
      s.queuedChanges(0, 100).map(({ userId, groupId, member }) => [userId, groupId, member]);

    it('queues a change with every join and leave, only the latest per user and group, with a new id each time', () => {
      const a = open(0);
      let told = 0;
      a.on('index-queued', () => told++);
      a.createGroup(group('g')); // alice, the creator, is the first member
      a.addMember('g', 'bob');
      expect(a.addMember('g', 'bob')).toBe(false); // no change, nothing queued
      expect(changes(a)).toEqual([
        ['alice', 'g', true],
        ['bob', 'g', true],
      ]);
      const [, bobJoin] = a.queuedChanges(0, 100);
      a.removeMember('g', 'bob');
      expect(changes(a)).toEqual([
        ['alice', 'g', true],
        ['bob', 'g', false],
      ]);
      expect(told).toBe(3);
      // The answer to the older change does not dequeue the newer one.
      a.dequeueChanges([bobJoin?.id as number]);
      expect(changes(a)).toEqual([
        ['alice', 'g', true],
        ['bob', 'g', false],
      ]);
      a.dequeueChanges(a.queuedChanges(0, 100).map((c) => c.id));
      expect(a.queuedChanges(0, 100)).toEqual([]);
    });

    it('keeps a queued change across a restart', async () => {
      const a = open(0);
      a.createGroup(group('g'));
      await a.close();
      stores.splice(stores.indexOf(a), 1);
      const again = open(0);
      expect(changes(again)).toEqual([['alice', 'g', true]]);
    });

    it("records joins and leaves as the users' shard, idempotently, telling each", () => {
      const a = open(0);
      const told: string[] = [];
      a.on('user-groups-changed', (c) => told.push(`${c.userId} ${c.member ? '+' : '-'}${c.groupId}`));
      a.applyMembershipChanges([
        { userId: 'alice', groupId: 'g2', member: true, joinedAt: 2 },
        { userId: 'alice', groupId: 'g1', member: true, joinedAt: 1 },
        { userId: 'bob', groupId: 'g1', member: true, joinedAt: 3 },
      ]);
      a.applyMembershipChanges([{ userId: 'alice', groupId: 'g2', member: true, joinedAt: 2 }]);
      expect(a.groupsOf('alice', '', 10)).toEqual([
        { groupId: 'g1', joinedAt: 1 },
        { groupId: 'g2', joinedAt: 2 },
      ]);
      expect(a.groupsOf('alice', 'g1', 10)).toEqual([{ groupId: 'g2', joinedAt: 2 }]);
      a.applyMembershipChanges([{ userId: 'alice', groupId: 'g1', member: false, joinedAt: 4 }]);
      a.applyMembershipChanges([{ userId: 'alice', groupId: 'g1', member: false, joinedAt: 4 }]);
      expect(a.groupsOf('alice', '', 10)).toEqual([{ groupId: 'g2', joinedAt: 2 }]);
      expect(told).toEqual(['alice +g2', 'alice +g1', 'bob +g1', 'alice +g2', 'alice -g1', 'alice -g1']);
      // A user with groups and no profile is a user of this shard (it moves with resharding).
      expect(a.userIds('', 10)).toEqual(['alice', 'bob']);
      expect(a.exportUser('bob')).toEqual({
        id: 'bob',
        profile: null,
        groups: [{ groupId: 'g1', joinedAt: 3 }],
      });
    });

    it('moves a group with its queued changes, and forgets them when the group is deleted', () => {
      const a = open(0);
      const b = open(1);
      a.createGroup(group('g'));
      a.addMember('g', 'bob');
      a.removeMember('g', 'alice');
      b.importGroup(a.exportGroup('g') as GroupSnapshot);
      expect(changes(b)).toEqual([
        ['bob', 'g', true],
        ['alice', 'g', false],
      ]);
      // A snapshot copied again replaces them (the source may have sent some meanwhile).
      a.dequeueChanges(a.queuedChanges(0, 100).map((c) => c.id));
      b.importGroup(a.exportGroup('g') as GroupSnapshot);
      expect(changes(b)).toEqual([]);
      a.addMember('g', 'carol');
      a.deleteGroup('g');
      expect(a.queuedChanges(0, 100)).toEqual([]);
    });
  });
});

describe('checkpoints off the commit path', () => {
  const bytes = (f: string) => statSync(f).size;
  /** n messages of 600 bytes (8,000: about 6 MB of WAL, past SQLite's default of 1,000 pages). */
  const fill = (s: StoreType, n = 8000) =>
    Promise.all(Array.from({ length: n }, (_, i) => s.append('g', 'alice', 'x'.repeat(600), `c${i}`)));

  it('the commits do not checkpoint below the backstop: the database file does not grow', async () => {
    // A checkpointer that does not run during the test: only commits could checkpoint.
    const s = new Store(dir, 7, 1000, 60_000);
    stores.push(s);
    s.createGroup(group('g'));
    await s.settled();
    const before = bytes(s.file);
    await fill(s);
    expect(bytes(`${s.file}-wal`)).toBeGreaterThan(5_000_000);
    expect(bytes(s.file)).toBe(before);
  });

  it('the checkpointer thread copies the WAL into the database file', async () => {
    const s = new Store(dir, 8, 1000, 20);
    stores.push(s);
    s.createGroup(group('g'));
    const before = bytes(s.file);
    await fill(s, 3000);
    const cp = s.checkpointer as NonNullable<StoreType['checkpointer']>;
    await expect
      .poll(
        () =>
          cp.stats.log > 0 && cp.stats.checkpointed === cp.stats.log && bytes(s.file) > before + 1_800_000,
      )
      .toBe(true);
    expect((await s.messagesAfter('g', 0, 5000)).length).toBe(3000);
  });

  it('with checkpointEveryMs 0 SQLite checkpoints inside the commits, as before', async () => {
    const s = new Store(dir, 9, 1000, 0);
    stores.push(s);
    expect(s.checkpointer).toBeUndefined();
    s.createGroup(group('g'));
    const before = bytes(s.file);
    await fill(s);
    expect(bytes(s.file)).toBeGreaterThan(before);
  });
});
