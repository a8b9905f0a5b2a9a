/**
 * The outbox shared by GroupConnection and InboxConnection: each message gets a
 * `clientMsgId` once and keeps it over every resend (after a reconnect, an ack timeout
 * or a switch of sockets), so the shard stores it once. A message that cannot be sent
 * is marked failed and can be retried. Where an entry is written is the owner's
 * business (`write`); the outbox only counts attempts and settles entries.
 */
import { ShardChatError } from './errors.js';
import { randomId } from './ids.js';
import type { Ack, Message } from './types.js';

export type OutgoingState = 'pending' | 'sent' | 'failed';

/** A message handed to `send`, as the outbox tracks it. */
export interface Outgoing {
  readonly clientMsgId: string;
  /** The conversation it is for. */
  readonly groupId: string;
  readonly contents: string;
  state: OutgoingState;
  /** Times it was written to a socket. */
  attempts: number;
  ack?: Ack;
  error?: ShardChatError;
  /** Resolves with the acknowledgement; rejects when the message failed for good or the connection was closed. */
  readonly done: Promise<Ack>;
}

export interface OutboxEntry extends Outgoing {
  sentAt: number;
  resolve(a: Ack): void;
  reject(e: Error): void;
}

export interface OutboxOptions {
  /** Resend a message that got no ack for this long while connected (default 10 s). */
  ackTimeoutMs?: number;
  /** Writes of one message before it is marked failed (default 5). */
  maxSendAttempts?: number;
  /** Contents longer than this many UTF-8 bytes fail at once (default 8192, the shard's default). */
  maxMessageBytes?: number;
}

export interface OutboxHooks {
  /** Writes the entry on the socket that serves its group; false when none is open. */
  write(e: OutboxEntry): boolean;
  /** An entry changed state. */
  changed(e: Outgoing): void;
}

const CLIENT_MSG_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Error codes that make a send fail for good rather than be retried. */
const PERMANENT_SEND_ERRORS = new Set(['bad_field', 'forbidden', 'conflict', 'too_large', 'bad_request']);

export class Outbox {
  readonly ackTimeoutMs: number;
  readonly maxSendAttempts: number;
  readonly maxMessageBytes: number;
  private readonly entries = new Map<string, OutboxEntry>();

  constructor(
    o: OutboxOptions,
    private readonly hooks: OutboxHooks,
  ) {
    this.ackTimeoutMs = o.ackTimeoutMs ?? 10_000;
    this.maxSendAttempts = o.maxSendAttempts ?? 5;
    this.maxMessageBytes = o.maxMessageBytes ?? 8192;
  }

  /** Entries not yet acknowledged (pending or failed), oldest first; of one group when given. */
  list(groupId?: string): OutboxEntry[] {
    const all = [...this.entries.values()];
    return groupId === undefined ? all : all.filter((e) => e.groupId === groupId);
  }

  get(clientMsgId: string): OutboxEntry | undefined {
    return this.entries.get(clientMsgId);
  }

  /** Adds a message; `open` says whether its group's socket can take it now. */
  add(groupId: string, contents: string, clientMsgId: string = randomId(), open = false): Outgoing {
    if (!CLIENT_MSG_ID.test(clientMsgId)) {
      throw new TypeError('clientMsgId must be 1 to 128 of A-Z a-z 0-9 . _ : -');
    }
    const existing = this.entries.get(clientMsgId);
    if (existing) return existing;
    let resolve!: (a: Ack) => void;
    let reject!: (e: Error) => void;
    const done = new Promise<Ack>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // Callers that never await `done` must not see unhandled rejections.
    done.catch(() => {});
    const entry: OutboxEntry = {
      clientMsgId,
      groupId,
      contents,
      state: 'pending',
      attempts: 0,
      sentAt: 0,
      done,
      resolve,
      reject,
    };
    this.entries.set(clientMsgId, entry);
    if (contents.trim() === '' || new TextEncoder().encode(contents).length > this.maxMessageBytes) {
      // The shard would refuse it (and an oversized frame closes the socket): fail now.
      const err = new ShardChatError(
        0,
        'bad_field',
        `contents must be 1 to ${this.maxMessageBytes} bytes of text`,
      );
      this.fail(entry, err);
      this.entries.delete(clientMsgId);
      reject(err);
      return entry;
    }
    this.hooks.changed(entry);
    if (open) this.write(entry);
    return entry;
  }

