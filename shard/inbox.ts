/**
 * The inbox WebSocket (`GET /users/{userId}/ws`, docs/delivery-protocol.md section 1):
 * one connection per user device on the user's session host `shard(userId)`, carrying
 * the events of all of the user's groups. Ownership of the userId first (421), then
 * the token (401), then `sub` must equal userId (403). `hello {userId, shard}` on
 * connect; the client sends `message` (forwarded to the group's shard, answered with
 * `ack` or `error`) and `typing` (forwarded, fanned out to the other members). Limits
 * as for group WebSockets: payload (1009), rate (4029), bounded send queue (4008),
 * 1001 on shutdown.
 *
 * Presence (section 6): the client says which groups it follows (`follow` / `unfollow`
 * with `groupIds`) and its `status` (online, away). Per user and group the host reports
 * the user's status (online if any of the user's connections following the group is
 * online, away if all are away) to the group's shard on every change, offline when no
 * connection follows the group any more (unfollow, last connection closed), and
 * refreshes what it reported every 30 s. Reports of one user and group go in order.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import type { Config } from '../common/config.js';
import type { Logger } from '../common/logger.js';
import { type Authenticator, tokenOf } from './auth.js';
import { ApiError } from './errors.js';
import { CLOSE, refuse } from './hub.js';
import { isClientId, isGroupId } from './ids.js';
import type { ShardMetrics } from './metrics.js';
import type { Ownership } from './ownership.js';
import { PRESENCE_REFRESH_MS, type PresenceStatus } from './presence.js';
import type { Message } from './store.js';

/** Forwards what a client sends to the group's shard (locally when this shard owns the group). */
export interface InboxForwarder {
  post(groupId: string, userId: string, contents: string, clientMsgId: string): Promise<Message>;
  typing(groupId: string, userId: string): Promise<void>;
  /** Reports a user's presence in a group to the group's shard. */
  presence(groupId: string, userId: string, status: PresenceStatus): Promise<void>;
}

/** Groups one inbox connection may follow at most. */
const MAX_FOLLOWED = 10_000;

export interface InboxOptions {
  cfg: Config;
  log: Logger;
  auth: Authenticator;
  own: Ownership;
  metrics: ShardMetrics;
  forward: InboxForwarder;
  /** Group WebSockets and inboxes share the shard's connection limit. */
  otherConnections(): number;
  /** How often reported presence is refreshed (default 30 s). */
  presenceRefreshMs?: number;
}

interface Conn {
  ws: WebSocket;
  userId: string;
  tokens: number;
  refilledAt: number;
  done: boolean;
  /** Groups this connection follows (for presence). */
  groups: Set<string>;
  status: 'online' | 'away';
}

const CLOSE_GRACE_MS = 5000;

export class InboxHub {
  private readonly wss: WebSocketServer;
  private readonly users = new Map<string, Set<Conn>>();
  private count = 0;
  private closing = false;
  /** What was last reported per user and group (absent: offline). */
  private readonly reported = new Map<string, Map<string, 'online' | 'away'>>();
  /** The report in progress per `userId groupId` (reports of one key go in order). */
  private readonly chains = new Map<string, Promise<void>>();
  private readonly refreshTimer: NodeJS.Timeout;

