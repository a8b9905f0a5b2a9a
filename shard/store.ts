/**
 * The shard's durable state in SQLite (better-sqlite3, WAL, synchronous=FULL): users,
 * groups, members, messages and the roster of sharded conversations. Messages are
 * appended with group commit on a writer thread (MessageWriter): every append waiting
 * while a batch commits goes into the next transaction (one fsync), and each caller is
 * answered only after the transaction holding its message committed.
 */
import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { type AppendResult, MESSAGE_SQL, type Message, toMessage, type WireError } from './message-sql.js';
import { MessageWriter } from './message-writer.js';

export type { AppendResult, Message } from './message-sql.js';

/**
 * Every better-sqlite3 Database and Statement this process creates, kept reachable for
 * the life of the process. better-sqlite3 12 wraps them in node::ObjectWrap, and on
 * Node.js 24.19+ an ObjectWrap finalized by a garbage collection that runs outside a
 * JavaScript context aborts the process (`RemoveEnvironmentCleanupHook: Assertion
 * failed: (env) != nullptr`; better-sqlite3 13 fixes it but needs Node 22). Seen here:
 * a shard aborted at start while a large module loaded. So no statement is ever left
 * to the collector: statements are prepared once and kept, pragmas go through exec().
 */
const NATIVE_OBJECTS = new Set<object>();

// URI file names (`file:…?immutable=1`, used to read a database on a read-only volume)
// are off in better-sqlite3's build unless SQLITE_USE_URI=1 when its native addon loads,
// which is on the first `new Database`. Plain paths mean the same either way.
process.env.SQLITE_USE_URI ??= '1';

export interface UserRow {
  id: string;
  name: string;
  email: string | null;
  photoUrl: string | null;
  createdAt: number;
  updatedAt: number;
}

export interface GroupRow {
  id: string;
  subject: string;
  owner: string;
  capacity: number;
  overflow: 'reject' | 'shard';
  closed: boolean;
  epoch: string;
  lastMsgId: number;
  memberCount: number;
  /** The parent of a sub-conversation `{parent}~k`, else null. */
  parent: string | null;
  createdAt: number;
  updatedAt: number;
}

