/**
 * All of a user's conversations over one WebSocket: the inbox on the user's session
 * host (`GET /users/{userId}/ws`, docs/delivery-protocol.md).
 *
 * - Per followed group a GroupSequencer keeps `(epoch, lastMsgId)`: every message is
 *   delivered once and in msgId order per group; a gap in one group is filled from
 *   `GET /groups/{id}/messages?after=` without holding up the others. On every hello
 *   (and on `follow`) each group catches up from its lastMsgId (or loads its recent
 *   history); a `tick` (pull mode, docs/delivery-protocol.md section 7) reads what it
 *   announces (one read at a time per group, ticks meanwhile coalesced) and says the
 *   group's mode (`deliveryMode(groupId)`, `mode` events on a switch).
 * - Sends go through the same outbox as GroupConnection's (one clientMsgId over every
 *   resend), now with a groupId; `ack` and `error` events name group and clientMsgId.
 * - Reconnects with exponential backoff and jitter; refusals (401, 403, close 1008) end it.
 *   Close 4012 (the user moved to another session host) reconnects at once, without
 *   counting a failure (a further 4012 soon after waits the backoff).
 * - Fallback (docs/architecture.md section 6): when the inbox cannot be reached for `fallbackAfterMs`, every
 *   followed group gets its own group WebSocket (fed into the same sequencers and
 *   outbox, so nothing is delivered or stored twice across the switch) while the inbox
 *   is retried in the background; once it says hello again the group sockets close.
 * - Presence per group: a snapshot from `GET /groups/{id}/presence` on hello and every
 *   `presencePollMs`, updated by `presence` events. The inbox tells the session host
 *   what this user follows (`follow` with every followed group after each hello, then
 *   `follow` / `unfollow` as they change) and the user's status (`setStatus`), so that
 *   the others see this user present in those groups.
 */
import type { ChatApi } from './api.js';
import { ShardChatError } from './errors.js';
import { type ConnectionState, FATAL_CLOSE, GroupConnection, TOO_BIG } from './group-connection.js';
import { asError, GroupSequencer } from './group-sequencer.js';
import { Outbox, type OutboxEntry, type Outgoing } from './outbox.js';
import { PresenceSet } from './presence-set.js';
import { CLOSE_MOVED, type ConnectionOptions, SocketClient } from './socket.js';
import type { DeliveryMode, Message, TickEvent } from './types.js';

export type InboxMode = 'inbox' | 'fallback';

/** Group ids per `follow` event at most (events stay far below the payload limit). */
const FOLLOW_CHUNK = 200;

export interface InboxStatus {
  /** Whether messages are being delivered: `open` in inbox mode when the inbox is open, in fallback mode when every group socket is. */
  state: ConnectionState;
  /** `inbox`: one WebSocket to the session host; `fallback`: one per group, while the inbox is unreachable. */
  mode: InboxMode;
  /** The inbox WebSocket itself. */
  inbox: ConnectionState;
}

export interface InboxEvents extends Record<string, unknown[]> {
  /** A message of a followed group (`m.groupId`), once, in msgId order per group. */
  message: [Message];
  typing: [groupId: string, userId: string];
  /** Users online in a group now. */
  presence: [groupId: string, online: string[]];
  state: [InboxStatus];
  /** A sent message changed state (pending, sent, failed). */
  outgoing: [Outgoing];
  /** A group's history began again (new epoch): drop what was shown of it. */
  reset: [groupId: string];
  /** A group switched between push and pull (a tick said so). */
  mode: [groupId: string, mode: DeliveryMode];
  /**
   * The user joined a group or left one, from any device (the user's shard was told by
   * the group's shard). Whether it is followed is the application's choice.
   */
  membership: [groupId: string, member: boolean];
  /** The inbox said hello. */
  hello: [{ userId: string; shard?: number }];
  /** An error; `groupId` when it concerns one group. */
  error: [ShardChatError, groupId?: string];
}

export interface ResumePoint {
  epoch: string;
  lastMsgId: number;
}

