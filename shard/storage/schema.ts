/**
 * The shard database's schema, its migrations (PRAGMA user_version counts the applied
 * ones) and the rows as the code sees them.
 */

export const MIGRATIONS: string[] = [
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
  // shard is written, and confirmed after (see shard/cluster/membership.ts).
  'ALTER TABLE roster ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;',
  // The shard map this shard accepted (docs/architecture.md section 7): one row, JSON.
  'CREATE TABLE shard_map (id INTEGER PRIMARY KEY CHECK (id = 1), map TEXT NOT NULL) STRICT;',
  // The groups of each user, kept on the user's shard (docs/architecture.md section 4), and
  // on a group's shard the changes of its members not yet written there (an outbox: one
  // row per user and group, the latest change; its id orders and versions it).
  `CREATE TABLE user_groups (
     user_id TEXT NOT NULL, group_id TEXT NOT NULL, joined_at INTEGER NOT NULL,
     PRIMARY KEY (user_id, group_id)) STRICT, WITHOUT ROWID;
   CREATE TABLE user_index_outbox (
     id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, group_id TEXT NOT NULL,
     member INTEGER NOT NULL, joined_at INTEGER NOT NULL, UNIQUE (user_id, group_id)) STRICT;
   CREATE INDEX user_index_outbox_group ON user_index_outbox (group_id);`,
];

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

export interface MemberRow {
  userId: string;
  joinedAt: number;
}

/** A roster entry of a parent group: where one of its users sits. */
export interface RosterRow {
  userId: string;
  conversation: string;
  placedAt: number;
  /** Recorded before the sub-conversation's shard confirmed the member. */
  pending: boolean;
}

/** A group of a user, as the user's shard keeps it. */
export interface UserGroupRow {
  groupId: string;
  joinedAt: number;
}

/**
 * A change of membership for the user's shard: the user is (`member`) or is no longer
 * a member of the group. On the group's shard it waits in the outbox under `id`.
 */
export interface MembershipChange {
  userId: string;
  groupId: string;
  member: boolean;
  joinedAt: number;
}

/** A change waiting in the outbox of the group's shard; `id` grows with every change. */
export interface QueuedChange extends MembershipChange {
  id: number;
}

/** A user as moved between shards: the profile (if one was written) and the groups. */
export interface UserSnapshot {
  id: string;
  profile: UserRow | null;
  groups: UserGroupRow[];
}

/** Columns of a user row as a UserRow. */
export const USER_COLUMNS =
  'id, name, email, photo_url AS photoUrl, created_at AS createdAt, updated_at AS updatedAt';

/** Columns of a group row as a GroupRow (but `closed`, an integer: see toGroup). */
export const GROUP_COLUMNS =
  'id, subject, owner, capacity, overflow, closed, epoch, last_msg_id AS lastMsgId, member_count AS memberCount, parent, created_at AS createdAt, updated_at AS updatedAt';

export function toGroup(r: GroupRow | (Omit<GroupRow, 'closed'> & { closed: number })): GroupRow {
  return { ...r, closed: r.closed === 1 || r.closed === true };
}
