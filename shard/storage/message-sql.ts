/**
 * What the store and the message-writer thread share: the message row as SQL reads it,
 * the statements of an append, and the messages between the two threads.
 */
import type { Message } from '../../common/protocol.js';
import type { WireError } from './errors.js';

export type { Message } from '../../common/protocol.js';

export interface AppendResult {
  message: Message;
  /** False when the clientMsgId was already stored: the first result is returned. */
  created: boolean;
}

export interface AppendRequest {
  groupId: string;
  userId: string;
  contents: string;
  clientMsgId: string;
}

/**
 * What the writer thread decided for a message it stored: the rest of the message is the
 * request's, which the main thread holds (the reply does not carry the contents back).
 */
export interface AppendDecision {
  msgId: number;
  prevMsgId: number;
  epoch: string;
  ts: number;
}

/** Per append: stored now (the decision), already stored (the earlier message), or refused. */
export type BatchOutcome = AppendDecision | { existing: Message } | { error: WireError };

export type WriterRequest = { type: 'batch'; id: number; items: AppendRequest[] } | { type: 'close' };

export type WriterReply =
  | { type: 'ready' }
  | { type: 'open-failed'; error: WireError }
  | { type: 'done'; id: number; results: BatchOutcome[]; seconds: number }
  | { type: 'failed'; id: number; error: WireError };

/** A message row as a Message (SQLite answers the object itself: no mapping per row). */
export const MESSAGE_COLUMNS =
  'group_id AS groupId, msg_id AS msgId, prev_msg_id AS prevMsgId, epoch, ts, user_id AS userId, contents, client_msg_id AS clientMsgId';

export const MESSAGE_SQL = {
  groupHead: 'SELECT last_msg_id, epoch FROM groups WHERE id = ?',
  byClientId: `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE group_id = ? AND user_id = ? AND client_msg_id = ?`,
  insertMessage: `INSERT INTO messages (group_id, msg_id, prev_msg_id, epoch, ts, user_id, contents, client_msg_id)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  setLast: 'UPDATE groups SET last_msg_id = ? WHERE id = ?',
} as const;