export interface InboxConnectionOptions extends ConnectionOptions {
  /** The user the token is for; the inbox is `/users/{userId}/ws`. */
  userId: string;
  /** Groups to follow from the start (more with `follow`). */
  groups?: string[];
  /** Resume points per group (e.g. kept in sessionStorage). */
  resume?: Record<string, ResumePoint>;
  /** How long the inbox may be unreachable before the group sockets take over (default 3 s). */
  fallbackAfterMs?: number;
  /** Presence snapshots per group this often while in inbox mode (default 10 s; 0: only on hello). */
  presencePollMs?: number;
}

interface Followed {
  groupId: string;
  seq: GroupSequencer;
  online: PresenceSet;
  lastTypingAt: number;
  /** The group's own socket, in fallback mode. */
  gc?: GroupConnection;
  /** The group socket was refused for good during this fallback (not reopened until the next one). */
  refused: boolean;
  /** The group's delivery mode as the last tick (or group socket hello) said. */
  mode: DeliveryMode;
  lastError?: ShardChatError;
}

type InboxServerEvent =
  | { type: 'hello'; userId: string; shard?: number }
  | ({ type: 'message' } & Message)
  | TickEvent
  | { type: 'typing'; groupId: string; userId: string }
  | { type: 'joined' | 'left'; groupId: string }
  | { type: 'presence'; groupId: string; userId: string; status: 'online' | 'away' | 'offline' }
  | {
      type: 'ack';
      groupId?: string;
      clientMsgId: string;
      msgId: number;
      prevMsgId: number;
      epoch: string;
      ts: number;
    }
  | { type: 'error'; code: string; message: string; groupId?: string; clientMsgId?: string };

export class InboxConnection extends SocketClient<InboxEvents, InboxServerEvent> {
  readonly userId: string;
  private readonly api: ChatApi;
  private readonly o: InboxConnectionOptions & {
    typingIntervalMs: number;
    stableAfterMs: number;
    fallbackAfterMs: number;
    presencePollMs: number;
  };
  private readonly outbox: Outbox;
  private readonly groups = new Map<string, Followed>();
  private inboxState: ConnectionState = 'connecting';
  private modeNow: InboxMode = 'inbox';
  private shardNow: number | undefined;
  private lastStatus: InboxStatus | undefined;
  private pollTimer: ReturnType<typeof setInterval> | undefined;
  private fallbackTimer: ReturnType<typeof setTimeout> | undefined;
  private statusNow: 'online' | 'away' = 'online';
  private openedAt = 0;

  constructor(o: InboxConnectionOptions) {
    super(o);
    this.api = o.api;
    this.userId = o.userId;
    this.o = {
      ...o,
      typingIntervalMs: o.typingIntervalMs ?? 2000,
      stableAfterMs: o.stableAfterMs ?? 5000,
      fallbackAfterMs: o.fallbackAfterMs ?? 3000,
      presencePollMs: o.presencePollMs ?? 10_000,
    };
    this.outbox = new Outbox(o, {
      write: (e) => this.writeEntry(e),
      changed: (e) => this.emit('outgoing', e),
    });
    for (const g of o.groups ?? []) this.follow(g, o.resume?.[g]);
    // Started on the next tick so that listeners added right after construction see everything.
    queueMicrotask(() => {
      this.armFallback();
      void this.connect();
    });
  }

  // --- what the application sees ---

  /** Whether messages are being delivered (see InboxStatus.state). */
  get state(): ConnectionState {
    return this.computeStatus().state;
  }

  /** State, mode and the inbox socket's own state. */
  get status(): InboxStatus {
    return this.computeStatus();
  }

  get mode(): InboxMode {
    return this.modeNow;
  }

  /** The session host's ordinal, as the inbox's hello said. */
  get shard(): number | undefined {
    return this.shardNow;
  }

  get followed(): string[] {
    return [...this.groups.keys()];
  }

  /** Whether a group's messages are being delivered now (by the inbox or its own socket). */
  isLive(groupId: string): boolean {
    if (!this.groups.has(groupId)) return false;
    return this.modeNow === 'inbox'
      ? this.inboxState === 'open'
      : this.groups.get(groupId)?.gc?.state === 'open';
  }