  /** Puts a failed message back with its clientMsgId. */
  retry(clientMsgId: string, open: boolean): void {
    const e = this.entries.get(clientMsgId);
    if (e?.state !== 'failed') return;
    e.state = 'pending';
    e.attempts = 0;
    e.error = undefined;
    this.hooks.changed(e);
    if (open) this.write(e);
  }

  write(entry: OutboxEntry): void {
    if (!this.hooks.write(entry)) return;
    entry.attempts++;
    entry.sentAt = Date.now();
  }

  /** A socket for `groupId` (every group when undefined) said hello: (re)writes what is pending. */
  flush(groupId?: string): void {
    for (const entry of this.list(groupId)) {
      if (entry.state !== 'pending') continue;
      if (entry.attempts >= this.maxSendAttempts) {
        this.fail(
          entry,
          entry.error ?? new ShardChatError(0, 'timeout', 'no acknowledgement from the server'),
        );
      } else {
        this.write(entry);
      }
    }
  }

  /** Writes again what got no ack in time, among entries whose group `isOpen`. */
  checkAcks(isOpen: (groupId: string) => boolean): void {
    const now = Date.now();
    for (const e of this.entries.values()) {
      if (e.state !== 'pending' || e.attempts === 0 || now - e.sentAt < this.ackTimeoutMs) continue;
      if (!isOpen(e.groupId)) continue;
      if (e.attempts >= this.maxSendAttempts) {
        this.fail(e, new ShardChatError(0, 'timeout', 'no acknowledgement from the server'));
      } else {
        this.write(e);
      }
    }
  }

  /** The interval at which `checkAcks` should run. */
  get checkIntervalMs(): number {
    return Math.max(250, Math.min(1000, this.ackTimeoutMs / 4));
  }

  acknowledge(clientMsgId: string, ack: Ack): void {
    const entry = this.entries.get(clientMsgId);
    if (!entry || entry.state === 'sent') return;
    entry.state = 'sent';
    entry.ack = ack;
    entry.error = undefined;
    this.entries.delete(entry.clientMsgId);
    entry.resolve(ack);
    this.hooks.changed(entry);
  }

  /** A delivered message of this user's acknowledges its entry (the ack may have been lost). */
  delivered(m: Message, userId: string | undefined): void {
    if (m.userId === userId && m.clientMsgId && this.entries.get(m.clientMsgId)?.groupId === m.groupId)
      this.acknowledge(m.clientMsgId, { msgId: m.msgId, prevMsgId: m.prevMsgId, epoch: m.epoch, ts: m.ts });
  }

  /** An `error` event about an entry: permanent ones fail it; transient ones wait for the ack timer. */
  serverError(clientMsgId: string, err: ShardChatError): void {
    const entry = this.entries.get(clientMsgId);
    if (!entry) return;
    if (PERMANENT_SEND_ERRORS.has(err.code)) {
      this.fail(entry, err);
      entry.reject(err);
      this.entries.delete(entry.clientMsgId);
    } else {
      entry.error = err;
    }
  }

  /**
   * A socket was closed with 1009 (a frame too large): what was written on it since
   * `since` (of `groupId`, or of every group) fails instead of closing the next one too.
   */
  tooLarge(since: number, groupId?: string): void {
    for (const e of this.list(groupId)) {
      if (e.state === 'pending' && e.attempts > 0 && e.sentAt >= since) {
        const err = new ShardChatError(413, 'too_large', 'the message is larger than the server accepts');
        this.fail(e, err);
        this.entries.delete(e.clientMsgId);
        e.reject(err);
      }
    }
  }

  /**
   * A socket was closed with 4012 (moved): what was written on it since `since` (of
   * `groupId`, or of every group) is written again after the reconnect with the same
   * clientMsgId; that write on the moved socket is not counted as an attempt.
   */
  moved(since: number, groupId?: string): void {
    for (const e of this.list(groupId))
      if (e.state === 'pending' && e.attempts > 0 && e.sentAt >= since) e.attempts--;
  }

  /** Rejects and drops every entry (of one group when given). */
  rejectAll(err: ShardChatError, groupId?: string): void {
    for (const e of this.list(groupId)) {
      this.entries.delete(e.clientMsgId);
      e.reject(err);
    }
  }

  private fail(e: OutboxEntry, err: ShardChatError): void {
    e.state = 'failed';
    e.error = err;
    this.hooks.changed(e);
  }
}
