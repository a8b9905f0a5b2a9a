/**
 * SQL of the groups of each user (docs/architecture.md section 4): `user_groups` on the
 * user's shard, and on a group's shard `user_index_outbox`, the membership changes not
 * yet written there. Writing a change replaces the pending one of the same user and
 * group (only the latest state is sent) and gives it a new id, so a change read, sent
 * and then replaced is not dequeued by the answer to the older one.
 */
export const USER_INDEX_SQL = {
  queueChange: `INSERT OR REPLACE INTO user_index_outbox (user_id, group_id, member, joined_at)
    VALUES (?, ?, ?, ?)`,
  queued: `SELECT id, user_id AS userId, group_id AS groupId, member, joined_at AS joinedAt
    FROM user_index_outbox WHERE id > ? ORDER BY id LIMIT ?`,
  queuedOf: `SELECT user_id AS userId, group_id AS groupId, member, joined_at AS joinedAt
    FROM user_index_outbox WHERE group_id = ? ORDER BY id`,
  queuedCount: 'SELECT COUNT(*) FROM user_index_outbox',
  dequeue: 'DELETE FROM user_index_outbox WHERE id = ?',
  dequeueGroup: 'DELETE FROM user_index_outbox WHERE group_id = ?',
  putUserGroup: 'INSERT OR REPLACE INTO user_groups (user_id, group_id, joined_at) VALUES (?, ?, ?)',
  deleteUserGroup: 'DELETE FROM user_groups WHERE user_id = ? AND group_id = ?',
  deleteUserGroups: 'DELETE FROM user_groups WHERE user_id = ?',
  groupsOf: `SELECT group_id AS groupId, joined_at AS joinedAt FROM user_groups
    WHERE user_id = ? AND group_id > ? ORDER BY group_id LIMIT ?`,
  /** Users with a profile or with groups. */
  userIds: `SELECT id FROM (
      SELECT id FROM users WHERE id > ?
      UNION SELECT DISTINCT user_id FROM user_groups WHERE user_id > ?)
    ORDER BY id LIMIT ?`,
} as const;