  epoch(groupId: string): string | undefined {
    return this.groups.get(groupId)?.seq.epoch;
  }

  /** The msgId of the last message delivered of a group (0 before the first). */
  lastMsgId(groupId: string): number {
    return this.groups.get(groupId)?.seq.lastMsgId ?? 0;
  }

  /** How a group's messages come now: pushed, or pulled after ticks (push until a tick says pull). */
  deliveryMode(groupId: string): DeliveryMode | undefined {
    return this.groups.get(groupId)?.mode;
  }

  onlineUsers(groupId: string): string[] {
    return this.groups.get(groupId)?.online.users() ?? [];
  }

  /** Messages not yet acknowledged (pending or failed), oldest first; of one group when given. */
  unacknowledged(groupId?: string): Outgoing[] {
    return this.outbox.list(groupId);
  }

  /** Starts delivering a group's messages (from `resume`, or its recent history). */
  follow(groupId: string, resume?: ResumePoint): void {
    if (this.userClosed || this.groups.has(groupId)) return;
    const f: Followed = {
      groupId,
      online: new PresenceSet(),
      lastTypingAt: 0,
      refused: false,
      mode: 'push',
      seq: new GroupSequencer(
        {
          api: this.api,
          groupId,
          epoch: resume?.epoch,
          lastMsgId: resume?.lastMsgId,
          initialHistory: this.o.initialHistory,
          pageSize: this.o.pageSize,
          backoff: this.o.backoff,
          random: this.o.random,
        },
        {
          deliver: (m) => {
            this.outbox.delivered(m, this.userId);
            this.emit('message', m);
          },
          reset: () => this.emit('reset', groupId),
          error: (e) => this.emit('error', e, groupId),
          active: () => this.isLive(groupId),
        },
      ),
    };
    this.groups.set(groupId, f);
    if (this.inboxState === 'open') this.raw({ type: 'follow', groupIds: [groupId] });
    if (this.modeNow === 'fallback') {
      this.openGroupSocket(f);
    } else if (this.inboxState === 'open') {
      f.seq.catchUp();
      void this.loadPresence(f, this.generation);
    }
    this.emitStatus();
  }

  /** Stops delivering a group; its unacknowledged sends reject. */
  unfollow(groupId: string): void {
    const f = this.groups.get(groupId);
    if (!f) return;
    this.groups.delete(groupId);
    if (this.inboxState === 'open') this.raw({ type: 'unfollow', groupIds: [groupId] });
    f.seq.close();
    f.gc?.close();
    this.outbox.rejectAll(new ShardChatError(0, 'closed', `${groupId} is no longer followed`), groupId);
    this.emitStatus();
  }

  /** This user's status as the others see it (while the inbox is open): online or away. */
  get presenceStatus(): 'online' | 'away' {
    return this.statusNow;
  }

  /** Sets this user's status in every followed group (sent now and after every reconnect). */
  setStatus(status: 'online' | 'away'): void {
    if (status !== 'online' && status !== 'away') throw new TypeError("status is 'online' or 'away'");
    if (this.userClosed || status === this.statusNow) return;
    this.statusNow = status;
    if (this.inboxState === 'open') this.raw({ type: 'status', status });
  }

  /** Sends a message to a followed group; resent with the same clientMsgId until acknowledged. */
  send(groupId: string, contents: string, clientMsgId?: string): Outgoing {
    if (!this.groups.has(groupId)) throw new TypeError(`${groupId} is not followed`);
    return this.outbox.add(groupId, contents, clientMsgId, this.isLive(groupId));
  }

  /** Puts a failed message back in the outbox with its clientMsgId. */
  retry(clientMsgId: string): void {
    const e = this.outbox.get(clientMsgId);
    if (e) this.outbox.retry(clientMsgId, this.isLive(e.groupId));
  }

