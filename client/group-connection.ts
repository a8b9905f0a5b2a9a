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
 */
import type { ChatApi } from './api.js';
import { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from './backoff.js';
import { Emitter } from './emitter.js';
import { ShardChatError } from './errors.js';
import { asError, GroupSequencer } from './group-sequencer.js';
import { Outbox, type OutboxEntry, type Outgoing } from './outbox.js';
import type { Message, ServerEvent, WebSocketFactory, WebSocketLike } from './types.js';

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
  hello: [{ epoch: string; lastMsgId: number; mode: string; shard?: number }];
  error: [ShardChatError];
}

export interface GroupConnectionOptions {
  api: ChatApi;
  groupId: string;
  /** Defaults to the global WebSocket (browsers, Node 22+); pass `ws`'s on older Node. */
  WebSocket?: WebSocketFactory;
  /** Resume point, e.g. kept in sessionStorage: messages after it are delivered. */
  epoch?: string;
  lastMsgId?: number;
  /** Without a resume point: how many recent messages to deliver first (default 50). */
  initialHistory?: number;
  backoff?: BackoffOptions;
  /** Resend a message that got no ack for this long while connected (default 10 s). */
  ackTimeoutMs?: number;
  /** Writes of one message before it is marked failed (default 5). */
  maxSendAttempts?: number;
  /** Contents longer than this many UTF-8 bytes fail at once (default 8192, the shard's default). */
  maxMessageBytes?: number;
  /** At most one typing event per this interval (default 2 s). */
  typingIntervalMs?: number;
  /** Page size for catch-up reads (default 100). */
  pageSize?: number;
  /** A connection that stayed open this long resets the backoff (default 5 s). */
  stableAfterMs?: number;
  random?: () => number;
  /**
   * Internal (InboxConnection's fallback sockets): a sequencer and an outbox owned by
   * someone else. Messages then go to the sequencer's owner (no `message` event here),
   * and only this group's entries of the outbox are written on this socket.
   */
  shared?: { sequencer: GroupSequencer; outbox: Outbox; userId: string };
}

export const OPEN = 1;
/** The server closes with this when a frame is larger than it accepts. */
export const TOO_BIG = 1009;
/** Close codes after which reconnecting cannot help. */
export const FATAL_CLOSE = new Set([1008]);

export class GroupConnection extends Emitter<GroupEvents> {
  readonly groupId: string;
  private readonly api: ChatApi;
  private readonly WS: WebSocketFactory;
  private readonly backoff: Backoff;
  private readonly o: Required<Pick<GroupConnectionOptions, 'typingIntervalMs' | 'stableAfterMs'>>;
  private ws: WebSocketLike | undefined;
  private stateNow: ConnectionState = 'connecting';
  private userId: string | undefined;
  private shardNow: number | undefined;
  private modeNow = 'push';
  private readonly seq: GroupSequencer;
  private readonly outbox: Outbox;
  /** Whether the sequencer and outbox are this connection's own (not an InboxConnection's). */
  private readonly owns: boolean;
  private readonly online = new Set<string>();
  private lastTypingAt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stableTimer: ReturnType<typeof setTimeout> | undefined;
  private ackTimer: ReturnType<typeof setInterval> | undefined;
  private userClosed = false;
  /** When the current connection said hello (to tell what was written on it). */
  private openedAt = 0;
  private generation = 0;

