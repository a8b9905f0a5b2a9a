/**
 * The delivery records one shard sends another (docs/delivery-protocol.md sections 2-7):
 * their types, how a group's shard builds them, and their schema, which the receiving
 * session host checks every batch against (POST /internal/deliver).
 */
import { z } from 'zod';
import { isGroupId, type Message } from '../../common/protocol.js';
import type { Tick } from './modes.js';

export interface MessageRecord {
  kind: 'message';
  groupId: string;
  epoch: string;
  msgId: number;
  prevMsgId: number;
  recipients: string[];
  /** Recipients on a group WebSocket of the group's shard when it was sent (not offline). */
  live?: string[];
  event: Record<string, unknown>;
}

export interface TypingRecord {
  kind: 'typing';
  groupId: string;
  recipients: string[];
  event: Record<string, unknown>;
}

/** A change of a member's presence (never stored, delivered as it comes, like typing). */
export interface PresenceRecord {
  kind: 'presence';
  groupId: string;
  recipients: string[];
  event: Record<string, unknown>;
}

/** Anti-entropy: the group's last msgId, for hosts that missed records to repair. */
export interface HeadRecord {
  kind: 'head';
  groupId: string;
  epoch: string;
  lastMsgId: number;
}

/** Pull mode: the group's head and mode; clients read the messages themselves. */
export interface TickRecord {
  kind: 'tick';
  groupId: string;
  epoch: string;
  lastMsgId: number;
  mode: 'push' | 'pull';
  recipients: string[];
  event: Record<string, unknown>;
}

export type DeliveryRecord = MessageRecord | TypingRecord | PresenceRecord | HeadRecord | TickRecord;

/** A batch as POST /internal/deliver carries it. */
export interface DeliveryBatch {
  from: number;
  seq: number;
  records: DeliveryRecord[];
}

// --- building ---

export function messageRecord(m: Message, recipients: string[], live: string[] | undefined): MessageRecord {
  return {
    kind: 'message',
    groupId: m.groupId,
    epoch: m.epoch,
    msgId: m.msgId,
    prevMsgId: m.prevMsgId,
    recipients,
    ...(live && live.length > 0 ? { live } : {}),
    event: { type: 'message', ...m },
  };
}

export function tickRecord(t: Tick, recipients: string[]): TickRecord {
  return {
    kind: 'tick',
    groupId: t.groupId,
    epoch: t.epoch,
    lastMsgId: t.lastMsgId,
    mode: t.mode,
    recipients,
    event: { type: 'tick', groupId: t.groupId, epoch: t.epoch, lastMsgId: t.lastMsgId, mode: t.mode },
  };
}

export function headRecord(groupId: string, epoch: string, lastMsgId: number): HeadRecord {
  return { kind: 'head', groupId, epoch, lastMsgId };
}

/** A typing or presence event for the recipients of one host. */
export function eventRecord(
  kind: 'typing' | 'presence',
  groupId: string,
  recipients: string[],
  event: Record<string, unknown>,
): TypingRecord | PresenceRecord {
  return { kind, groupId, recipients, event };
}

// --- checking ---

const groupId = z.string().refine(isGroupId, 'not a group id');
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const users = z.array(z.string());
const event = z.record(z.string(), z.unknown());

const recordSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('message'),
    groupId,
    epoch: z.string(),
    msgId: count,
    prevMsgId: count,
    recipients: users,
    live: users.optional(),
    event,
  }),
  z.object({ kind: z.literal('typing'), groupId, recipients: users, event }),
  z.object({ kind: z.literal('presence'), groupId, recipients: users, event }),
  z.object({ kind: z.literal('head'), groupId, epoch: z.string(), lastMsgId: count }),
  z.object({
    kind: z.literal('tick'),
    groupId,
    epoch: z.string(),
    lastMsgId: count,
    mode: z.enum(['push', 'pull']),
    recipients: users,
    event,
  }),
]);

export const deliveryBatchSchema = z.object({
  from: count,
  seq: count,
  records: z.array(recordSchema),
});
