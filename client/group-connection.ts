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
import { randomId } from './ids.js';
import type { Ack, Message, ServerEvent, WebSocketFactory, WebSocketLike } from './types.js';

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export type OutgoingState = 'pending' | 'sent' | 'failed';

/** A message handed to `send`, as the outbox tracks it. */
export interface Outgoing {
  readonly clientMsgId: string;
  readonly contents: string;
  state: OutgoingState;
  /** Times it was written to a socket. */
  attempts: number;
  ack?: Ack;
  error?: ShardChatError;
  /** Resolves with the acknowledgement; rejects when the message failed for good or the connection was closed. */
  readonly done: Promise<Ack>;
}

interface OutboxEntry extends Outgoing {
  sentAt: number;
  resolve(a: Ack): void;
  reject(e: Error): void;
}

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
}

const OPEN = 1;
const CLIENT_MSG_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** The server closes with this when a frame is larger than it accepts. */
const TOO_BIG = 1009;
/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSE = new Set([1008]);
/** Error codes that make a send fail for good rather than be retried. */
const PERMANENT_SEND_ERRORS = new Set(['bad_field', 'forbidden', 'conflict', 'too_large', 'bad_request']);

export class GroupConnection extends Emitter<GroupEvents> {
  readonly groupId: string;
  private readonly api: ChatApi;
  private readonly WS: WebSocketFactory;
  private readonly backoff: Backoff;
  private readonly o: Required<
    Pick<
      GroupConnectionOptions,
      | 'initialHistory'
      | 'ackTimeoutMs'
      | 'maxSendAttempts'
      | 'maxMessageBytes'
      | 'typingIntervalMs'
      | 'pageSize'
      | 'stableAfterMs'
    >
  >;
  private ws: WebSocketLike | undefined;
  private stateNow: ConnectionState = 'connecting';
  private epochNow: string | undefined;
  private last: number | undefined;
  private userId: string | undefined;
  private shardNow: number | undefined;
  private modeNow = 'push';
  /** Messages that arrived ahead of a gap, by msgId. */
  private readonly ahead = new Map<number, Message>();
  private syncing = false;
  private syncAgain = false;
  private readonly outbox = new Map<string, OutboxEntry>();
  private readonly online = new Set<string>();
  private lastTypingAt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private syncTimer: ReturnType<typeof setTimeout> | undefined;
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
    this.epochNow = o.epoch;
    this.last = o.epoch === undefined ? undefined : (o.lastMsgId ?? 0);
    this.o = {
      initialHistory: o.initialHistory ?? 50,
      ackTimeoutMs: o.ackTimeoutMs ?? 10_000,
      maxSendAttempts: o.maxSendAttempts ?? 5,
      maxMessageBytes: o.maxMessageBytes ?? 8192,
      typingIntervalMs: o.typingIntervalMs ?? 2000,
      pageSize: o.pageSize ?? 100,
      stableAfterMs: o.stableAfterMs ?? 5000,
    };
    // Started on the next tick so that listeners added right after construction see everything.
    queueMicrotask(() => this.connect());
  }

  get state(): ConnectionState {
    return this.stateNow;
  }

  get epoch(): string | undefined {
    return this.epochNow;
  }

  /** The msgId of the last message delivered (0 before the first). */
  get lastMsgId(): number {
    return this.last ?? 0;
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
    return [...this.outbox.values()];
  }

  /** Sends a message; it is resent with the same clientMsgId until acknowledged. */
  send(contents: string, clientMsgId: string = randomId()): Outgoing {
    if (!CLIENT_MSG_ID.test(clientMsgId)) {
      throw new TypeError('clientMsgId must be 1 to 128 of A-Z a-z 0-9 . _ : -');
    }
    const existing = this.outbox.get(clientMsgId);
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
      contents,
      state: 'pending',
      attempts: 0,
      sentAt: 0,
      done,
      resolve,
      reject,
    };
    this.outbox.set(clientMsgId, entry);
    if (contents.trim() === '' || new TextEncoder().encode(contents).length > this.o.maxMessageBytes) {
      // The shard would refuse it (and an oversized frame closes the socket): fail now.
      const err = new ShardChatError(
        0,
        'bad_field',
        `contents must be 1 to ${this.o.maxMessageBytes} bytes of text`,
      );
      this.failSend(entry, err);
      this.outbox.delete(clientMsgId);
      reject(err);
      return entry;
    }
    this.emit('outgoing', entry);
    if (this.stateNow === 'open') this.write(entry);
    return entry;
  }

  /** Puts a failed message back in the outbox with its clientMsgId. */
  retry(clientMsgId: string): void {
    const e = this.outbox.get(clientMsgId);
    if (e?.state !== 'failed') return;
    e.state = 'pending';
    e.attempts = 0;
    e.error = undefined;
    this.emit('outgoing', e);
    if (this.stateNow === 'open') this.write(e);
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
    const err = new ShardChatError(0, 'closed', 'the connection was closed');
    for (const e of this.outbox.values()) e.reject(err);
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
      for (const e of [...this.outbox.values()]) {
        if (e.state === 'pending' && e.attempts > 0 && e.sentAt >= this.openedAt) {
          const err = new ShardChatError(413, 'too_large', 'the message is larger than the server accepts');
          this.failSend(e, err);
          this.outbox.delete(e.clientMsgId);
          e.reject(err);
        }
      }
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
    clearTimeout(this.syncTimer);
    this.syncTimer = undefined;
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
        if (e.groupId === this.groupId) this.receive(stripType(e));
        return;
      case 'ack': {
        const entry = this.outbox.get(e.clientMsgId);
        if (entry)
          this.acknowledge(entry, { msgId: e.msgId, prevMsgId: e.prevMsgId, epoch: e.epoch, ts: e.ts });
        return;
      }
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
    const newHistory = this.epochNow !== undefined && this.epochNow !== h.epoch;
    if (newHistory) this.restart(h.epoch);
    const fresh = this.last === undefined;
    this.epochNow = h.epoch;
    this.openedAt = Date.now();
    this.setState('open');
    this.emit('hello', { epoch: h.epoch, lastMsgId: h.lastMsgId, mode: h.mode, shard: h.shard });
    const gen = this.generation;
    this.stableTimer = setTimeout(() => this.backoff.reset(), this.o.stableAfterMs);
    this.ackTimer = setInterval(
      () => this.checkAcks(),
      Math.max(250, Math.min(1000, this.o.ackTimeoutMs / 4)),
    );
    for (const entry of this.outbox.values()) {
      if (entry.state !== 'pending') continue;
      if (entry.attempts >= this.o.maxSendAttempts) {
        this.failSend(
          entry,
          entry.error ?? new ShardChatError(0, 'timeout', 'no acknowledgement from the server'),
        );
      } else {
        this.write(entry);
      }
    }
    void this.loadPresence(gen);
    if (fresh) void this.loadRecent(h.lastMsgId);
    else if (h.lastMsgId > this.lastMsgId || this.ahead.size > 0) void this.sync();
  }

  private restart(epoch: string): void {
    this.epochNow = epoch;
    this.last = undefined;
    this.ahead.clear();
    this.emit('reset');
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
  private async loadRecent(lastMsgId: number): Promise<void> {
    this.syncing = true;
    try {
      const recent =
        lastMsgId > 0 && this.o.initialHistory > 0
          ? await this.api.messagesBefore(this.groupId, lastMsgId + 1, this.o.initialHistory)
          : [];
      const first = recent[0];
      // Deliver from just before the oldest fetched message (or from the hello's lastMsgId).
      this.last = first ? first.prevMsgId : lastMsgId;
      for (const m of recent) this.accept(m);
    } catch (err) {
      this.last ??= lastMsgId;
      this.emit('error', asError(err));
    } finally {
      this.syncing = false;
    }
    await this.sync();
  }

  private receive(m: Message): void {
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

  /** Delivers a message that follows the last one delivered (or drops a duplicate). */
  private accept(m: Message): void {
    if (this.last !== undefined && m.msgId <= this.last) return;
    this.last = m.msgId;
    if (m.userId === this.userId && m.clientMsgId) {
      const entry = this.outbox.get(m.clientMsgId);
      if (entry)
        this.acknowledge(entry, { msgId: m.msgId, prevMsgId: m.prevMsgId, epoch: m.epoch, ts: m.ts });
    }
    this.emit('message', m);
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
    if (this.last === undefined) return;
    this.syncing = true;
    const gen = this.generation;
    try {
      for (;;) {
        this.syncAgain = false;
        const page = await this.api.messagesAfter(this.groupId, this.lastMsgId, this.o.pageSize);
        const other = page.find((m) => m.epoch !== this.epochNow);
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
        if (page.length < this.o.pageSize && !this.syncAgain && (!missing || page.length === 0)) break;
      }
    } catch (err) {
      const e = asError(err);
      this.emit('error', e);
      // Try again while this connection lives; a new connection syncs on its hello anyway.
      if (gen === this.generation && e.retryable) {
        clearTimeout(this.syncTimer);
        this.syncTimer = setTimeout(() => {
          if (gen === this.generation) void this.sync();
        }, this.backoff.next());
      }
    } finally {
      this.syncing = false;
    }
  }

  // --- sending ---

  private write(entry: OutboxEntry): void {
    if (!this.raw({ type: 'message', contents: entry.contents, clientMsgId: entry.clientMsgId })) return;
    entry.attempts++;
    entry.sentAt = Date.now();
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

  private acknowledge(entry: OutboxEntry, ack: Ack): void {
    if (entry.state === 'sent') return;
    entry.state = 'sent';
    entry.ack = ack;
    entry.error = undefined;
    this.outbox.delete(entry.clientMsgId);
    entry.resolve(ack);
    this.emit('outgoing', entry);
  }

  private checkAcks(): void {
    if (this.stateNow !== 'open') return;
    const now = Date.now();
    for (const e of this.outbox.values()) {
      if (e.state !== 'pending' || e.attempts === 0 || now - e.sentAt < this.o.ackTimeoutMs) continue;
      if (e.attempts >= this.o.maxSendAttempts) {
        this.failSend(e, new ShardChatError(0, 'timeout', 'no acknowledgement from the server'));
      } else {
        this.write(e);
      }
    }
  }

  private failSend(e: OutboxEntry, err: ShardChatError): void {
    e.state = 'failed';
    e.error = err;
    this.emit('outgoing', e);
  }

  private onServerError(e: Extract<ServerEvent, { type: 'error' }>): void {
    const err = new ShardChatError(0, e.code, e.message);
    const entry = e.clientMsgId === undefined ? undefined : this.outbox.get(e.clientMsgId);
    if (entry) {
      if (PERMANENT_SEND_ERRORS.has(e.code)) {
        this.failSend(entry, err);
        entry.reject(err);
        this.outbox.delete(entry.clientMsgId);
      } else {
        // Transient (storage busy, shard draining): the ack timer writes it again.
        entry.error = err;
      }
    }
    this.emit('error', err);
  }
}

function stripType(e: { type: 'message' } & Message): Message {
  const { type: _type, ...m } = e;
  return m;
}

function asError(err: unknown): ShardChatError {
  if (err instanceof ShardChatError) return err;
  return new ShardChatError(0, 'network', err instanceof Error ? err.message : String(err));
}
