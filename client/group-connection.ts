/**
 * One group's live connection: the group WebSocket plus everything that makes it
 * reliable for a user interface.
 *
 * - Reconnects with exponential backoff and jitter; refusals (401, 403, 404, removal
 *   from the group) end it instead.
 * - Keeps `(epoch, lastMsgId)`: every message is delivered once and in msgId order.
 *   A message whose `prevMsgId` is not the last one delivered opens a gap, filled from
 *   `GET /groups/{id}/messages?after=` before anything newer is delivered; messages
 *   seen before are dropped. A new epoch (the group's history began again) emits
 *   `reset` and starts over.
 * - Sends through an outbox: each message gets a `clientMsgId` once and keeps it over
 *   every resend (after a reconnect or an ack timeout), so the shard stores it once.
 *   A message that cannot be sent is marked failed and can be retried.
 * - Typing (throttled) and presence (who is online), and a connection state for the UI.
 * - Push or pull (docs/delivery-protocol.md section 7): in pull mode the shard sends
 *   `tick {epoch, lastMsgId, mode}` instead of messages; a tick ahead of what was
 *   delivered reads `?after=` (one read at a time, ticks meanwhile coalesced), and the
 *   messages come out exactly as pushed ones do. `mode` says which, `mode` events a switch.
 */
import type { ChatApi } from './api.js';
import { ShardChatError } from './errors.js';
import { asError, GroupSequencer } from './group-sequencer.js';
import { Outbox, type OutboxEntry, type Outgoing } from './outbox.js';
import { PresenceSet } from './presence-set.js';
import { CLOSE_MOVED, type ConnectionOptions, SocketClient } from './socket.js';
import type { DeliveryMode, Message, ServerEvent } from './types.js';

export type { Outgoing, OutgoingState } from './outbox.js';

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface GroupEvents extends Record<string, unknown[]> {
  /** A message, once, in msgId order. */
  message: [Message];
  typing: [userId: string];
  /** Users with a live connection to the group now. */
  presence: [online: string[]];
  state: [ConnectionState];
  /** A sent message changed state (pending, sent, failed). */
  outgoing: [Outgoing];
  /** The group's history began again (new epoch): drop what was shown. */
  reset: [];
  hello: [{ epoch: string; lastMsgId: number; mode: DeliveryMode; shard?: number }];
  /** The group switched between push and pull (a hello or a tick said so). */
  mode: [DeliveryMode];
  error: [ShardChatError];
}

export interface GroupConnectionOptions extends ConnectionOptions {
  groupId: string;
  /** Resume point, e.g. kept in sessionStorage: messages after it are delivered. */
  epoch?: string;
  lastMsgId?: number;
  /**
   * Internal (InboxConnection's fallback sockets): a sequencer and an outbox owned by
   * someone else. Messages then go to the sequencer's owner (no `message` event here),
   * and only this group's entries of the outbox are written on this socket.
   */
  shared?: { sequencer: GroupSequencer; outbox: Outbox; userId: string };
}

export { OPEN } from './socket.js';
/** The server closes with this when a frame is larger than it accepts. */
export const TOO_BIG = 1009;
/** Close codes after which reconnecting cannot help. */
export const FATAL_CLOSE = new Set([1008]);

export class GroupConnection extends SocketClient<GroupEvents, ServerEvent> {
  readonly groupId: string;
  private readonly api: ChatApi;
  private readonly o: Required<Pick<GroupConnectionOptions, 'typingIntervalMs' | 'stableAfterMs'>>;
  private stateNow: ConnectionState = 'connecting';
  private userId: string | undefined;
  private shardNow: number | undefined;
  private modeNow: DeliveryMode = 'push';
  private readonly seq: GroupSequencer;
  private readonly outbox: Outbox;
  /** Whether the sequencer and outbox are this connection's own (not an InboxConnection's). */
  private readonly owns: boolean;
  private readonly online = new PresenceSet();
  private lastTypingAt = 0;
  /** When the current connection said hello (to tell what was written on it). */
  private openedAt = 0;