  /** Tells a group's others this user is typing; throttled, dropped while disconnected. */
  typing(groupId: string): void {
    const f = this.groups.get(groupId);
    if (!f) return;
    if (this.modeNow === 'fallback') {
      f.gc?.typing();
      return;
    }
    const now = Date.now();
    if (this.inboxState !== 'open' || now - f.lastTypingAt < this.o.typingIntervalMs) return;
    f.lastTypingAt = now;
    this.raw({ type: 'typing', groupId });
  }

  /** Closes for good (inbox and group sockets); unacknowledged sends reject. */
  close(): void {
    if (this.userClosed) return;
    this.userClosed = true;
    this.stop();
    clearTimeout(this.fallbackTimer);
    for (const f of this.groups.values()) {
      f.seq.close();
      f.gc?.close();
      f.gc = undefined;
    }
    this.outbox.rejectAll(new ShardChatError(0, 'closed', 'the connection was closed'));
    this.inboxState = 'closed';
    this.emitStatus();
  }

  // --- the inbox socket ---

  protected socketUrl(): Promise<string> {
    return this.api.userSocketUrl(this.userId);
  }

  protected reportError(e: ShardChatError): void {
    this.emit('error', e);
  }

  protected onClose(code: number, reason: string, greeted: boolean, refusedWith: number | undefined): void {
    this.ws = undefined;
    this.clearTimers();
    for (const f of this.groups.values()) {
      if (this.modeNow === 'inbox' && f.online.size > 0) {
        // Who is online is unknown until the next hello (or the group sockets say it).
        f.online.clear();
        this.emit('presence', f.groupId, []);
      }
    }
    if (this.userClosed) return;
    if (FATAL_CLOSE.has(code)) {
      this.fatal(new ShardChatError(403, 'forbidden', reason || 'the server ended the inbox'));
      return;
    }
    if (code === TOO_BIG) this.outbox.tooLarge(this.openedAt);
    this.inboxState = this.inboxState === 'connecting' && !greeted ? 'connecting' : 'reconnecting';
    this.armFallback();
    this.emitStatus();
    if (code === CLOSE_MOVED) {
      // The user moved to another session host: reconnect at once; the hello there
      // catches every group up from its lastMsgId and writes what is pending again with
      // its clientMsgId. A write on the moved socket does not count against maxSendAttempts.
      if (greeted && this.modeNow === 'inbox') this.outbox.moved(this.openedAt);
      this.scheduleReconnect(undefined, true);
      return;
    }
    if (greeted) {
      this.scheduleReconnect();
      return;
    }
    if (refusedWith === 401 || refusedWith === 403) {
      this.fatal(
        new ShardChatError(
          refusedWith,
          refusedWith === 401 ? 'unauthorized' : 'forbidden',
          `the inbox of ${this.userId} was refused (${refusedWith})`,
        ),
      );
      return;
    }
    if (refusedWith !== undefined) {
      // Unavailable, misdirected, not there (an older server): the group sockets cover it.
      this.scheduleReconnect();
      return;
    }
    // The upgrade was refused or never answered and the WebSocket does not say why (a
    // browser): ask the session host over HTTP whether the token is good.
    this.api.getUser(this.userId).then(
      () => this.scheduleReconnect(),
      (err: unknown) => {
        const e = asError(err);
        if (e.status === 401 || e.status === 403) this.fatal(e);
        else this.scheduleReconnect(e.retryAfter);
      },
    );
  }

  protected scheduleReconnect(retryAfterSeconds?: number, moved = false): void {
    if (this.userClosed) return;
    if (this.inboxState === 'open') this.inboxState = 'reconnecting';
    this.emitStatus();
    if (moved) this.retryMoved();
    else this.retryIn(retryAfterSeconds);
  }

  protected clearTimers(): void {
    this.clearOpenTimers();
    clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    if (this.modeNow === 'inbox') for (const f of this.groups.values()) f.seq.cancelRetry();
  }

