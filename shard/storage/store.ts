/**
 * The shard's durable state in SQLite (better-sqlite3, WAL, synchronous=FULL): users,
 * groups, members, messages and the roster of sharded conversations. Messages are
 * appended with group commit on a writer thread (MessageWriter): every append waiting
 * while a batch commits goes into the next transaction (one fsync), and each caller is
 * answered only after the transaction holding its message committed.
 *
 * What changed is told by events, to any number of listeners, after the change is
 * durable: `committed` (new messages, in commit order), `members-changed` and
 * `member-removed`. A group, its members, roster and messages, and a user can be
 * exported and imported whole (moving keys between shards).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { BACKSTOP_PAGES, Checkpointer } from './checkpointer.js';
import { databaseBytes, keep, openDatabase } from './database.js';
import { readOnlyError, StorageError, storageError, type WireError, wireError } from './errors.js';
import { KnownMembers } from './known-members.js';
import { type AppendResult, MESSAGE_COLUMNS, MESSAGE_SQL, type Message } from './message-sql.js';
import { MessageWriter } from './message-writer.js';
import {
  GROUP_COLUMNS,
  type GroupRow,
  type MemberRow,
  type MembershipChange,
  type QueuedChange,
  type RosterRow,
  toGroup,
  USER_COLUMNS,
  type UserGroupRow,
  type UserRow,
  type UserSnapshot,
} from './schema.js';
import { USER_INDEX_SQL } from './user-index-sql.js';

export { StorageError } from './errors.js';
export type { AppendResult, Message } from './message-sql.js';
export type {
  GroupRow,
  MemberRow,
  MembershipChange,
  QueuedChange,
  RosterRow,
  UserGroupRow,
  UserRow,
  UserSnapshot,
} from './schema.js';

export interface StoreEvents {
  /** A batch of messages committed (new ones only), in commit order, and the transaction's seconds. */
  committed: [messages: Message[], seconds: number];
  /** A group's members changed (join, leave, creation with a first member, import). */
  'members-changed': [groupId: string];
  /** A membership was removed (every path: leave, owner removal, internal calls). */
  'member-removed': [groupId: string, userId: string];
  /**
   * A client-facing write changed what is stored under a key (a group id: its row,
   * members, roster or messages; a user id: its profile). Imports and deletes of moving
   * keys are not told. Resharding follows it to copy again what changed.
   */
  changed: [key: string];
  /** Membership changes were queued for the users' shards (the outbox has rows to send). */
  'index-queued': [];
  /** This shard, as the user's shard, recorded that a user joined or left a group. */
  'user-groups-changed': [change: MembershipChange];
  /**
   * A group was imported from another shard or deleted after it moved away: whatever is
   * kept of it in memory (recent messages, fan-out heads) is no longer true.
   */
  replaced: [groupId: string];
  /** The checkpointer thread's checkpoints started failing (the commits' backstop still bounds the WAL). */
  'checkpoint-failed': [error: WireError];
  /** ... and succeed again, after this many failed. */
  'checkpoint-recovered': [failures: number];
}

/** A group and everything stored with it but its messages (moved in pages). */
export interface GroupSnapshot {
  group: GroupRow;
  members: MemberRow[];
  /** The roster, when the group is a parent of sub-conversations. */
  roster: RosterRow[];
  /**
   * Changes of its members not yet written on their users' shards (absent from a shard
   * of an earlier version: none).
   */
  outbox?: MembershipChange[];
}

export type NewGroup = Pick<
  GroupRow,
  'id' | 'subject' | 'owner' | 'capacity' | 'overflow' | 'closed' | 'parent'
> & {
  /** The first member (the creator), or none (sub-conversations). */
  firstMember: string | null;
};

