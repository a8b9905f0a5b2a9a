/**
 * One group's delivery order, independent of the socket the messages come through
 * (the group's own WebSocket or the user's inbox): keeps `(epoch, lastMsgId)` and
 * delivers every message once and in msgId order.
 *
 * - A message whose `prevMsgId` is not the last one delivered opens a gap: it waits in
 *   the `ahead` buffer while `GET /groups/{id}/messages?after=` fills the gap; messages
 *   seen before are dropped.
 * - Without a resume point, the latest `initialHistory` messages come first.
 * - A new epoch (the group's history began again) calls `reset` and starts over.
 * - Reads are one at a time; a failed read is retried with backoff while the owner
 *   says the group is live.
 *
 * GroupConnection and InboxConnection both use it, so that switching sockets (inbox
 * down, group sockets instead, and back) never delivers a message twice or skips one.
 */

import { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from '../common/backoff.js';
import type { ChatApi } from './api.js';
import { ShardChatError } from './errors.js';
import type { Message } from './types.js';

export interface SequencerHooks {
  /** A message, once, in msgId order. */
  deliver(m: Message): void;
  /** The group's history began again (new epoch). */
  reset(epoch: string): void;
  error(e: ShardChatError): void;
  /** Whether a failed read should be tried again now (the group is being delivered). */
  active(): boolean;
}

export interface SequencerOptions {
  api: ChatApi;
  groupId: string;
  /** Resume point: messages after it are delivered. */
  epoch?: string;
  lastMsgId?: number;
  /** Without a resume point: how many recent messages to deliver first (default 50). */
  initialHistory?: number;
  /** Page size for catch-up reads (default 100). */
  pageSize?: number;
  /** Delays between retries of a failed read. */
  backoff?: BackoffOptions;
  random?: () => number;
}

/** Larger than any msgId (and at most 15 digits, as the shard accepts): `before=` this reads the latest messages. */
const END = 999_999_999_999_999;

export class GroupSequencer {
  readonly groupId: string;
  private readonly api: ChatApi;
  private readonly hooks: SequencerHooks;
  private readonly initialHistory: number;
  private readonly pageSize: number;
  private readonly retryBackoff: Backoff;
  private epochNow: string | undefined;
  /** The msgId of the last message delivered; undefined until the starting point is known. */
  private last: number | undefined;
  /** Messages that arrived ahead of a gap, by msgId. */
  private readonly ahead = new Map<number, Message>();
  private syncing = false;
  /** A first load (loadRecent) is under way. */
  private loading = false;
  private syncAgain = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;

  constructor(o: SequencerOptions, hooks: SequencerHooks) {
    this.api = o.api;
    this.groupId = o.groupId;
    this.hooks = hooks;
    this.initialHistory = o.initialHistory ?? 50;
    this.pageSize = o.pageSize ?? 100;
    this.retryBackoff = new Backoff(o.backoff ?? DEFAULT_BACKOFF, o.random);
    this.epochNow = o.epoch;
    this.last = o.epoch === undefined ? undefined : (o.lastMsgId ?? 0);
  }

  get epoch(): string | undefined {
    return this.epochNow;
  }

  /** The msgId of the last message delivered (0 before the first). */
  get lastMsgId(): number {
    return this.last ?? 0;
  }

  /** Whether a starting point is known (history loaded or a resume point given). */
  get started(): boolean {
    return this.last !== undefined;
  }

  /**
   * The group's epoch as a server said it (a group socket's hello): a different one
   * than ours restarts delivery (`reset`).
   */
  observeEpoch(epoch: string): void {
    if (this.epochNow !== undefined && this.epochNow !== epoch) this.restart(epoch);
    else this.epochNow = epoch;
  }

  /**
   * The group's head as a server said it (a hello, a tick): loads the initial history
   * the first time, otherwise reads what is missing, if anything.
   */
  head(epoch: string, lastMsgId: number): void {
    if (this.closed) return;
    this.observeEpoch(epoch);
    if (this.last === undefined) void this.loadRecent(lastMsgId);
    else if (lastMsgId > this.lastMsgId || this.ahead.size > 0) void this.sync();
  }

  /**
   * Catches up without knowing the head (an inbox hello, a new follow): the initial
   * history the first time, otherwise one read after `lastMsgId` (and more until
   * nothing is missing).
   */
  catchUp(): void {
    if (this.closed) return;
    if (this.last === undefined) void this.loadRecent(undefined);
    else void this.sync();
  }

  /** A live message (from any socket). */
  receive(m: Message): void {
    if (this.closed || m.groupId !== this.groupId) return;
    if (this.epochNow !== undefined && m.epoch !== this.epochNow) {
      // The group's history began again under this connection.
      this.restart(m.epoch);
      void this.loadRecent(m.msgId);
      return;
    }
    if (this.last === undefined || this.syncing) {
      this.ahead.set(m.msgId, m);
      return;
    }
    if (m.msgId <= this.last) return;
    if (m.prevMsgId === this.last) {
      this.accept(m);
      this.drainAhead();
      return;
    }
    this.ahead.set(m.msgId, m);
    void this.sync();
  }

  /** Stops a pending retry of a failed read (the socket it served is gone). */
  cancelRetry(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** Delivers nothing more. */
  close(): void {
    this.closed = true;
    this.cancelRetry();
    this.ahead.clear();
  }

  private restart(epoch: string): void {
    this.epochNow = epoch;
    this.last = undefined;
    this.ahead.clear();
    this.hooks.reset(epoch);
  }

  /**
   * First delivery without a resume point: the latest `initialHistory` messages, then
   * live. `lastMsgId` is the head when known (a hello said it), otherwise the latest
   * messages are read with `before=` past the end.
   */
  private async loadRecent(lastMsgId: number | undefined): Promise<void> {
    if (this.loading) {
      // A first load is under way; it reads what follows when it ends.
      this.syncAgain = true;
      return;
    }
    this.loading = true;
    this.syncing = true;
    const epoch = this.epochNow;
    let known = lastMsgId;
    try {
      let recent: Message[] = [];
      if (known === undefined) {
        recent = await this.api.messagesBefore(this.groupId, END, Math.max(1, this.initialHistory));
        known = recent.at(-1)?.msgId ?? 0;
        if (this.initialHistory <= 0) recent = [];
      } else if (known > 0 && this.initialHistory > 0) {
        recent = await this.api.messagesBefore(this.groupId, known + 1, this.initialHistory);
      }
      if (this.closed) return;
      if (epoch !== undefined && recent.some((m) => m.epoch !== epoch)) {
        // The history began again while we read: start over from the new epoch.
        const other = recent.at(-1) as Message;
        this.restart(other.epoch);
        queueMicrotask(() => void this.loadRecent(other.msgId));
        return;
      }
      const first = recent[0];
      // Deliver from just before the oldest fetched message (or from the head).
      this.last = first ? first.prevMsgId : known;
      for (const m of recent) this.accept(m);
    } catch (err) {
      const e = asError(err);
      this.hooks.error(e);
      if (known === undefined) {
        // Nothing known yet: try again later rather than guess a starting point.
        this.retryLater(e, () => this.catchUp());
        return;
      }
      this.last ??= known;
    } finally {
      this.loading = false;
      this.syncing = false;
    }
    await this.sync();
  }

  /** Delivers a message that follows the last one delivered (or drops a duplicate). */
  private accept(m: Message): void {
    if (this.closed) return;
    if (this.last !== undefined && m.msgId <= this.last) return;
    this.last = m.msgId;
    this.epochNow ??= m.epoch;
    this.hooks.deliver(m);
  }

  private drainAhead(): void {
    for (;;) {
      const next = this.ahead.get(this.lastMsgId + 1);
      for (const id of this.ahead.keys()) if (id <= this.lastMsgId) this.ahead.delete(id);
      if (!next || next.prevMsgId !== this.lastMsgId) return;
      this.ahead.delete(next.msgId);
      this.accept(next);
    }
  }

  /** Reads from `lastMsgId` until nothing newer is missing; one at a time. */
  private async sync(): Promise<void> {
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    if (this.last === undefined || this.closed) return;
    this.syncing = true;
    try {
      for (;;) {
        this.syncAgain = false;
        const page = await this.api.messagesAfter(this.groupId, this.lastMsgId, this.pageSize);
        if (this.closed) return;
        const other = page.find((m) => this.epochNow !== undefined && m.epoch !== this.epochNow);
        if (other) {
          // The group's history began again while we read: start over from the new epoch.
          this.restart(other.epoch);
          // After this sync's `finally` has run, so that loadRecent owns `syncing`.
          queueMicrotask(() => void this.loadRecent(other.msgId));
          return;
        }
        for (const m of page) {
          if (m.prevMsgId === this.lastMsgId || m.msgId === this.lastMsgId + 1) this.accept(m);
        }
        this.drainAhead();
        const missing = [...this.ahead.keys()].some((id) => id > this.lastMsgId);
        if (page.length < this.pageSize && !this.syncAgain && (!missing || page.length === 0)) break;
      }
      this.retryBackoff.reset();
    } catch (err) {
      const e = asError(err);
      this.hooks.error(e);
      this.retryLater(e, () => void this.sync());
    } finally {
      this.syncing = false;
    }
  }

  private retryLater(e: ShardChatError, fn: () => void): void {
    // Try again while the group is delivered; a new connection catches up on its hello anyway.
    if (this.closed || !e.retryable || !this.hooks.active()) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.closed && this.hooks.active()) fn();
    }, this.retryBackoff.next());
  }
}

export function asError(err: unknown): ShardChatError {
  if (err instanceof ShardChatError) return err;
  return new ShardChatError(0, 'network', err instanceof Error ? err.message : String(err));
}