  constructor(o: GroupConnectionOptions) {
    super(o);
    this.api = o.api;
    this.groupId = o.groupId;
    this.o = {
      typingIntervalMs: o.typingIntervalMs ?? 2000,
      stableAfterMs: o.stableAfterMs ?? 5000,
    };
    this.owns = !o.shared;
    if (o.shared) {
      this.seq = o.shared.sequencer;
      this.outbox = o.shared.outbox;
      this.userId = o.shared.userId;
    } else {
      this.seq = new GroupSequencer(
        {
          api: o.api,
          groupId: o.groupId,
          epoch: o.epoch,
          lastMsgId: o.lastMsgId,
          initialHistory: o.initialHistory,
          pageSize: o.pageSize,
          backoff: o.backoff,
          random: o.random,
        },
        {
          deliver: (m) => {
            this.outbox.delivered(m, this.userId);
            this.emit('message', m);
          },
          reset: () => this.emit('reset'),
          error: (e) => this.emit('error', e),
          active: () => this.stateNow === 'open',
        },
      );
      this.outbox = new Outbox(o, {
        write: (e) => this.writeEntry(e),
        changed: (e) => this.emit('outgoing', e),
      });
    }
    // Started on the next tick so that listeners added right after construction see everything.
    queueMicrotask(() => this.connect());
  }

  get state(): ConnectionState {
    return this.stateNow;
  }

  get epoch(): string | undefined {
    return this.seq.epoch;
  }

  /** The msgId of the last message delivered (0 before the first). */
  get lastMsgId(): number {
    return this.seq.lastMsgId;
  }

  /** The shard that serves this group, as its hello said. */
  get shard(): number | undefined {
    return this.shardNow;
  }

  /** How the group's messages come now: pushed, or pulled after ticks. */
  get mode(): DeliveryMode {
    return this.modeNow;
  }

  get onlineUsers(): string[] {
    return this.online.users();
  }

  /** Messages not yet acknowledged (pending or failed), oldest first. */
  get unacknowledged(): Outgoing[] {
    return this.outbox.list(this.groupId);
  }

  /** Sends a message; it is resent with the same clientMsgId until acknowledged. */
  send(contents: string, clientMsgId?: string): Outgoing {
    return this.outbox.add(this.groupId, contents, clientMsgId, this.stateNow === 'open');
  }

  /** Puts a failed message back in the outbox with its clientMsgId. */
  retry(clientMsgId: string): void {
    if (this.outbox.get(clientMsgId)?.groupId !== this.groupId) return;
    this.outbox.retry(clientMsgId, this.stateNow === 'open');
  }

  /** Tells the others this user is typing; throttled, dropped while disconnected. */
  typing(): void {
    const now = Date.now();
    if (this.stateNow !== 'open' || now - this.lastTypingAt < this.o.typingIntervalMs) return;
    this.lastTypingAt = now;
    this.raw({ type: 'typing' });
  }

  /** Closes for good; unacknowledged sends reject. */
  close(): void {
    if (this.userClosed) return;
    this.userClosed = true;
    this.stop();
    if (this.owns) {
      this.seq.close();
      this.outbox.rejectAll(new ShardChatError(0, 'closed', 'the connection was closed'));
    }
    this.setState('closed');
  }

  // --- connecting ---

  protected socketUrl(): Promise<string> {
    return this.api.groupSocketUrl(this.groupId);
  }

  protected reportError(e: ShardChatError): void {
    this.emit('error', e);
  }

  protected onClose(code: number, reason: string, greeted: boolean): void {
    this.ws = undefined;
    this.clearTimers();
    // Who is online is unknown until the next hello.
    if (this.online.size > 0) {
      this.online.clear();
      this.emit('presence', []);
    }
    if (this.userClosed) return;
    if (FATAL_CLOSE.has(code)) {
      this.fatal(new ShardChatError(403, 'forbidden', reason || 'the server ended the subscription'));
      return;
    }
    if (code === TOO_BIG) {
      // A message written on this connection was too large for the shard: resending it
      // would only close the next connection too.
      this.outbox.tooLarge(this.openedAt, this.groupId);
    }
    if (code === CLOSE_MOVED) {
      // The group moved to another shard: reconnect at once (the router sends the next
      // socket to the new owner); the hello there resumes from lastMsgId, and what is
      // pending is written again with its clientMsgId. A write on the moved socket does
      // not count against maxSendAttempts.
      if (greeted) this.outbox.moved(this.openedAt, this.groupId);
      this.scheduleReconnect(undefined, true);
      return;
    }
    if (greeted) {
      this.scheduleReconnect();
      return;
    }
    // The upgrade was refused or never answered; a browser does not say why, so ask over HTTP.
    this.api.messagesAfter(this.groupId, this.lastMsgId, 1).then(
      () => this.scheduleReconnect(),
      (err: unknown) => {
        const e = asError(err);
        if (e.retryable) {
          this.scheduleReconnect(e.retryAfter);
        } else if (e.status === 409 || e.code === 'epoch_mismatch') {
          this.scheduleReconnect();
        } else {
          this.fatal(e);
        }
      },
    );
  }

