/**
 * Group WebSockets (`GET /groups/{id}/ws`, DESIGN section 4): `hello {epoch, lastMsgId,
 * mode}` on connect, then `message`, `typing`, `presence` and `error` events; clients
 * send `message` and `typing`. Each connection has a bounded send queue (a consumer
 * that falls behind is closed with 4008, never buffered without bound) and a message
 * rate limit.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import type { Config } from '../common/config.js';
import type { Logger } from '../common/logger.js';
import { type Authenticator, tokenOf } from './auth.js';
import { ApiError } from './errors.js';
import { isGroupId } from './ids.js';
import type { ShardMetrics } from './metrics.js';
import type { Ownership } from './ownership.js';
import type { Message, Store } from './store.js';

/** Close codes of group WebSockets. */
export const CLOSE = {
  goingAway: 1001,
  policy: 1008,
  tooBig: 1009,
  tryAgain: 1013,
  slowConsumer: 4008,
  rateLimited: 4029,
} as const;

export interface HubOptions {
  cfg: Config;
  log: Logger;
  store: Store;
  auth: Authenticator;
  own: Ownership;
  metrics: ShardMetrics;
  /** Stores a message sent over a WebSocket, as POST …/messages does. */
  post(groupId: string, userId: string, contents: string, clientMsgId: string): Promise<Message>;
  /**
   * A user's first connection to a group opened (true) or their last closed (false).
   * When given, the hub announces no presence itself: the caller does (shard/presence.ts,
   * through `announcePresence`), counting users present through their inbox as well.
   */
  onPresence?(groupId: string, userId: string, connected: boolean): void;
}

interface Conn {
  ws: WebSocket;
  groupId: string;
  userId: string;
  tokens: number;
  refilledAt: number;
  /** Set once the connection is being closed: nothing more is sent or accepted. */
  done: boolean;
}

/** The connections of one group, and how many each connected user has. */
interface GroupConns {
  conns: Set<Conn>;
  users: Map<string, number>;
}

/** How long a closing connection may take to flush its (bounded) queue and close frame. */
const CLOSE_GRACE_MS = 5000;

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  421: 'Misdirected Request',
  503: 'Service Unavailable',
};

export function refuse(socket: Duplex, e: ApiError): void {
  const body = JSON.stringify({ error: { code: e.code, message: e.message } });
  let head = `HTTP/1.1 ${e.status} ${STATUS_TEXT[e.status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n`;
  for (const [k, v] of Object.entries(e.headers)) head += `${k}: ${v}\r\n`;
  socket.end(`${head}\r\n${body}`);
}

export class GroupHub {
  private readonly wss: WebSocketServer;
  private readonly groups = new Map<string, GroupConns>();
  private count = 0;
  private closing = false;