function prepareStatements(db: Database.Database) {
  const st = {
    getUser: db.prepare(`SELECT ${USER_COLUMNS} FROM users WHERE id = ?`),
    byClientId: db.prepare(MESSAGE_SQL.byClientId),
    insertUser: db.prepare(
      'INSERT INTO users (id, name, email, photo_url, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    updateUser: db.prepare(
      'UPDATE users SET name = ?, email = ?, photo_url = ?, updated_at = ? WHERE id = ?',
    ),
    putUser: db.prepare(
      `INSERT OR REPLACE INTO users (id, name, email, photo_url, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    deleteUser: db.prepare('DELETE FROM users WHERE id = ?'),
    getGroup: db.prepare(`SELECT ${GROUP_COLUMNS} FROM groups WHERE id = ?`),
    putGroup: db.prepare(
      `INSERT OR REPLACE INTO groups (id, subject, owner, capacity, overflow, closed, epoch, last_msg_id,
         member_count, parent, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, (SELECT COUNT(*) FROM members WHERE group_id = ?), ?, ?, ?)`,
    ),
    updateGroup: db.prepare(
      'UPDATE groups SET subject = ?, capacity = ?, overflow = ?, closed = ?, updated_at = ? WHERE id = ?',
    ),
    deleteGroup: db.prepare('DELETE FROM groups WHERE id = ?'),
    isMember: db.prepare('SELECT 1 FROM members WHERE group_id = ? AND user_id = ?'),
    insertMember: db.prepare('INSERT OR IGNORE INTO members (group_id, user_id, joined_at) VALUES (?, ?, ?)'),
    deleteMember: db.prepare('DELETE FROM members WHERE group_id = ? AND user_id = ?'),
    deleteMembers: db.prepare('DELETE FROM members WHERE group_id = ?'),
    countMembers: db.prepare('UPDATE groups SET member_count = member_count + ? WHERE id = ?'),
    listMembers: db.prepare(
      'SELECT user_id AS userId, joined_at AS joinedAt FROM members WHERE group_id = ? AND user_id > ? ORDER BY user_id LIMIT ?',
    ),
    after: db.prepare(
      `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE group_id = ? AND msg_id > ? ORDER BY msg_id LIMIT ?`,
    ),
    before: db.prepare(
      `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE group_id = ? AND msg_id < ? ORDER BY msg_id DESC LIMIT ?`,
    ),
    importMessage: db.prepare(
      `INSERT OR IGNORE INTO messages (group_id, msg_id, prev_msg_id, epoch, ts, user_id, contents, client_msg_id)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    raiseLast: db.prepare('UPDATE groups SET last_msg_id = MAX(last_msg_id, ?) WHERE id = ?'),
    deleteMessages: db.prepare('DELETE FROM messages WHERE group_id = ?'),
    rosterGet: db.prepare('SELECT conversation, pending FROM roster WHERE parent_id = ? AND user_id = ?'),
    rosterPut: db.prepare(
      'INSERT OR REPLACE INTO roster (parent_id, user_id, conversation, placed_at, pending) VALUES (?, ?, ?, ?, ?)',
    ),
    rosterDelete: db.prepare('DELETE FROM roster WHERE parent_id = ? AND user_id = ?'),
    rosterDeleteAll: db.prepare('DELETE FROM roster WHERE parent_id = ?'),
    rosterAll: db.prepare(
      'SELECT user_id AS userId, conversation, placed_at AS placedAt, pending FROM roster WHERE parent_id = ? ORDER BY user_id',
    ),
    rosterCounts: db.prepare(
      'SELECT conversation, COUNT(*) AS n FROM roster WHERE parent_id = ? GROUP BY conversation',
    ),
    readMap: db.prepare('SELECT map FROM shard_map WHERE id = 1').pluck(),
    writeMap: db.prepare('INSERT OR REPLACE INTO shard_map (id, map) VALUES (1, ?)'),
    groupIds: db.prepare('SELECT id FROM groups WHERE id > ? ORDER BY id LIMIT ?').pluck(),
    userIds: db.prepare(USER_INDEX_SQL.userIds).pluck(),
    anyData: db
      .prepare(
        'SELECT EXISTS (SELECT 1 FROM groups) OR EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM user_groups)',
      )
      .pluck(),
    lastStored: db.prepare('SELECT COALESCE(MAX(msg_id), 0) FROM messages WHERE group_id = ?').pluck(),
    lastMessages: db.prepare(
      `SELECT g.id AS groupId, g.epoch AS epoch, g.last_msg_id AS lastMsgId, m.ts AS ts
         FROM groups g JOIN messages m ON m.group_id = g.id AND m.msg_id = g.last_msg_id`,
    ),
    ...prepareIndexStatements(db),
    counts: db.prepare(
      'SELECT (SELECT COUNT(*) FROM groups) AS groups, (SELECT COALESCE(SUM(member_count), 0) FROM groups) AS members',
    ),
  };
  for (const stmt of Object.values(st)) keep(stmt);
  return st;
}

function prepareIndexStatements(db: Database.Database) {
  const q = USER_INDEX_SQL;
  return {
    queueChange: db.prepare(q.queueChange),
    queued: db.prepare(q.queued),
    queuedOf: db.prepare(q.queuedOf),
    queuedCount: db.prepare(q.queuedCount).pluck(),
    dequeue: db.prepare(q.dequeue),
    dequeueGroup: db.prepare(q.dequeueGroup),
    putUserGroup: db.prepare(q.putUserGroup),
    deleteUserGroup: db.prepare(q.deleteUserGroup),
    deleteUserGroups: db.prepare(q.deleteUserGroups),
    groupsOf: db.prepare(q.groupsOf),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/** Group ids `hasGroup` keeps in memory at most (the oldest is forgotten first). */
const KNOWN_GROUPS_MAX = 100_000;

export class Store extends EventEmitter<StoreEvents> {
  readonly file: string;
  /**
   * True when the volume was read-only at start: reads are served, every write throws
   * `StorageError('storage_readonly')`. A restart on a writable volume ends it.
   */
  readonly readOnly: boolean;
  private readonly db: Database.Database;
  private readonly writer: MessageWriter;
  /** Checkpoints off the commit path (none on a read-only volume, or with checkpointEveryMs 0). */
  readonly checkpointer: Checkpointer | undefined;
  private readonly st: Statements;
  /**
   * Groups known to exist (read once, then answered from memory: the post path asks on
   * every message). Only deleteGroup removes a group, and it forgets the id first.
   */
  private readonly known = new Set<string>();
  /** Memberships read once and found true (see KnownMembers: forgotten before any removal). */
  private readonly members = new KnownMembers();

  /**
   * `checkpointEveryMs`: how often a thread of its own copies the WAL into the database
   * file (checkpointer.ts); 0 leaves checkpoints to SQLite, inside the commits.
   */
  constructor(dataDir: string, ordinal: number, maxBatch = 1000, checkpointEveryMs = 100) {
    super();
    this.file = path.join(dataDir, `shard-${ordinal}.sqlite`);
    const opened = openDatabase(dataDir, this.file);
    this.db = opened.db;
    this.readOnly = opened.readOnly;
    this.st = prepareStatements(this.db);
    const checkpointing = !this.readOnly && checkpointEveryMs > 0;
    if (checkpointing) {
      this.db.exec(`PRAGMA wal_autocheckpoint = ${BACKSTOP_PAGES}`);
      this.checkpointer = new Checkpointer({
        file: this.file,
        everyMs: checkpointEveryMs,
        failed: (e) => this.emit('checkpoint-failed', e),
        recovered: (failures) => this.emit('checkpoint-recovered', failures),
      });
    }
    this.writer = new MessageWriter({
      file: this.file,
      maxBatch,
      autocheckpointPages: checkpointing ? BACKSTOP_PAGES : undefined,
      toError: wireError,
      committed: (messages, seconds) => {
        for (const m of messages) this.emit('changed', m.groupId);
        this.emit('committed', messages, seconds);
      },
    });
  }

  /** Lets queued appends commit, then closes the writer thread and the database. */
  async close(): Promise<void> {
    await this.writer.close();
    await this.checkpointer?.close();
    this.db.close();
  }

  /** Bytes of the database and its WAL on disk. */
  bytes(): number {
    return databaseBytes(this.file);
  }

  counts(): { groups: number; members: number } {
    return this.st.counts.get() as { groups: number; members: number };
  }

  private write<T>(fn: () => T): T {
    if (this.readOnly) throw readOnlyError();
    try {
      // IMMEDIATE: the write lock is taken at BEGIN (waiting up to busy_timeout) rather
      // than on the first write, which fails SQLITE_BUSY at once if the writer thread holds it.
      return this.db.transaction(fn).immediate();
    } catch (err) {
      throw storageError(err);
    }
  }

  // --- users ---

  getUser(id: string): UserRow | undefined {
    return this.st.getUser.get(id) as UserRow | undefined;
  }

  /** Creates or updates a profile; `created` tells which. */
  putUser(
    id: string,
    name: string,
    email: string | null,
    photoUrl: string | null,
  ): { user: UserRow; created: boolean } {
    const r = this.write(() => {
      const now = Date.now();
      const existing = this.getUser(id);
      if (existing) this.st.updateUser.run(name, email, photoUrl, now, id);
      else this.st.insertUser.run(id, name, email, photoUrl, now, now);
      return { user: this.getUser(id) as UserRow, created: !existing };
    });
    this.emit('changed', id);
    return r;
  }

  // --- groups and members ---

  getGroup(id: string): GroupRow | undefined {
    const r = this.st.getGroup.get(id) as (Omit<GroupRow, 'closed'> & { closed: number }) | undefined;
    return r ? toGroup(r) : undefined;
  }

  /** Whether the group exists (from memory once seen; see `known`). */
  hasGroup(id: string): boolean {
    if (this.known.has(id)) return true;
    if (this.st.getGroup.get(id) === undefined) return false;
    if (this.known.size >= KNOWN_GROUPS_MAX) this.known.delete(this.known.values().next().value as string);
    this.known.add(id);
    return true;
  }

  /** Creates a group with its owner as first member; a no-op returning the group if it exists. */
  createGroup(g: NewGroup): { group: GroupRow; created: boolean } {
    const r = this.write(() => {
      const existing = this.getGroup(g.id);
      if (existing) return { group: existing, created: false };
      const now = Date.now();
      this.putGroupRow({
        ...g,
        epoch: randomBytes(8).toString('hex'),
        lastMsgId: 0,
        createdAt: now,
        updatedAt: now,
      });
      if (g.firstMember) this.addMemberTx(g.id, g.firstMember, now);
      return { group: this.getGroup(g.id) as GroupRow, created: true };
    });
    if (r.created) {
      this.emit('changed', g.id);
      this.emit('members-changed', g.id);
      if (g.firstMember) this.emit('index-queued');
    }
    return r;
  }

  /** Writes a group's row (inside a transaction); its member count is counted from its members. */
  private putGroupRow(g: Omit<GroupRow, 'memberCount'>): void {
    this.st.putGroup.run(
      g.id,
      g.subject,
      g.owner,
      g.capacity,
      g.overflow,
      g.closed ? 1 : 0,
      g.epoch,
      g.lastMsgId,
      g.id,
      g.parent,
      g.createdAt,
      g.updatedAt,
    );
  }

  updateGroup(
    id: string,
    subject: string,
    capacity: number,
    overflow: 'reject' | 'shard',
    closed: boolean,
  ): GroupRow {
    const g = this.write(() => {
      this.st.updateGroup.run(subject, capacity, overflow, closed ? 1 : 0, Date.now(), id);
      return this.getGroup(id) as GroupRow;
    });
    this.emit('changed', id);
    return g;
  }

  isMember(groupId: string, userId: string): boolean {
    if (this.members.has(groupId, userId)) return true;
    const member = this.st.isMember.get(groupId, userId) !== undefined;
    if (member) this.members.add(groupId, userId);
    return member;
  }

  private addMemberTx(groupId: string, userId: string, now: number): boolean {
    const r = this.st.insertMember.run(groupId, userId, now);
    if (r && r.changes > 0) {
      this.st.countMembers.run(1, groupId);
      this.st.queueChange.run(userId, groupId, 1, now);
      return true;
    }
    return false;
  }

  /** Adds a member; false when already one. */
  addMember(groupId: string, userId: string): boolean {
    const added = this.write(() => this.addMemberTx(groupId, userId, Date.now()));
    if (added) {
      this.emit('changed', groupId);
      this.emit('members-changed', groupId);
      this.emit('index-queued');
    }
    return added;
  }

  /** Removes a member; false when not one. */
  removeMember(groupId: string, userId: string): boolean {
    this.members.forget(groupId);
    const removed = this.write(() => {
      const r = this.st.deleteMember.run(groupId, userId);
      if (r && r.changes > 0) {
        this.st.countMembers.run(-1, groupId);
        this.st.queueChange.run(userId, groupId, 0, Date.now());
        return true;
      }
      return false;
    });
    if (removed) {
      this.emit('changed', groupId);
      this.emit('members-changed', groupId);
      this.emit('member-removed', groupId, userId);
      this.emit('index-queued');
    }
    return removed;
  }

  listMembers(groupId: string, after: string, limit: number): MemberRow[] {
    return this.st.listMembers.all(groupId, after, limit) as MemberRow[];
  }

  // --- roster of sharded conversations (kept on the parent's shard) ---

  /**
   * Where the roster places a user: the conversation, and whether the placement is still
   * pending (recorded before the sub-conversation's shard confirmed the member).
   */
  rosterOf(parentId: string, userId: string): { conversation: string; pending: boolean } | undefined {
    const r = this.st.rosterGet.get(parentId, userId) as
      | { conversation: string; pending: number }
      | undefined;
    return r ? { conversation: r.conversation, pending: r.pending === 1 } : undefined;
  }

  /** Members per conversation of a parent, from the roster (pending placements included). */
  rosterCounts(parentId: string): Map<string, number> {
    const m = new Map<string, number>();
    for (const r of this.st.rosterCounts.all(parentId) as { conversation: string; n: number }[])
      m.set(r.conversation, r.n);
    return m;
  }

  placeInRoster(parentId: string, userId: string, conversation: string, pending = false): void {
    this.write(() => this.st.rosterPut.run(parentId, userId, conversation, Date.now(), pending ? 1 : 0));
    this.emit('changed', parentId);
  }

  removeFromRoster(parentId: string, userId: string): void {
    this.write(() => this.st.rosterDelete.run(parentId, userId));
    this.emit('changed', parentId);
  }

  // --- the groups of each user (docs/architecture.md section 4) ---

  /**
   * As a group's shard: the membership changes waiting to be written on their users'
   * shards, oldest first, after the outbox id `after`.
   */
  queuedChanges(after: number, limit: number): QueuedChange[] {
    return (this.st.queued.all(after, limit) as (Omit<QueuedChange, 'member'> & { member: number })[]).map(
      (r) => ({ ...r, member: r.member === 1 }),
    );
  }

  /** Changes waiting in the outbox. */
  queuedChangeCount(): number {
    return this.st.queuedCount.get() as number;
  }

  /**
   * The changes written on their users' shards leave the outbox; one replaced by a newer
   * change since it was read (another id) stays.
   */
  dequeueChanges(ids: readonly number[]): void {
    if (ids.length === 0) return;
    this.write(() => {
      for (const id of ids) this.st.dequeue.run(id);
    });
  }

  /**
   * As the user's shard: records that users joined or left groups (idempotent: the same
   * change twice leaves the same rows). One transaction.
   */
  applyMembershipChanges(changes: readonly MembershipChange[]): void {
    if (changes.length === 0) return;
    this.write(() => {
      for (const c of changes)
        if (c.member) this.st.putUserGroup.run(c.userId, c.groupId, c.joinedAt);
        else this.st.deleteUserGroup.run(c.userId, c.groupId);
    });
    for (const c of changes) {
      this.emit('changed', c.userId);
      this.emit('user-groups-changed', c);
    }
  }

  /** The groups of a user (kept on the user's shard), by group id, after `after`. */
  groupsOf(userId: string, after: string, limit: number): UserGroupRow[] {
    return this.st.groupsOf.all(userId, after, limit) as UserGroupRow[];
  }

  // --- messages ---

  /** Appends a message; resolves once it is durable (or with the earlier one for a repeated clientMsgId). */
  append(groupId: string, userId: string, contents: string, clientMsgId: string): Promise<AppendResult> {
    if (this.readOnly) {
      // A repeated clientMsgId still gets its first result; anything new is refused.
      const existing = this.st.byClientId.get(groupId, userId, clientMsgId) as Message | undefined;
      return existing
        ? Promise.resolve({ message: existing, created: false })
        : Promise.reject(readOnlyError());
    }
    return this.writer.append({ groupId, userId, contents, clientMsgId });
  }

  messagesAfter(groupId: string, after: number, limit: number): Message[] {
    return this.st.after.all(groupId, after, limit) as Message[];
  }

  messagesBefore(groupId: string, before: number, limit: number): Message[] {
    return (this.st.before.all(groupId, before, limit) as Message[]).reverse();
  }

  // --- the shard map and moving keys between shards (docs/architecture.md section 7) ---

  /** The shard map this shard accepted, as stored (JSON), or undefined before the first. */
  readMap(): unknown {
    const text = this.st.readMap.get() as string | undefined;
    return text === undefined ? undefined : JSON.parse(text);
  }

  writeMap(map: object): void {
    this.write(() => this.st.writeMap.run(JSON.stringify(map)));
  }

  /** True when any group or user is stored. */
  hasData(): boolean {
    return this.st.anyData.get() === 1;
  }

  /** Group ids after `after`, in order, `limit` at most. */
  groupIds(after: string, limit: number): string[] {
    return this.st.groupIds.all(after, limit) as string[];
  }

  /** User ids (with a profile or groups) after `after`, in order, `limit` at most. */
  userIds(after: string, limit: number): string[] {
    return this.st.userIds.all(after, after, limit) as string[];
  }

  /** The highest msgId stored of a group (0: none), whatever its row says. */
  lastStoredMsgId(groupId: string): number {
    return this.st.lastStored.get(groupId) as number;
  }

  /**
   * The groups whose last message came within `windowMs` of the newest message stored
   * here (one index lookup per group): those whose fan-out a crash may have cut short.
   */
  lastActive(windowMs: number): { groupId: string; epoch: string; lastMsgId: number }[] {
    let newest = 0;
    let found: { groupId: string; epoch: string; lastMsgId: number; ts: number }[] = [];
    for (const row of this.st.lastMessages.iterate() as Iterable<{
      groupId: string;
      epoch: string;
      lastMsgId: number;
      ts: number;
    }>) {
      if (row.ts < newest - windowMs) continue;
      if (row.ts > newest) newest = row.ts;
      found.push(row);
      // Bounded memory on a large shard: what fell out of the window goes now and then.
      if (found.length % 4096 === 0) found = found.filter((f) => f.ts >= newest - windowMs);
    }
    return found
      .filter((f) => f.ts >= newest - windowMs)
      .map(({ groupId, epoch, lastMsgId }) => ({ groupId, epoch, lastMsgId }));
  }

  /** Resolves when no append is queued or committing. */
  settled(): Promise<void> {
    return this.writer.idle();
  }

  /** A group with its members and roster (its messages are read with messagesAfter). */
  exportGroup(id: string): GroupSnapshot | undefined {
    const group = this.getGroup(id);
    if (!group) return undefined;
    const members: MemberRow[] = [];
    for (let after = ''; ; ) {
      const page = this.listMembers(id, after, 1000);
      members.push(...page);
      if (page.length < 1000) break;
      after = (page[page.length - 1] as MemberRow).userId;
    }
    const roster = (this.st.rosterAll.all(id) as (Omit<RosterRow, 'pending'> & { pending: number })[]).map(
      (r) => ({ ...r, pending: r.pending === 1 }),
    );
    const outbox = (
      this.st.queuedOf.all(id) as (Omit<MembershipChange, 'member'> & { member: number })[]
    ).map((r) => ({ ...r, member: r.member === 1 }));
    return { group, members, roster, outbox };
  }

  /**
   * Writes a group as exported from another shard, replacing what is stored of it (row,
   * members, roster; its messages are kept and added to with importMessages). The
   * group keeps its epoch; its lastMsgId is the higher of the snapshot's and the
   * messages imported so far. One transaction: all of it or nothing.
   */
  importGroup(s: GroupSnapshot): void {
    const g = s.group;
    this.members.forget(g.id);
    this.write(() => {
      this.st.deleteMembers.run(g.id);
      for (const m of s.members) this.st.insertMember.run(g.id, m.userId, m.joinedAt);
      const current = this.getGroup(g.id);
      const lastMsgId = Math.max(g.lastMsgId, current?.epoch === g.epoch ? current.lastMsgId : 0);
      this.putGroupRow({ ...g, lastMsgId });
      this.st.rosterDeleteAll.run(g.id);
      for (const r of s.roster)
        this.st.rosterPut.run(g.id, r.userId, r.conversation, r.placedAt, r.pending ? 1 : 0);
      this.st.dequeueGroup.run(g.id);
      for (const c of s.outbox ?? []) this.st.queueChange.run(c.userId, g.id, c.member ? 1 : 0, c.joinedAt);
    });
    this.emit('replaced', g.id);
    this.emit('members-changed', g.id);
    if ((s.outbox ?? []).length > 0) this.emit('index-queued');
  }

  /**
   * Stores messages of a group copied from another shard, with their msgIds (those
   * already stored are skipped), and raises the group's lastMsgId to the last of them.
   * The group must exist here (importGroup first) with the messages' epoch.
   */
  importMessages(groupId: string, messages: readonly Message[]): number {
    if (messages.length === 0) return 0;
    const added = this.write(() => {
      const g = this.getGroup(groupId);
      if (!g) throw new StorageError(`group ${groupId} does not exist`, 'no_group');
      let added = 0;
      let last = 0;
      for (const m of messages) {
        if (m.groupId !== groupId || m.epoch !== g.epoch)
          throw new StorageError(
            `message ${m.groupId}/${m.msgId} does not belong to ${groupId} in epoch ${g.epoch}`,
            'bad_import',
          );
        const r = this.st.importMessage.run(
          groupId,
          m.msgId,
          m.prevMsgId,
          m.epoch,
          m.ts,
          m.userId,
          m.contents,
          m.clientMsgId,
        );
        added += r.changes;
        if (m.msgId > last) last = m.msgId;
      }
      this.st.raiseLast.run(last, groupId);
      return added;
    });
    this.emit('replaced', groupId);
    return added;
  }

  /** A user's profile and groups, or undefined when neither is stored here. */
  exportUser(id: string): UserSnapshot | undefined {
    const profile = this.getUser(id) ?? null;
    const groups: UserGroupRow[] = [];
    for (let after = ''; ; ) {
      const page = this.groupsOf(id, after, 1000);
      groups.push(...page);
      if (page.length < 1000) break;
      after = (page[page.length - 1] as UserGroupRow).groupId;
    }
    return profile || groups.length > 0 ? { id, profile, groups } : undefined;
  }

  /** Writes a user as exported from another shard, replacing what is stored of it. One transaction. */
  importUser(u: UserSnapshot): void {
    this.write(() => {
      const p = u.profile;
      if (p) this.st.putUser.run(u.id, p.name, p.email, p.photoUrl, p.createdAt, p.updatedAt);
      else this.st.deleteUser.run(u.id);
      this.st.deleteUserGroups.run(u.id);
      for (const g of u.groups) this.st.putUserGroup.run(u.id, g.groupId, g.joinedAt);
    });
  }

  /** Deletes a group with its members, roster and messages (after it moved away). */
  deleteGroup(id: string): boolean {
    this.known.delete(id);
    this.members.forget(id);
    const deleted = this.write(() => {
      this.st.deleteMessages.run(id);
      this.st.deleteMembers.run(id);
      this.st.rosterDeleteAll.run(id);
      this.st.dequeueGroup.run(id);
      return this.st.deleteGroup.run(id).changes > 0;
    });
    if (deleted) {
      this.emit('replaced', id);
      this.emit('members-changed', id);
    }
    return deleted;
  }

  /** Deletes a user's profile and groups (after it moved away). */
  deleteUser(id: string): boolean {
    return this.write(
      () => this.st.deleteUser.run(id).changes + this.st.deleteUserGroups.run(id).changes > 0,
    );
  }
}