  constructor(o: GroupConnectionOptions) {
    super();
    this.api = o.api;
    this.groupId = o.groupId;
    const WS = o.WebSocket ?? (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
    if (!WS) throw new Error('no WebSocket implementation: pass options.WebSocket (e.g. the ws package)');
    this.WS = WS;
    this.backoff = new Backoff(o.backoff ?? DEFAULT_BACKOFF, o.random);
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

  get mode(): string {
    return this.modeNow;
  }

  get onlineUsers(): string[] {
    return [...this.online];
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

  private async connect(): Promise<void> {
    if (this.userClosed) return;
    const gen = ++this.generation;
    let url: string;
    try {
      url = await this.api.groupSocketUrl(this.groupId);
    } catch (err) {
      this.emit('error', asError(err));
      this.scheduleReconnect();
      return;
    }
    if (gen !== this.generation || this.userClosed) return;
    let ws: WebSocketLike;
    try {
      ws = new this.WS(url);
    } catch (err) {
      this.emit('error', asError(err));
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    let greeted = false;
    ws.addEventListener('message', (ev) => {
      if (gen !== this.generation) return;
      const text = typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(ev.data as ArrayBuffer);
      let e: ServerEvent;
      try {
        e = JSON.parse(text) as ServerEvent;
      } catch {
        return;
      }
      if (e.type === 'hello') greeted = true;
      this.onEvent(e);
    });
    ws.addEventListener('close', (ev) => {
      if (gen !== this.generation) return;
      this.onClose(ev.code, ev.reason, greeted);
    });
    ws.addEventListener('error', () => {
      // A 'close' always follows; nothing to do here (browsers give no detail).
    });
  }

  private onClose(code: number, reason: string, greeted: boolean): void {
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

  private scheduleReconnect(retryAfterSeconds?: number): void {
    if (this.userClosed) return;
    this.setState('reconnecting');
    const delay = Math.max(this.backoff.next(), (retryAfterSeconds ?? 0) * 1000);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.connect(), delay);
  }

  private fatal(e: ShardChatError): void {
    this.emit('error', e);
    this.close();
  }

  private stop(): void {
    this.generation++;
    this.clearTimers();
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = undefined;
    if (ws && ws.readyState <= OPEN) ws.close(1000, 'closed by the client');
  }

  private clearTimers(): void {
    clearTimeout(this.stableTimer);
    this.seq.cancelRetry();
    clearInterval(this.ackTimer);
    this.stableTimer = undefined;
    this.ackTimer = undefined;
  }

  private setState(s: ConnectionState): void {
    if (this.stateNow === s) return;
    this.stateNow = s;
    this.emit('state', s);
  }

  // --- events ---

  private onEvent(e: ServerEvent): void {
    switch (e.type) {
      case 'hello':
        this.onHello(e);
        return;
      case 'message':
        if (e.groupId === this.groupId) this.seq.receive(stripType(e));
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
        if (e.status === 'online') this.online.add(e.userId);
        else this.online.delete(e.userId);
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
    this.modeNow = h.mode;
    // A new epoch emits reset before the state goes open.
    this.seq.observeEpoch(h.epoch);
    this.openedAt = Date.now();
    this.setState('open');
    this.emit('hello', { epoch: h.epoch, lastMsgId: h.lastMsgId, mode: h.mode, shard: h.shard });
    const gen = this.generation;
    this.stableTimer = setTimeout(() => this.backoff.reset(), this.o.stableAfterMs);
    this.ackTimer = setInterval(() => {
      if (this.stateNow === 'open') this.outbox.checkAcks((g) => g === this.groupId);
    }, this.outbox.checkIntervalMs);
    this.outbox.flush(this.groupId);
    void this.loadPresence(gen);
    this.seq.head(h.epoch, h.lastMsgId);
  }

  private async loadPresence(gen: number): Promise<void> {
    try {
      const p = await this.api.presence(this.groupId);
      if (gen !== this.generation) return;
      this.online.clear();
      for (const e of p) this.online.add(e.userId);
      this.emit('presence', this.onlineUsers);
    } catch (err) {
      this.emit('error', asError(err));
    }
  }

  /** First connection without a resume point: the latest `initialHistory` messages, then live. */
  // --- sending ---

  /** Writes an outbox entry of this group on this socket (the outbox counts the attempt). */
  writeEntry(entry: OutboxEntry): boolean {
    return this.raw({ type: 'message', contents: entry.contents, clientMsgId: entry.clientMsgId });
  }

  private raw(event: object): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(event));
      return true;
    } catch {
      return false;
    }
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