  constructor(private readonly o: InboxOptions) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: o.cfg.shard.limits.wsMaxPayloadBytes,
      perMessageDeflate: false,
    });
    this.refreshTimer = setInterval(() => this.refresh(), o.presenceRefreshMs ?? PRESENCE_REFRESH_MS);
    this.refreshTimer.unref();
  }

  get connections(): number {
    return this.count;
  }

  /** Whether the user has a live inbox connection on this host. */
  isOnline(userId: string): boolean {
    return (this.users.get(userId)?.size ?? 0) > 0;
  }

  /** Whether a request path is an inbox WebSocket. */
  static matches(url: string | undefined): boolean {
    return /^\/users\/[^/?]+\/ws(?:\?|$)/.test(url ?? '');
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    this.admit(req)
      .then((userId) => {
        if (socket.destroyed) return;
        if (this.closing) {
          refuse(
            socket,
            new ApiError(503, 'shutting_down', 'the shard is shutting down', { 'retry-after': '2' }),
          );
          return;
        }
        this.wss.handleUpgrade(req, socket, head, (ws) => this.open(ws, userId));
      })
      .catch((err: unknown) => {
        if (err instanceof ApiError) refuse(socket, err);
        else {
          this.o.log.error({ err: (err as Error).stack }, 'inbox upgrade failed');
          refuse(socket, new ApiError(503, 'unavailable', 'try again'));
        }
      });
  }

  private async admit(req: IncomingMessage): Promise<string> {
    const url = new URL(req.url ?? '/', 'http://shard');
    const m = /^\/users\/([^/]+)\/ws$/.exec(url.pathname);
    if (!m) throw new ApiError(404, 'not_found', 'no WebSocket at this path');
    let userId: string;
    try {
      userId = decodeURIComponent(m[1] as string);
    } catch {
      throw new ApiError(400, 'bad_id', 'malformed user id');
    }
    if (!isClientId(userId)) throw new ApiError(400, 'bad_id', 'malformed user id');
    const routed = req.headers['x-shardchat-shard'];
    this.o.own.check(userId, typeof routed === 'string' ? routed : undefined);
    if (this.closing)
      throw new ApiError(503, 'shutting_down', 'the shard is shutting down', { 'retry-after': '2' });
    const me = await this.o.auth.verify(
      tokenOf(req.headers.authorization, url.searchParams.get('token') ?? undefined),
    );
    if (me !== userId) throw new ApiError(403, 'forbidden', 'you may only open your own inbox');
    if (this.count + this.o.otherConnections() >= this.o.cfg.shard.limits.maxConnections) {
      throw new ApiError(503, 'too_many_connections', 'this shard has no room for more connections', {
        'retry-after': '5',
      });
    }
    return userId;
  }

  private open(ws: WebSocket, userId: string): void {
    const limits = this.o.cfg.shard.limits;
    const conn: Conn = {
      ws,
      userId,
      tokens: limits.wsBurst,
      refilledAt: Date.now(),
      done: false,
      groups: new Set(),
      status: 'online',
    };
    ws.on('message', (data, isBinary) => this.onMessage(conn, data as Buffer, isBinary));
    ws.on('error', (err) => {
      this.o.log.debug({ err: err.message, userId }, 'inbox WebSocket error');
      this.finish(conn);
    });
    ws.on('close', () => this.remove(conn));
    if (this.closing) {
      this.closeConn(conn, CLOSE.goingAway, 'shard shutting down');
      return;
    }
    let set = this.users.get(userId);
    if (!set) {
      set = new Set();
      this.users.set(userId, set);
    }
    set.add(conn);
    this.count++;
    this.o.metrics.inboxConnections.set(this.count);
    this.send(conn, { type: 'hello', userId, shard: this.o.own.ordinal });
  }

  private remove(conn: Conn): void {
    conn.done = true;
    const set = this.users.get(conn.userId);
    if (!set?.delete(conn)) return;
    this.count--;
    this.o.metrics.inboxConnections.set(this.count);
    if (set.size === 0) this.users.delete(conn.userId);
    if (conn.groups.size > 0) this.updatePresence(conn.userId);
  }

  // --- presence ---

  /** Reports what changed of a user's presence in the groups their connections follow. */
  private updatePresence(userId: string): void {
    const want = new Map<string, 'online' | 'away'>();
    for (const c of this.users.get(userId) ?? [])
      for (const g of c.groups) if (want.get(g) !== 'online') want.set(g, c.status);
    const had = this.reported.get(userId) ?? new Map<string, 'online' | 'away'>();
    for (const [g, status] of want) if (had.get(g) !== status) this.report(userId, g, status);
    for (const g of had.keys()) if (!want.has(g)) this.report(userId, g, 'offline');
    if (want.size > 0) this.reported.set(userId, want);
    else this.reported.delete(userId);
  }

  private report(userId: string, groupId: string, status: PresenceStatus): void {
    const key = `${userId} ${groupId}`;
    const next = (this.chains.get(key) ?? Promise.resolve())
      .then(() => this.o.forward.presence(groupId, userId, status))
      .catch((err: Error) =>
        this.o.log.debug({ err: err.message, userId, groupId, status }, 'presence report failed'),
      );
    this.chains.set(key, next);
    void next.then(() => {
      if (this.chains.get(key) === next) this.chains.delete(key);
    });
  }

  /** Refreshes every reported status before the group's shard lets it expire. */
  private refresh(): void {
    for (const [userId, groups] of this.reported)
      for (const [g, status] of groups)
        if (!this.chains.has(`${userId} ${g}`)) this.report(userId, g, status);
  }

  private onPresenceEvent(conn: Conn, ev: Record<string, unknown>): void {
    if (ev.type === 'status') {
      if (ev.status !== 'online' && ev.status !== 'away') {
        this.send(conn, { type: 'error', code: 'bad_field', message: "status must be 'online' or 'away'" });
        return;
      }
      conn.status = ev.status;
      this.updatePresence(conn.userId);
      return;
    }
    const ids = ev.groupIds;
    if (!Array.isArray(ids) || !ids.every((g) => typeof g === 'string' && isGroupId(g))) {
      this.send(conn, { type: 'error', code: 'bad_field', message: 'groupIds must be a list of group ids' });
      return;
    }
    if (ev.type === 'unfollow') for (const g of ids as string[]) conn.groups.delete(g);
    else
      for (const g of ids as string[]) {
        if (conn.groups.size >= MAX_FOLLOWED && !conn.groups.has(g)) {
          this.send(conn, {
            type: 'error',
            code: 'too_many_groups',
            groupId: g,
            message: `an inbox follows ${MAX_FOLLOWED} groups at most`,
          });
          break;
        }
        conn.groups.add(g);
      }
    this.updatePresence(conn.userId);
  }

  private finish(conn: Conn): void {
    if (conn.done && conn.ws.readyState === conn.ws.CLOSED) return;
    conn.done = true;
    const ws = conn.ws;
    const timer = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
    timer.unref();
    ws.once('close', () => clearTimeout(timer));
  }

  private closeConn(conn: Conn, code: number, reason: string): void {
    if (conn.done) return;
    this.finish(conn);
    conn.ws.close(code, reason);
  }

  private onMessage(conn: Conn, data: Buffer, isBinary: boolean): void {
    if (conn.done || conn.ws.readyState !== conn.ws.OPEN) return;
    const limits = this.o.cfg.shard.limits;
    const now = Date.now();
    conn.tokens = Math.min(
      limits.wsBurst,
      conn.tokens + ((now - conn.refilledAt) / 1000) * limits.wsMessagesPerSecond,
    );
    conn.refilledAt = now;
    if (conn.tokens < 1) {
      this.send(conn, { type: 'error', code: 'rate_limited', message: 'too many messages; slow down' });
      this.closeConn(conn, CLOSE.rateLimited, 'rate limited');
      return;
    }
    conn.tokens -= 1;
    if (isBinary) {
      this.send(conn, { type: 'error', code: 'bad_frame', message: 'send JSON text frames' });
      return;
    }
    let ev: Record<string, unknown>;
    try {
      ev = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
      if (typeof ev !== 'object' || ev === null || Array.isArray(ev)) throw new Error('not an object');
    } catch {
      this.send(conn, {
        type: 'error',
        code: 'malformed_json',
        message: 'events are JSON objects with a type',
      });
      return;
    }
    if (ev.type === 'follow' || ev.type === 'unfollow' || ev.type === 'status') {
      this.onPresenceEvent(conn, ev);
      return;
    }
    if (ev.type !== 'message' && ev.type !== 'typing') {
      this.send(conn, {
        type: 'error',
        code: 'unknown_type',
        message: "send 'message', 'typing', 'follow', 'unfollow' or 'status'",
      });
      return;
    }
    const groupId = ev.groupId;
    if (typeof groupId !== 'string' || !isGroupId(groupId)) {
      this.send(conn, {
        type: 'error',
        code: 'bad_field',
        ...(typeof ev.clientMsgId === 'string' ? { clientMsgId: ev.clientMsgId } : {}),
        message: 'groupId must name a group',
      });
      return;
    }
    if (ev.type === 'typing') {
      this.o.forward
        .typing(groupId, conn.userId)
        .catch((err: Error & { code?: string }) =>
          this.send(conn, { type: 'error', code: err.code ?? 'unavailable', groupId, message: err.message }),
        );
      return;
    }
    const contents = ev.contents;
    const clientMsgId = ev.clientMsgId;
    if (typeof clientMsgId !== 'string' || !/^[A-Za-z0-9._:-]{1,128}$/.test(clientMsgId)) {
      this.send(conn, {
        type: 'error',
        code: 'bad_field',
        groupId,
        message: 'clientMsgId must be 1 to 128 of A-Z a-z 0-9 . _ : -',
      });
      return;
    }
    if (
      typeof contents !== 'string' ||
      contents.trim() === '' ||
      Buffer.byteLength(contents) > limits.maxMessageBytes
    ) {
      this.send(conn, {
        type: 'error',
        code: 'bad_field',
        groupId,
        clientMsgId,
        message: `contents must be 1 to ${limits.maxMessageBytes} bytes of text`,
      });
      return;
    }
    this.o.forward.post(groupId, conn.userId, contents, clientMsgId).then(
      (m) =>
        this.send(conn, {
          type: 'ack',
          groupId,
          clientMsgId,
          msgId: m.msgId,
          prevMsgId: m.prevMsgId,
          epoch: m.epoch,
          ts: m.ts,
        }),
      (err: Error & { code?: string }) =>
        this.send(conn, {
          type: 'error',
          code: err.code ?? 'unavailable',
          groupId,
          clientMsgId,
          message: err.message,
        }),
    );
  }

  /** Sends an event to every inbox connection of each recipient on this host; returns how many got it. */
  deliver(recipients: readonly string[], event: object): number {
    let text: string | undefined;
    let n = 0;
    for (const userId of recipients) {
      const set = this.users.get(userId);
      if (!set) continue;
      text ??= JSON.stringify(event);
      for (const c of set) if (this.sendText(c, text)) n++;
    }
    return n;
  }

  private send(conn: Conn, event: object): void {
    this.sendText(conn, JSON.stringify(event));
  }

  private sendText(conn: Conn, text: string): boolean {
    const ws = conn.ws;
    if (conn.done || ws.readyState !== ws.OPEN) return false;
    if (ws.bufferedAmount > this.o.cfg.shard.limits.wsSendQueueBytes) {
      this.o.metrics.slowConsumers.inc();
      this.closeConn(conn, CLOSE.slowConsumer, 'slow consumer');
      return false;
    }
    ws.send(text);
    this.o.metrics.deliveries.inc();
    return true;
  }

  /** Closes every inbox with 1001 (shutdown). */
  close(): void {
    this.closing = true;
    clearInterval(this.refreshTimer);
    for (const set of this.users.values())
      for (const c of set) this.closeConn(c, CLOSE.goingAway, 'shard shutting down');
  }
}