export class StorageError extends Error {
  override name = 'StorageError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

const MIGRATIONS: string[] = [
  `CREATE TABLE users (
     id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, photo_url TEXT,
     created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL) STRICT;
   CREATE TABLE groups (
     id TEXT PRIMARY KEY, subject TEXT NOT NULL, owner TEXT NOT NULL, capacity INTEGER NOT NULL,
     overflow TEXT NOT NULL, closed INTEGER NOT NULL, epoch TEXT NOT NULL,
     last_msg_id INTEGER NOT NULL DEFAULT 0, member_count INTEGER NOT NULL DEFAULT 0, parent TEXT,
     created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL) STRICT;
   CREATE TABLE members (
     group_id TEXT NOT NULL, user_id TEXT NOT NULL, joined_at INTEGER NOT NULL,
     PRIMARY KEY (group_id, user_id)) STRICT, WITHOUT ROWID;
   CREATE TABLE messages (
     group_id TEXT NOT NULL, msg_id INTEGER NOT NULL, prev_msg_id INTEGER NOT NULL, epoch TEXT NOT NULL,
     ts INTEGER NOT NULL, user_id TEXT NOT NULL, contents TEXT NOT NULL, client_msg_id TEXT NOT NULL,
     PRIMARY KEY (group_id, msg_id)) STRICT, WITHOUT ROWID;
   CREATE UNIQUE INDEX messages_client ON messages (group_id, user_id, client_msg_id);
   CREATE TABLE roster (
     parent_id TEXT NOT NULL, user_id TEXT NOT NULL, conversation TEXT NOT NULL, placed_at INTEGER NOT NULL,
     PRIMARY KEY (parent_id, user_id)) STRICT, WITHOUT ROWID;
   CREATE INDEX roster_conversation ON roster (parent_id, conversation);`,
  // A placement in a sub-conversation on another shard is recorded as pending before that
  // shard is written, and confirmed after (see shard/membership.ts).
  'ALTER TABLE roster ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;',
];

function toGroup(r: Record<string, unknown>): GroupRow {
  return {
    id: r.id as string,
    subject: r.subject as string,
    owner: r.owner as string,
    capacity: r.capacity as number,
    overflow: r.overflow as 'reject' | 'shard',
    closed: r.closed === 1,
    epoch: r.epoch as string,
    lastMsgId: r.last_msg_id as number,
    memberCount: r.member_count as number,
    parent: (r.parent as string | null) ?? null,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  };
}

function toUser(r: Record<string, unknown>): UserRow {
  return {
    id: r.id as string,
    name: r.name as string,
    email: (r.email as string | null) ?? null,
    photoUrl: (r.photo_url as string | null) ?? null,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  };
}

/** What every write answers when the store was opened read-only (503 to clients). */
export function readOnlyError(): StorageError {
  return new StorageError(
    "the shard's data volume is read-only: reads are served, writes are refused until the volume is writable again and the shard restarted",
    'storage_readonly',
  );
}

/** Whether opening read-write failed because the volume is read-only. */
function isReadOnlyCause(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return (
    typeof code === 'string' &&
    (code === 'EROFS' || code === 'SQLITE_CANTOPEN' || code.startsWith('SQLITE_READONLY'))
  );
}

function fileSize(file: string): number | undefined {
  try {
    return statSync(file).size;
  } catch {
    return undefined;
  }
}

/**
 * Opens the database of a read-only volume for reading, or throws why it cannot. A plain
 * read-only open needs the `-shm` file of a WAL database (left by a process that was
 * killed, with its `-wal`); after a clean shutdown neither exists and neither can be
 * created, so the file is opened `immutable` (no locks, no WAL), which is exact only
 * when there is no WAL content: a `-wal` with commits but no `-shm` is refused.
 */
function openReadOnly(file: string, cause: unknown): Database.Database {
  const why = (e: unknown) => (e as Error).message ?? String(e);
  const open = (name: string): Database.Database => {
    const db = new Database(name, { readonly: true, fileMustExist: true });
    NATIVE_OBJECTS.add(db);
    try {
      // The first read opens the WAL index: a failure shows here, not in the constructor.
      db.exec('PRAGMA schema_version');
      return db;
    } catch (err) {
      db.close();
      throw err;
    }
  };
  try {
    return open(file);
  } catch (first) {
    const wal = fileSize(`${file}-wal`) ?? 0;
    if (fileSize(file) === undefined || wal > 0) {
      throw new Error(
        `cannot open ${file}: the volume is read-only (${why(cause)}), and ${
          wal > 0
            ? 'the write-ahead log holds commits that only a writable volume can recover'
            : 'there is no database to read'
        } (${why(first)})`,
      );
    }
    const uri = `file:${path.resolve(file).split(path.sep).map(encodeURIComponent).join('/')}?immutable=1`;
    try {
      return open(uri);
    } catch (second) {
      throw new Error(
        `cannot open ${file} read-only on a read-only volume (${why(cause)}): ${why(first)}; immutable: ${why(second)}`,
      );
    }
  }
}

/** Maps SQLite's disk errors to StorageError (503 to clients), others pass. */
function storageError(err: unknown): Error {
  const code = (err as { code?: string }).code ?? '';
  if (code === 'SQLITE_FULL') return new StorageError("the shard's disk is full", 'storage_full');
  if (code.startsWith('SQLITE_READONLY'))
    return new StorageError("the shard's storage is read-only", 'storage_readonly');
  if (code.startsWith('SQLITE_IOERR') || code === 'SQLITE_CANTOPEN' || code === 'SQLITE_CORRUPT') {
    return new StorageError(`the shard's storage failed (${code})`, 'storage_failed');
  }
  return err as Error;
}

/** An error from the writer thread: ours (no_group) or SQLite's, mapped as storageError does. */
function wireError(e: WireError): Error {
  if (e.code === 'no_group') return new StorageError(e.message, 'no_group');
  return storageError(Object.assign(new Error(e.message), { code: e.code }));
}

function prepareStatements(db: Database.Database) {
  return {
    getUser: db.prepare('SELECT * FROM users WHERE id = ?'),
    byClientId: db.prepare(MESSAGE_SQL.byClientId),
    insertUser: db.prepare(
      'INSERT INTO users (id, name, email, photo_url, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    updateUser: db.prepare(
      'UPDATE users SET name = ?, email = ?, photo_url = ?, updated_at = ? WHERE id = ?',
    ),
    getGroup: db.prepare('SELECT * FROM groups WHERE id = ?'),
    insertGroup: db.prepare(
      `INSERT INTO groups (id, subject, owner, capacity, overflow, closed, epoch, parent, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    updateGroup: db.prepare(
      'UPDATE groups SET subject = ?, capacity = ?, overflow = ?, closed = ?, updated_at = ? WHERE id = ?',
    ),
    isMember: db.prepare('SELECT 1 FROM members WHERE group_id = ? AND user_id = ?'),
    insertMember: db.prepare('INSERT OR IGNORE INTO members (group_id, user_id, joined_at) VALUES (?, ?, ?)'),
    deleteMember: db.prepare('DELETE FROM members WHERE group_id = ? AND user_id = ?'),
    countMembers: db.prepare('UPDATE groups SET member_count = member_count + ? WHERE id = ?'),
    listMembers: db.prepare(
      'SELECT user_id, joined_at FROM members WHERE group_id = ? AND user_id > ? ORDER BY user_id LIMIT ?',
    ),
    after: db.prepare('SELECT * FROM messages WHERE group_id = ? AND msg_id > ? ORDER BY msg_id LIMIT ?'),
    before: db.prepare(
      'SELECT * FROM messages WHERE group_id = ? AND msg_id < ? ORDER BY msg_id DESC LIMIT ?',
    ),
    rosterGet: db.prepare('SELECT conversation, pending FROM roster WHERE parent_id = ? AND user_id = ?'),
    rosterPut: db.prepare(
      'INSERT OR REPLACE INTO roster (parent_id, user_id, conversation, placed_at, pending) VALUES (?, ?, ?, ?, ?)',
    ),
    rosterDelete: db.prepare('DELETE FROM roster WHERE parent_id = ? AND user_id = ?'),
    rosterCounts: db.prepare(
      'SELECT conversation, COUNT(*) AS n FROM roster WHERE parent_id = ? GROUP BY conversation',
    ),
    counts: db.prepare(
      'SELECT (SELECT COUNT(*) FROM groups) AS groups, (SELECT COALESCE(SUM(member_count), 0) FROM groups) AS members',
    ),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

export class Store {
  readonly file: string;
  /**
   * True when the volume was read-only at start: reads are served, every write throws
   * `StorageError('storage_readonly')`. A restart on a writable volume ends it.
   */
  readonly readOnly: boolean;
  private readonly db: Database.Database;
  private readonly writer: MessageWriter;
  private readonly st: Statements;
  /** Called after a membership was removed (every path: leave, owner removal, internal calls). */
  onMemberRemoved: ((groupId: string, userId: string) => void) | undefined;
  /** Called after a group's members changed (join, leave, creation with a first member). */
  onMembersChanged: ((groupId: string) => void) | undefined;
  /** Called after each committed batch with the new messages, in commit order. */
  onCommitted: ((messages: Message[], seconds: number) => void) | undefined;

  constructor(dataDir: string, ordinal: number, maxBatch = 1000) {
    this.file = path.join(dataDir, `shard-${ordinal}.sqlite`);
    let db: Database.Database | undefined;
    try {
      mkdirSync(dataDir, { recursive: true });
      // A read-only volume (EROFS) is told at once: SQLite may open a WAL database there
      // "read-write" when its -shm exists, and fail only at the first write.
      accessSync(dataDir, constants.W_OK);
      db = new Database(this.file);
      NATIVE_OBJECTS.add(db);
      this.db = db;
      // Pragmas through exec(): db.pragma() prepares a throwaway statement (see NATIVE_OBJECTS).
      this.db.exec(
        'PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000',
      );
      this.migrate();
      this.readOnly = false;
    } catch (err) {
      if (!isReadOnlyCause(err)) throw err;
      db?.close();
      // Read-only volume: no WAL pragma, no migrations; the schema must be current.
      this.db = openReadOnly(this.file, err);
      this.readOnly = true;
      const read = this.db.prepare('PRAGMA user_version').pluck();
      NATIVE_OBJECTS.add(read);
      const version = read.get() as number;
      if (version < MIGRATIONS.length) {
        this.db.close();
        throw new Error(
          `cannot serve ${this.file} from a read-only volume: its schema (version ${version}) is older than this code's (${MIGRATIONS.length}) and cannot be migrated there`,
        );
      }
    }
    this.st = prepareStatements(this.db);
    for (const stmt of Object.values(this.st)) NATIVE_OBJECTS.add(stmt);
    this.writer = new MessageWriter({
      file: this.file,
      maxBatch,
      toError: wireError,
      committed: (messages, seconds) => this.onCommitted?.(messages, seconds),
    });
  }

  private migrate(): void {
    const read = this.db.prepare('PRAGMA user_version').pluck();
    NATIVE_OBJECTS.add(read);
    const version = read.get() as number;
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v] as string);
        this.db.exec(`PRAGMA user_version = ${v + 1}`);
      })();
    }
  }

  /** Lets queued appends commit, then closes the writer thread and the database. */
  async close(): Promise<void> {
    await this.writer.close();
    this.db.close();
  }

  /** Bytes of the database and its WAL on disk. */
  bytes(): number {
    let n = 0;
    for (const f of [this.file, `${this.file}-wal`]) {
      try {
        n += statSync(f).size;
      } catch {
        // not there (yet)
      }
    }
    return n;
  }

  counts(): { groups: number; members: number } {
    return this.st.counts.get() as { groups: number; members: number };
  }

  private write<T>(fn: () => T): T {
    if (this.readOnly) throw readOnlyError();
    try {
      return this.db.transaction(fn)();
    } catch (err) {
      throw storageError(err);
    }
  }

  // --- users ---

  getUser(id: string): UserRow | undefined {
    const r = this.st.getUser.get(id) as Record<string, unknown> | undefined;
    return r ? toUser(r) : undefined;
  }

  /** Creates or updates a profile; `created` tells which. */
  putUser(
    id: string,
    name: string,
    email: string | null,
    photoUrl: string | null,
  ): { user: UserRow; created: boolean } {
    return this.write(() => {
      const now = Date.now();
      const existing = this.getUser(id);
      if (existing) this.st.updateUser.run(name, email, photoUrl, now, id);
      else this.st.insertUser.run(id, name, email, photoUrl, now, now);
      return { user: this.getUser(id) as UserRow, created: !existing };
    });
  }

  // --- groups and members ---

  getGroup(id: string): GroupRow | undefined {
    const r = this.st.getGroup.get(id) as Record<string, unknown> | undefined;
    return r ? toGroup(r) : undefined;
  }

  /** Creates a group with its owner as first member; a no-op returning the group if it exists. */
  createGroup(g: {
    id: string;
    subject: string;
    owner: string;
    capacity: number;
    overflow: 'reject' | 'shard';
    closed: boolean;
    parent: string | null;
    firstMember: string | null;
  }): { group: GroupRow; created: boolean } {
    const r = this.write(() => {
      const existing = this.getGroup(g.id);
      if (existing) return { group: existing, created: false };
      const now = Date.now();
      const epoch = randomBytes(8).toString('hex');
      this.st.insertGroup.run(
        g.id,
        g.subject,
        g.owner,
        g.capacity,
        g.overflow,
        g.closed ? 1 : 0,
        epoch,
        g.parent,
        now,
        now,
      );
      if (g.firstMember) this.addMemberTx(g.id, g.firstMember, now);
      return { group: this.getGroup(g.id) as GroupRow, created: true };
    });
    if (r.created) this.onMembersChanged?.(g.id);
    return r;
  }

  updateGroup(
    id: string,
    subject: string,
    capacity: number,
    overflow: 'reject' | 'shard',
    closed: boolean,
  ): GroupRow {
    return this.write(() => {
      this.st.updateGroup.run(subject, capacity, overflow, closed ? 1 : 0, Date.now(), id);
      return this.getGroup(id) as GroupRow;
    });
  }

  isMember(groupId: string, userId: string): boolean {
    return this.st.isMember.get(groupId, userId) !== undefined;
  }

  private addMemberTx(groupId: string, userId: string, now: number): boolean {
    const r = this.st.insertMember.run(groupId, userId, now);
    if (r && r.changes > 0) {
      this.st.countMembers.run(1, groupId);
      return true;
    }
    return false;
  }

  /** Adds a member; false when already one. */
  addMember(groupId: string, userId: string): boolean {
    const added = this.write(() => this.addMemberTx(groupId, userId, Date.now()));
    if (added) this.onMembersChanged?.(groupId);
    return added;
  }

  /** Removes a member; false when not one. */
  removeMember(groupId: string, userId: string): boolean {
    const removed = this.write(() => {
      const r = this.st.deleteMember.run(groupId, userId);
      if (r && r.changes > 0) {
        this.st.countMembers.run(-1, groupId);
        return true;
      }
      return false;
    });
    if (removed) {
      this.onMembersChanged?.(groupId);
      this.onMemberRemoved?.(groupId, userId);
    }
    return removed;
  }

  listMembers(groupId: string, after: string, limit: number): { userId: string; joinedAt: number }[] {
    return (this.st.listMembers.all(groupId, after, limit) as Record<string, unknown>[]).map((r) => ({
      userId: r.user_id as string,
      joinedAt: r.joined_at as number,
    }));
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
  }

  removeFromRoster(parentId: string, userId: string): void {
    this.write(() => this.st.rosterDelete.run(parentId, userId));
  }

  // --- messages ---

  /** Appends a message; resolves once it is durable (or with the earlier one for a repeated clientMsgId). */
  append(groupId: string, userId: string, contents: string, clientMsgId: string): Promise<AppendResult> {
    if (this.readOnly) {
      // A repeated clientMsgId still gets its first result; anything new is refused.
      const existing = this.st.byClientId.get(groupId, userId, clientMsgId) as
        | Record<string, unknown>
        | undefined;
      return existing
        ? Promise.resolve({ message: toMessage(existing), created: false })
        : Promise.reject(readOnlyError());
    }
    return this.writer.append({ groupId, userId, contents, clientMsgId });
  }

  messagesAfter(groupId: string, after: number, limit: number): Message[] {
    return (this.st.after.all(groupId, after, limit) as Record<string, unknown>[]).map(toMessage);
  }

  messagesBefore(groupId: string, before: number, limit: number): Message[] {
    return (this.st.before.all(groupId, before, limit) as Record<string, unknown>[]).map(toMessage).reverse();
  }
}