  constructor(private readonly o: HubOptions) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: o.cfg.shard.limits.wsMaxPayloadBytes,
      perMessageDeflate: false,
    });
  }

  get connections(): number {
    return this.count;
  }

  /** Users connected to a group now, with their number of connections. */
  presence(groupId: string): { userId: string; connections: number }[] {
    const users = this.groups.get(groupId)?.users;
    return users ? [...users].map(([userId, connections]) => ({ userId, connections })) : [];
  }

  /** Whether a user has a live connection to the group (constant time). */
  isConnected(groupId: string, userId: string): boolean {
    return (this.groups.get(groupId)?.users.get(userId) ?? 0) > 0;
  }

  /** Answers an upgrade request for /groups/{id}/ws (after ownership, auth and membership checks). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    this.admit(req)
      .then(({ groupId, userId }) => {
        if (socket.destroyed) return;
        if (this.closing) {
          // The shard began shutting down while the request was being checked.
          refuse(
            socket,
            new ApiError(503, 'shutting_down', 'the shard is shutting down', { 'retry-after': '2' }),
          );
          return;
        }
        this.wss.handleUpgrade(req, socket, head, (ws) => this.open(ws, groupId, userId));
      })
      .catch((err: unknown) => {
        if (err instanceof ApiError) refuse(socket, err);
        else {
          this.o.log.error({ err: (err as Error).stack }, 'upgrade failed');
          refuse(socket, new ApiError(503, 'unavailable', 'try again'));
        }
      });
  }

  private async admit(req: IncomingMessage): Promise<{ groupId: string; userId: string }> {
    const url = new URL(req.url ?? '/', 'http://shard');
    const m = /^\/groups\/([^/]+)\/ws$/.exec(url.pathname);
    if (!m) throw new ApiError(404, 'not_found', 'no WebSocket at this path');
    let groupId: string;
    try {
      groupId = decodeURIComponent(m[1] as string);
    } catch {
      throw new ApiError(400, 'bad_id', 'malformed group id');
    }
    if (!isGroupId(groupId)) throw new ApiError(400, 'bad_id', 'malformed group id');
    const routed = req.headers['x-shardchat-shard'];
    this.o.own.check(groupId, typeof routed === 'string' ? routed : undefined);
    if (this.closing)
      throw new ApiError(503, 'shutting_down', 'the shard is shutting down', { 'retry-after': '2' });
    const userId = await this.o.auth.verify(
      tokenOf(req.headers.authorization, url.searchParams.get('token') ?? undefined),
    );
    if (!this.o.store.getGroup(groupId))
      throw new ApiError(404, 'not_found', `group ${groupId} does not exist`);
    if (!this.o.store.isMember(groupId, userId))
      throw new ApiError(403, 'forbidden', `only members of ${groupId} may subscribe`);
    if (this.count >= this.o.cfg.shard.limits.maxConnections) {
      throw new ApiError(503, 'too_many_connections', 'this shard has no room for more connections', {
        'retry-after': '5',
      });
    }
    return { groupId, userId };
  }

  private open(ws: WebSocket, groupId: string, userId: string): void {
    const limits = this.o.cfg.shard.limits;
    const conn: Conn = { ws, groupId, userId, tokens: limits.wsBurst, refilledAt: Date.now(), done: false };
    // Listeners first: an error or close at any later point must find the connection registered.
    ws.on('message', (data, isBinary) => this.onMessage(conn, data as Buffer, isBinary));
    // ws closes the connection itself on protocol errors (1002, 1007, 1009: the close
    // frame is already queued); terminating here would lose that close code.
    ws.on('error', (err) => {
      this.o.log.debug({ err: err.message, groupId, userId }, 'group WebSocket error');
      this.finish(conn);
    });
    ws.on('close', () => this.remove(conn));
    if (this.closing) {
      this.closeConn(conn, CLOSE.goingAway, 'shard shutting down');
      return;
    }
    let g = this.groups.get(groupId);
    if (!g) {
      g = { conns: new Set(), users: new Map() };
      this.groups.set(groupId, g);
    }
    const before = g.users.get(userId) ?? 0;
    g.conns.add(conn);
    g.users.set(userId, before + 1);
    this.count++;
    this.o.metrics.connections.set(this.count);
    const row = this.o.store.getGroup(groupId);
    this.send(conn, {
      type: 'hello',
      groupId,
      userId,
      epoch: row?.epoch,
      lastMsgId: row?.lastMsgId ?? 0,
      mode: 'push',
      shard: this.o.own.ordinal,
    });
    if (before === 0) {
      if (this.o.onPresence) this.o.onPresence(groupId, userId, true);
      else this.broadcast(groupId, { type: 'presence', groupId, userId, status: 'online' }, userId);
    }
  }

  /** Unregisters a closed connection (once). */
  private remove(conn: Conn): void {
    conn.done = true;
    const g = this.groups.get(conn.groupId);
    if (!g?.conns.delete(conn)) return;
    this.count--;
    this.o.metrics.connections.set(this.count);
    const left = (g.users.get(conn.userId) ?? 1) - 1;
    if (left > 0) g.users.set(conn.userId, left);
    else g.users.delete(conn.userId);
    if (g.conns.size === 0) this.groups.delete(conn.groupId);
    if (left === 0 && this.o.onPresence) this.o.onPresence(conn.groupId, conn.userId, false);
    else if (left === 0 && g.conns.size > 0)
      this.broadcast(conn.groupId, {
        type: 'presence',
        groupId: conn.groupId,
        userId: conn.userId,
        status: 'offline',
      });
  }

  /** Stops sending and accepting on a connection, and bounds how long its socket may linger. */
  private finish(conn: Conn): void {
    if (conn.done && conn.ws.readyState === conn.ws.CLOSED) return;
    conn.done = true;
    const ws = conn.ws;
    const timer = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
    timer.unref();
    ws.once('close', () => clearTimeout(timer));
  }

  /** Closes with a code: the close frame follows what is queued; the socket is ended after a grace. */
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
    if (ev.type === 'typing') {
      // Typing is never stored, and goes to the other members only (not the sender's other tabs).
      this.broadcast(
        conn.groupId,
        { type: 'typing', groupId: conn.groupId, userId: conn.userId },
        conn.userId,
      );
      return;
    }
    if (ev.type !== 'message') {
      this.send(conn, { type: 'error', code: 'unknown_type', message: "send 'message' or 'typing'" });
      return;
    }
    const contents = ev.contents;
    const clientMsgId = ev.clientMsgId;
    if (
      typeof contents !== 'string' ||
      contents.trim() === '' ||
      Buffer.byteLength(contents) > limits.maxMessageBytes
    ) {
      this.send(conn, {
        type: 'error',
        code: 'bad_field',
        clientMsgId,
        message: `contents must be 1 to ${limits.maxMessageBytes} bytes of text`,
      });
      return;
    }
    if (typeof clientMsgId !== 'string' || !/^[A-Za-z0-9._:-]{1,128}$/.test(clientMsgId)) {
      this.send(conn, {
        type: 'error',
        code: 'bad_field',
        message: 'clientMsgId must be 1 to 128 of A-Z a-z 0-9 . _ : -',
      });
      return;
    }
    // Membership may have ended since the connection opened.
    if (!this.o.store.isMember(conn.groupId, conn.userId)) {
      this.send(conn, { type: 'error', code: 'forbidden', message: 'you are no longer a member' });
      this.closeConn(conn, CLOSE.policy, 'not a member');
      return;
    }
    this.o.post(conn.groupId, conn.userId, contents, clientMsgId).then(
      (m) =>
        this.send(conn, {
          type: 'ack',
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
          clientMsgId,
          message: err.message,
        }),
    );
  }

  /** Tells a group's connections (except the user's own) that a user's presence changed. */
  announcePresence(groupId: string, userId: string, status: 'online' | 'away' | 'offline'): void {
    this.broadcast(groupId, { type: 'presence', groupId, userId, status }, userId);
  }

  /** Delivers a stored message to every connection of its group. */
  publish(m: Message): void {
    this.broadcast(m.groupId, { type: 'message', ...m });
  }

  /** Sends an event to every open connection of a group, except those of `exceptUser`. */
  private broadcast(groupId: string, event: object, exceptUser?: string): void {
    const g = this.groups.get(groupId);
    if (!g) return;
    const text = JSON.stringify(event);
    for (const c of g.conns) if (c.userId !== exceptUser) this.sendText(c, text);
  }

  private send(conn: Conn, event: object): void {
    this.sendText(conn, JSON.stringify(event));
  }

  private sendText(conn: Conn, text: string): void {
    const ws = conn.ws;
    if (conn.done || ws.readyState !== ws.OPEN) return;
    if (ws.bufferedAmount > this.o.cfg.shard.limits.wsSendQueueBytes) {
      // The client does not keep up: close it rather than buffer without bound. Nothing
      // more is queued; the close frame follows what is queued, and the socket is ended
      // after a grace whether or not the client reads it.
      this.o.metrics.slowConsumers.inc();
      this.closeConn(conn, CLOSE.slowConsumer, 'slow consumer');
      return;
    }
    ws.send(text);
    this.o.metrics.deliveries.inc();
  }

  /** Ends a former member's connections to a group: an `error` event, then close 1008. */
  kick(groupId: string, userId: string): void {
    const g = this.groups.get(groupId);
    if (!g) return;
    for (const conn of [...g.conns]) {
      if (conn.userId !== userId) continue;
      this.send(conn, {
        type: 'error',
        code: 'forbidden',
        message: `you are no longer a member of ${groupId}`,
      });
      this.closeConn(conn, CLOSE.policy, 'not a member');
    }
  }

  /** Closes every connection with 1001 (shutdown); sockets that do not close in time are ended. */
  close(): void {
    this.closing = true;
    for (const g of this.groups.values())
      for (const c of g.conns) this.closeConn(c, CLOSE.goingAway, 'shard shutting down');
  }
}