  /** Writes an outbox entry where its group is served now: the inbox, or the group's socket. */
  private writeEntry(e: OutboxEntry): boolean {
    if (this.modeNow === 'inbox') {
      if (this.inboxState !== 'open') return false;
      return this.raw({
        type: 'message',
        groupId: e.groupId,
        contents: e.contents,
        clientMsgId: e.clientMsgId,
      });
    }
    const gc = this.groups.get(e.groupId)?.gc;
    return gc?.state === 'open' ? gc.writeEntry(e) : false;
  }

  // --- inbox events ---

  protected onEvent(e: InboxServerEvent): void {
    switch (e.type) {
      case 'hello':
        this.onHello(e);
        return;
      case 'message': {
        const { type: _type, ...m } = e;
        const f = this.groups.get(m.groupId);
        if (!f) return;
        // Messages are pushed only in push mode (the tick that said so may have been missed).
        this.setMode(f, 'push');
        f.seq.receive(m);
        return;
      }
      case 'tick': {
        const f = this.groups.get(e.groupId);
        if (!f) return;
        if (e.mode) this.setMode(f, e.mode);
        // Reads ?after= when the tick is ahead (one read at a time: ticks meanwhile coalesce).
        f.seq.head(e.epoch, e.lastMsgId);
        return;
      }
      case 'joined':
      case 'left':
        this.emit('membership', e.groupId, e.type === 'joined');
        return;
      case 'typing':
        if (e.userId !== this.userId && this.groups.has(e.groupId)) this.emit('typing', e.groupId, e.userId);
        return;
      case 'presence': {
        const f = this.groups.get(e.groupId);
        if (!f) return;
        f.online.event(e.userId, e.status !== 'offline');
        this.emit('presence', e.groupId, f.online.users());
        return;
      }
      case 'ack': {
        const entry = this.outbox.get(e.clientMsgId);
        if (entry && (e.groupId === undefined || e.groupId === entry.groupId))
          this.outbox.acknowledge(e.clientMsgId, {
            msgId: e.msgId,
            prevMsgId: e.prevMsgId,
            epoch: e.epoch,
            ts: e.ts,
          });
        return;
      }
      case 'error': {
        const err = new ShardChatError(0, e.code, e.message);
        if (e.clientMsgId !== undefined) this.outbox.serverError(e.clientMsgId, err);
        this.emit('error', err, e.groupId);
        return;
      }
    }
  }

  private onHello(h: { userId: string; shard?: number }): void {
    this.shardNow = h.shard;
    this.inboxState = 'open';
    this.openedAt = Date.now();
    clearTimeout(this.fallbackTimer);
    this.fallbackTimer = undefined;
    if (this.modeNow === 'fallback') this.leaveFallback();
    this.emitStatus();
    // Presence: the status first (a host starts every connection online), then what is followed.
    if (this.statusNow !== 'online') this.raw({ type: 'status', status: this.statusNow });
    const ids = [...this.groups.keys()];
    this.raw({ type: 'follow', groupIds: ids.slice(0, FOLLOW_CHUNK) });
    for (let i = FOLLOW_CHUNK; i < ids.length; i += FOLLOW_CHUNK)
      this.raw({ type: 'follow', groupIds: ids.slice(i, i + FOLLOW_CHUNK) });
    this.emit('hello', { userId: h.userId, shard: h.shard });
    const gen = this.generation;
    this.startOpenTimers(
      this.o.stableAfterMs,
      () => {
        if (this.modeNow === 'inbox' && this.inboxState === 'open') this.outbox.checkAcks(() => true);
      },
      this.outbox.checkIntervalMs,
    );
    this.outbox.flush();
    for (const f of this.groups.values()) {
      f.seq.catchUp();
      void this.loadPresence(f, gen);
    }
    if (this.o.presencePollMs > 0) {
      this.pollTimer = setInterval(() => {
        for (const f of this.groups.values()) void this.loadPresence(f, gen);
      }, this.o.presencePollMs);
    }
  }

  private setMode(f: Followed, mode: DeliveryMode): void {
    if (mode === f.mode || (mode !== 'push' && mode !== 'pull')) return;
    f.mode = mode;
    this.emit('mode', f.groupId, mode);
  }