  protected scheduleReconnect(retryAfterSeconds?: number, moved = false): void {
    if (this.userClosed) return;
    this.setState('reconnecting');
    if (moved) this.retryMoved();
    else this.retryIn(retryAfterSeconds);
  }

  protected clearTimers(): void {
    this.clearOpenTimers();
    this.seq.cancelRetry();
  }

  private setState(s: ConnectionState): void {
    if (this.stateNow === s) return;
    this.stateNow = s;
    this.emit('state', s);
  }

  // --- events ---

  protected onEvent(e: ServerEvent): void {
    switch (e.type) {
      case 'hello':
        this.onHello(e);
        return;
      case 'message':
        if (e.groupId !== this.groupId) return;
        // Messages are pushed only in push mode (the tick that said so may have been missed).
        this.setMode('push');
        this.seq.receive(stripType(e));
        return;
      case 'tick':
        if (e.groupId !== this.groupId) return;
        if (e.mode) this.setMode(e.mode);
        // Reads ?after= when the tick is ahead (one read at a time: ticks meanwhile coalesce).
        this.seq.head(e.epoch, e.lastMsgId);
        return;
      case 'ack':
        if (this.outbox.get(e.clientMsgId)?.groupId === this.groupId)
          this.outbox.acknowledge(e.clientMsgId, {
            msgId: e.msgId,
            prevMsgId: e.prevMsgId,
            epoch: e.epoch,
            ts: e.ts,
          });
        return;
      case 'typing':
        if (e.userId !== this.userId) this.emit('typing', e.userId);
        return;
      case 'presence':
        this.online.event(e.userId, e.status === 'online');
        this.emit('presence', this.onlineUsers);
        return;
      case 'error':
        this.onServerError(e);
        return;
    }
  }

  private onHello(h: Extract<ServerEvent, { type: 'hello' }>): void {
    this.userId = h.userId;
    this.shardNow = h.shard;
    this.setMode(h.mode);
    // A new epoch emits reset before the state goes open.
    this.seq.observeEpoch(h.epoch);
    this.openedAt = Date.now();
    this.setState('open');
    this.emit('hello', { epoch: h.epoch, lastMsgId: h.lastMsgId, mode: h.mode, shard: h.shard });
    const gen = this.generation;
    this.startOpenTimers(
      this.o.stableAfterMs,
      () => {
        if (this.stateNow === 'open') this.outbox.checkAcks((g) => g === this.groupId);
      },
      this.outbox.checkIntervalMs,
    );
    this.outbox.flush(this.groupId);
    void this.loadPresence(gen);
    this.seq.head(h.epoch, h.lastMsgId);
  }

  private setMode(mode: DeliveryMode): void {
    if (mode === this.modeNow || (mode !== 'push' && mode !== 'pull')) return;
    this.modeNow = mode;
    this.emit('mode', mode);
  }

  private async loadPresence(gen: number): Promise<void> {
    const from = this.online.begin();
    try {
      const p = await this.api.presence(this.groupId);
      if (gen !== this.generation) return;
      // Events that arrived while it was read are newer than the snapshot: applied on top.
      this.online.snapshot(
        from,
        p.map((e) => e.userId),
      );
      this.emit('presence', this.onlineUsers);
    } catch (err) {
      this.emit('error', asError(err));
    } finally {
      this.online.done();
    }
  }

  /** First connection without a resume point: the latest `initialHistory` messages, then live. */
  // --- sending ---

  /** Writes an outbox entry of this group on this socket (the outbox counts the attempt). */
  writeEntry(entry: OutboxEntry): boolean {
    return this.raw({ type: 'message', contents: entry.contents, clientMsgId: entry.clientMsgId });
  }

  private onServerError(e: Extract<ServerEvent, { type: 'error' }>): void {
    const err = new ShardChatError(0, e.code, e.message);
    if (e.clientMsgId !== undefined && this.outbox.get(e.clientMsgId)?.groupId === this.groupId)
      this.outbox.serverError(e.clientMsgId, err);
    this.emit('error', err);
  }
}

function stripType(e: { type: 'message' } & Message): Message {
  const { type: _type, ...m } = e;
  return m;
}