  private async loadPresence(f: Followed, gen: number): Promise<void> {
    const from = f.online.begin();
    try {
      const p = await this.api.presence(f.groupId);
      if (gen !== this.generation || this.modeNow !== 'inbox' || this.groups.get(f.groupId) !== f) return;
      // Events that arrived while it was read are newer than the snapshot: applied on top.
      f.online.snapshot(
        from,
        p.map((e) => e.userId),
      );
      // This user is online in the group through this inbox.
      f.online.add(this.userId);
      this.emit('presence', f.groupId, f.online.users());
    } catch (err) {
      this.emit('error', asError(err), f.groupId);
    } finally {
      f.online.done();
    }
  }

  // --- fallback: the groups' own sockets ---

  /** Starts the countdown to fallback mode unless it runs already (or fallback is on). */
  private armFallback(): void {
    if (this.userClosed || this.modeNow === 'fallback' || this.fallbackTimer !== undefined) return;
    this.fallbackTimer = setTimeout(() => {
      this.fallbackTimer = undefined;
      if (this.userClosed || this.inboxState === 'open') return;
      this.enterFallback();
    }, this.o.fallbackAfterMs);
  }

  private enterFallback(): void {
    this.modeNow = 'fallback';
    for (const f of this.groups.values()) {
      f.seq.cancelRetry();
      this.openGroupSocket(f);
    }
    this.emitStatus();
  }

  private leaveFallback(): void {
    this.modeNow = 'inbox';
    for (const f of this.groups.values()) {
      const gc = f.gc;
      f.gc = undefined;
      f.refused = false;
      gc?.close();
    }
  }

  private openGroupSocket(f: Followed): void {
    if (f.gc || f.refused) return;
    const gc = new GroupConnection({
      api: this.api,
      groupId: f.groupId,
      WebSocket: this.WS,
      backoff: this.o.backoff,
      typingIntervalMs: this.o.typingIntervalMs,
      stableAfterMs: this.o.stableAfterMs,
      movedRetryWindowMs: this.o.movedRetryWindowMs,
      random: this.o.random,
      shared: { sequencer: f.seq, outbox: this.outbox, userId: this.userId },
    });
    f.gc = gc;
    gc.on('state', (s) => {
      if (f.gc !== gc) return;
      if (s === 'closed') {
        // Refused for good (not a member, removed): its sends cannot succeed.
        f.gc = undefined;
        f.refused = true;
        this.outbox.rejectAll(
          f.lastError ?? new ShardChatError(403, 'forbidden', `${f.groupId} refused the connection`),
          f.groupId,
        );
      }
      this.emitStatus();
    });
    gc.on('typing', (userId) => this.emit('typing', f.groupId, userId));
    gc.on('hello', (h) => {
      if (f.gc === gc) this.setMode(f, h.mode);
    });
    gc.on('mode', (mode) => {
      if (f.gc === gc) this.setMode(f, mode);
    });
    gc.on('presence', (online) => {
      if (f.gc !== gc) return;
      f.online.replace(online);
      this.emit('presence', f.groupId, online);
    });
    gc.on('error', (e) => {
      if (f.gc !== gc) return;
      f.lastError = e;
      this.emit('error', e, f.groupId);
    });
  }

  // --- state ---

  private computeStatus(): InboxStatus {
    let state: ConnectionState;
    if (this.userClosed) state = 'closed';
    else if (this.modeNow === 'inbox') state = this.inboxState;
    else {
      const live = [...this.groups.values()].filter((f) => !f.refused);
      state =
        live.length > 0 && live.every((f) => f.gc?.state === 'open')
          ? 'open'
          : this.inboxState === 'connecting' && !live.some((f) => f.gc?.state === 'reconnecting')
            ? 'connecting'
            : 'reconnecting';
    }
    return { state, mode: this.modeNow, inbox: this.inboxState };
  }

  private emitStatus(): void {
    const s = this.computeStatus();
    const l = this.lastStatus;
    if (l && l.state === s.state && l.mode === s.mode && l.inbox === s.inbox) return;
    this.lastStatus = s;
    this.emit('state', s);
  }
}
