/**
 * A small in-process stand-in for a shardchat shard, for client SDK tests: node:http
 * plus a `ws` WebSocketServer on 127.0.0.1 (port 0) speaking the protocol of
 * shard/sockets/group-hub.ts (hello, message, typing, presence, ack, error; close codes), and the
 * read routes the SDK uses (GET /groups/{id}/messages?after=|before=&limit=,
 * GET /groups/{id}/presence). Tokens are user ids. The message log is controllable:
 * tests append with or without pushing, push raw events, drop connections, refuse
 * upgrades and restart the history (new epoch).
 *
 * It also plays a user's session host (docs/delivery-protocol.md): the inbox WebSocket
 * `/users/{userId}/ws` (hello, message, tick, typing, presence, ack and error with
 * groupId), fed with the messages of the groups the user `join`ed; its upgrades can be
 * refused separately (`refuseInbox`) to drive the SDK's fallback to group sockets.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import type { Message } from '../../client/types.js';

export interface FakeConn {
  ws: WebSocket;
  groupId: string;
  userId: string;
  /** Every event the client sent on this connection, parsed. */
  received: Record<string, unknown>[];
}

interface FakeGroup {
  epoch: string;
  log: Message[];
}

/** A user's inbox connection (`/users/{userId}/ws`). */
export interface FakeInboxConn {
  ws: WebSocket;
  userId: string;
  received: Record<string, unknown>[];
}

/** Decides what to do with an inbox `message` event; return true when handled. */
export type InboxMessageHook = (
  conn: FakeInboxConn,
  ev: { groupId: string; contents: string; clientMsgId: string },
) => boolean;

/** Decides what to do with a client's `message` event; return true when handled (default skipped). */
export type MessageHook = (conn: FakeConn, ev: { contents: string; clientMsgId: string }) => boolean;

const STATUS_TEXT: Record<number, string> = {
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  503: 'Service Unavailable',
};

export class FakeChatServer {
  readonly conns = new Set<FakeConn>();
  /** Every event received from any client, with its connection's user. */
  readonly received: { userId: string; ev: Record<string, unknown> }[] = [];
  /** Every HTTP request path (with query) answered. */
  readonly requests: string[] = [];
  /** Group WebSocket upgrade requests seen (accepted or not). */
  upgrades = 0;
  /** When set, upgrades are refused with this status. */
  refuseUpgrades: number | undefined;
  /** When true, upgrades and HTTP routes are answered 403 forbidden. */
  forbidden = false;
  onMessage: MessageHook | undefined;
  readonly shardOrdinal = 7;
  // --- the inbox side ---
  readonly inboxes = new Set<FakeInboxConn>();
  /** Every event received on any inbox, with its user. */
  readonly inboxReceived: { userId: string; ev: Record<string, unknown> }[] = [];
  /** follow, unfollow and status events the inboxes sent (presence; not in inboxReceived). */
  readonly inboxPresenceReceived: { userId: string; ev: Record<string, unknown> }[] = [];
  /** Inbox upgrade requests seen (accepted or not). */
  inboxUpgrades = 0;
  /** When set, inbox upgrades are refused with this status (group sockets are not affected). */
  refuseInbox: number | undefined;
  /** When false, stored messages are not pushed to inboxes (group sockets still get them). */
  inboxPush = true;
  onInboxMessage: InboxMessageHook | undefined;
  /** Who is in which group (for inbox delivery and presence). */
  private readonly members = new Map<string, Set<string>>();
  private readonly groups = new Map<string, FakeGroup>();
  private readonly http: http.Server;
  private readonly wss: WebSocketServer;
  private port = 0;

  private constructor(maxPayload: number) {
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload });
    this.http = http.createServer((req, res) => this.onRequest(req, res));
    this.http.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
  }

  /** `maxPayload`: frames larger than this are refused with close 1009, as the shard does. */
  static async start(opts: { maxPayload?: number } = {}): Promise<FakeChatServer> {
    const s = new FakeChatServer(opts.maxPayload ?? 16_384);
    await new Promise<void>((resolve, reject) => {
      s.http.once('error', reject);
      s.http.listen(0, '127.0.0.1', () => resolve());
    });
    s.port = (s.http.address() as AddressInfo).port;
    return s;
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  // --- the log ---

  group(groupId: string): FakeGroup {
    let g = this.groups.get(groupId);
    if (!g) {
      g = { epoch: newEpoch(), log: [] };
      this.groups.set(groupId, g);
    }
    return g;
  }

  /**
   * Stores a message (idempotent by user and clientMsgId, as the shard is); pushes it to
   * the group's connections when new and `push` is true. Without a clientMsgId (null),
   * the message gets one of its own, as every stored message has one.
   */
  append(
    groupId: string,
    userId: string,
    contents: string,
    clientMsgId: string | null = null,
    push = true,
  ): { message: Message; created: boolean } {
    const g = this.group(groupId);
    if (clientMsgId !== null) {
      const old = g.log.find((m) => m.userId === userId && m.clientMsgId === clientMsgId);
      if (old) return { message: old, created: false };
    }
    const prev = g.log.at(-1)?.msgId ?? 0;
    const message: Message = {
      groupId,
      msgId: prev + 1,
      prevMsgId: prev,
      epoch: g.epoch,
      ts: Date.now(),
      userId,
      contents,
      clientMsgId: clientMsgId ?? `fake-${groupId}-${prev + 1}`,
    };
    g.log.push(message);
    if (push) {
      this.broadcast(groupId, { type: 'message', ...message });
      if (this.inboxPush) this.broadcastInbox(groupId, { type: 'message', ...message });
    }
    return { message, created: true };
  }

  /** Makes a user a member of a group: its inbox gets the group's events. */
  join(groupId: string, userId: string): void {
    let m = this.members.get(groupId);
    if (!m) {
      m = new Set();
      this.members.set(groupId, m);
    }
    m.add(userId);
  }

  /** Sends an event to the inboxes of a group's members (except `exceptUser`'s). */
  broadcastInbox(groupId: string, event: object, exceptUser?: string): void {
    const members = this.members.get(groupId);
    if (!members) return;
    const text = JSON.stringify(event);
    for (const c of this.inboxes)
      if (members.has(c.userId) && c.userId !== exceptUser && c.ws.readyState === c.ws.OPEN) c.ws.send(text);
  }

  sendInbox(conn: FakeInboxConn, event: object): void {
    if (conn.ws.readyState === conn.ws.OPEN) conn.ws.send(JSON.stringify(event));
  }

  /** Closes every inbox connection with a code. */
  closeInboxes(code: number, reason = ''): void {
    for (const c of this.inboxes) c.ws.close(code, reason);
  }

  /** Drops every inbox connection without a close frame. */
  terminateInboxes(): void {
    for (const c of this.inboxes) c.ws.terminate();
  }

  /** The group's history begins again: a new epoch and an empty log. */
  resetEpoch(groupId: string): string {
    const g = this.group(groupId);
    g.epoch = newEpoch();
    g.log = [];
    return g.epoch;
  }

  // --- connections ---

  /** Sends an event to every connection of a group (except those of `exceptUser`). */
  broadcast(groupId: string, event: object, exceptUser?: string): void {
    const text = JSON.stringify(event);
    for (const c of this.conns)
      if (c.groupId === groupId && c.userId !== exceptUser && c.ws.readyState === c.ws.OPEN) c.ws.send(text);
  }

  send(conn: FakeConn, event: object): void {
    if (conn.ws.readyState === conn.ws.OPEN) conn.ws.send(JSON.stringify(event));
  }

  /** Closes every connection with a code (1001 shutdown, 1008 policy, ...). */
  closeAll(code: number, reason = ''): void {
    for (const c of this.conns) c.ws.close(code, reason);
  }

  /** Drops every connection without a close frame (the client sees 1006). */
  terminateAll(): void {
    for (const c of this.conns) c.ws.terminate();
  }

  /** Closes everything: connections, then the server. */
  async close(): Promise<void> {
    for (const c of this.conns) c.ws.terminate();
    for (const c of this.inboxes) c.ws.terminate();
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }

  private presenceOf(groupId: string): { userId: string; connections: number }[] {
    const users = new Map<string, number>();
    for (const c of this.conns)
      if (c.groupId === groupId) users.set(c.userId, (users.get(c.userId) ?? 0) + 1);
    const members = this.members.get(groupId);
    for (const c of this.inboxes)
      if (members?.has(c.userId)) users.set(c.userId, (users.get(c.userId) ?? 0) + 1);
    return [...users].map(([userId, connections]) => ({ userId, connections }));
  }

  private isOnline(groupId: string, userId: string): boolean {
    for (const c of this.conns) if (c.groupId === groupId && c.userId === userId) return true;
    return false;
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const url = new URL(req.url ?? '/', 'http://fake');
    const inbox = /^\/users\/([^/]+)\/ws$/.exec(url.pathname);
    if (inbox) {
      this.onInboxUpgrade(req, socket, head, decodeURIComponent(inbox[1] as string), url);
      return;
    }
    this.upgrades++;
    const m = /^\/groups\/([^/]+)\/ws$/.exec(url.pathname);
    const userId = url.searchParams.get('token') ?? '';
    const refusal: [number, string, string] | undefined =
      !m || !userId
        ? [404, 'not_found', 'no WebSocket here']
        : this.forbidden
          ? [403, 'forbidden', 'only members may subscribe']
          : this.refuseUpgrades !== undefined
            ? [this.refuseUpgrades, 'unavailable', 'try again']
            : undefined;
    if (refusal || !m) {
      const [status, code, message] = refusal ?? [404, 'not_found', 'no WebSocket here'];
      refuse(socket, status, code, message);
      return;
    }
    const groupId = decodeURIComponent(m[1] as string);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const wasOnline = this.isOnline(groupId, userId);
      const conn: FakeConn = { ws, groupId, userId, received: [] };
      this.conns.add(conn);
      // ws closes with 1009 itself on an oversized frame, and reports it here.
      ws.on('error', () => {});
      ws.on('message', (data) => this.onClientEvent(conn, data.toString()));
      ws.on('close', () => {
        this.conns.delete(conn);
        if (!this.isOnline(groupId, userId))
          this.broadcast(groupId, { type: 'presence', groupId, userId, status: 'offline' });
      });
      const g = this.group(groupId);
      this.send(conn, {
        type: 'hello',
        groupId,
        userId,
        epoch: g.epoch,
        lastMsgId: g.log.at(-1)?.msgId ?? 0,
        mode: 'push',
        shard: this.shardOrdinal,
      });
      if (!wasOnline)
        this.broadcast(groupId, { type: 'presence', groupId, userId, status: 'online' }, userId);
    });
  }

  private onInboxUpgrade(
    req: http.IncomingMessage,
    socket: Duplex,
    head: Buffer,
    userId: string,
    url: URL,
  ): void {
    this.inboxUpgrades++;
    const token = url.searchParams.get('token') ?? '';
    const refusal: [number, string, string] | undefined = !token
      ? [401, 'unauthorized', 'a token is required']
      : this.forbidden || token !== userId
        ? [403, 'forbidden', 'not your inbox']
        : this.refuseInbox !== undefined
          ? [this.refuseInbox, 'unavailable', 'try again']
          : undefined;
    if (refusal) {
      refuse(socket, ...refusal);
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const conn: FakeInboxConn = { ws, userId, received: [] };
      this.inboxes.add(conn);
      ws.on('error', () => {});
      ws.on('message', (data) => this.onInboxEvent(conn, data.toString()));
      ws.on('close', () => this.inboxes.delete(conn));
      this.sendInbox(conn, { type: 'hello', userId, shard: this.shardOrdinal });
    });
  }

  private onInboxEvent(conn: FakeInboxConn, text: string): void {
    let ev: Record<string, unknown>;
    try {
      ev = JSON.parse(text) as Record<string, unknown>;
    } catch {
      this.sendInbox(conn, { type: 'error', code: 'malformed_json', message: 'events are JSON objects' });
      return;
    }
    // Presence reports (follow, unfollow, status): recorded apart, nothing else.
    if (ev.type === 'follow' || ev.type === 'unfollow' || ev.type === 'status') {
      this.inboxPresenceReceived.push({ userId: conn.userId, ev });
      return;
    }
    conn.received.push(ev);
    this.inboxReceived.push({ userId: conn.userId, ev });
    const groupId = ev.groupId;
    if (typeof groupId !== 'string') {
      this.sendInbox(conn, { type: 'error', code: 'bad_field', message: 'groupId is required' });
      return;
    }
    if (ev.type === 'typing') {
      this.broadcast(groupId, { type: 'typing', groupId, userId: conn.userId }, conn.userId);
      this.broadcastInbox(groupId, { type: 'typing', groupId, userId: conn.userId }, conn.userId);
      return;
    }
    const contents = ev.contents;
    const clientMsgId = ev.clientMsgId;
    if (ev.type !== 'message' || typeof contents !== 'string' || typeof clientMsgId !== 'string') {
      this.sendInbox(conn, { type: 'error', code: 'bad_field', groupId, clientMsgId, message: 'bad event' });
      return;
    }
    if (this.onInboxMessage?.(conn, { groupId, contents, clientMsgId })) return;
    this.storeAndAckInbox(conn, groupId, contents, clientMsgId);
  }

  /** What the session host does with an inbox message: store once (at the group), ack with groupId. */
  storeAndAckInbox(conn: FakeInboxConn, groupId: string, contents: string, clientMsgId: string): Message {
    const { message: m } = this.append(groupId, conn.userId, contents, clientMsgId);
    this.sendInbox(conn, {
      type: 'ack',
      groupId,
      clientMsgId,
      msgId: m.msgId,
      prevMsgId: m.prevMsgId,
      epoch: m.epoch,
      ts: m.ts,
    });
    return m;
  }

  private onClientEvent(conn: FakeConn, text: string): void {
    let ev: Record<string, unknown>;
    try {
      ev = JSON.parse(text) as Record<string, unknown>;
    } catch {
      this.send(conn, { type: 'error', code: 'malformed_json', message: 'events are JSON objects' });
      return;
    }
    conn.received.push(ev);
    this.received.push({ userId: conn.userId, ev });
    if (ev.type === 'typing') {
      const typing = { type: 'typing', groupId: conn.groupId, userId: conn.userId };
      this.broadcast(conn.groupId, typing, conn.userId);
      this.broadcastInbox(conn.groupId, typing, conn.userId);
      return;
    }
    if (ev.type !== 'message') {
      this.send(conn, { type: 'error', code: 'unknown_type', message: "send 'message' or 'typing'" });
      return;
    }
    const contents = ev.contents;
    const clientMsgId = ev.clientMsgId;
    if (typeof contents !== 'string' || contents === '' || typeof clientMsgId !== 'string') {
      this.send(conn, { type: 'error', code: 'bad_field', clientMsgId, message: 'bad message' });
      return;
    }
    if (this.onMessage?.(conn, { contents, clientMsgId })) return;
    this.storeAndAck(conn, contents, clientMsgId);
  }

  /** What the shard does with a message event: store once, publish when new, ack the sender. */
  storeAndAck(conn: FakeConn, contents: string, clientMsgId: string): Message {
    const { message: m } = this.append(conn.groupId, conn.userId, contents, clientMsgId);
    this.send(conn, {
      type: 'ack',
      clientMsgId,
      msgId: m.msgId,
      prevMsgId: m.prevMsgId,
      epoch: m.epoch,
      ts: m.ts,
    });
    return m;
  }

  /** Reads of these groups' messages wait until the group is taken out again. */
  readonly holdReads = new Set<string>();
  /**
   * Presence reads of these groups are answered with who was present when the request
   * arrived, but only once the group is taken out again (a snapshot that arrives late).
   */
  readonly holdPresence = new Set<string>();

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const presence = /^\/groups\/([^/]+)\/presence/.exec(req.url ?? '');
    if (presence && this.holdPresence.has(decodeURIComponent(presence[1] as string))) {
      const groupId = decodeURIComponent(presence[1] as string);
      this.requests.push(req.url ?? '');
      const body = JSON.stringify({ presence: this.presenceOf(groupId) });
      const send = () => {
        if (this.holdPresence.has(groupId)) {
          setTimeout(send, 10);
          return;
        }
        res.writeHead(200, {
          'content-type': 'application/json',
          'x-shardchat-shard': `${this.shardOrdinal}/8`,
        });
        res.end(body);
      };
      send();
      return;
    }
    const held = /^\/groups\/([^/]+)\/messages/.exec(req.url ?? '');
    if (held && this.holdReads.has(decodeURIComponent(held[1] as string))) {
      setTimeout(() => this.onRequest(req, res), 10);
      return;
    }
    this.requests.push(req.url ?? '');
    const [status, body] = this.answer(req.method ?? 'GET', new URL(req.url ?? '/', 'http://fake'));
    res.writeHead(status, {
      'content-type': 'application/json',
      'x-shardchat-shard': `${this.shardOrdinal}/8`,
    });
    res.end(JSON.stringify(body));
  }

  private answer(method: string, url: URL): [number, unknown] {
    if (this.forbidden)
      return [403, { error: { code: 'forbidden', message: 'only members may read this group' } }];
    const user = /^\/users\/([^/]+)$/.exec(url.pathname);
    if (method === 'GET' && user) return [200, { userId: decodeURIComponent(user[1] as string), name: 'x' }];
    const m = /^\/groups\/([^/]+)\/(messages|presence)$/.exec(url.pathname);
    if (method !== 'GET' || !m) return [404, { error: { code: 'not_found', message: 'no route' } }];
    const groupId = decodeURIComponent(m[1] as string);
    if (m[2] === 'presence') return [200, { presence: this.presenceOf(groupId) }];
    const log = this.group(groupId).log;
    const limit = Number(url.searchParams.get('limit') ?? 50);
    const before = url.searchParams.get('before');
    if (before !== null) {
      const older = log.filter((x) => x.msgId < Number(before));
      return [200, { messages: older.slice(Math.max(0, older.length - limit)) }];
    }
    const after = Number(url.searchParams.get('after') ?? 0);
    return [200, { messages: log.filter((x) => x.msgId > after).slice(0, limit) }];
  }
}

function refuse(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

function newEpoch(): string {
  return randomBytes(8).toString('hex');
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `fn` until it returns true (bounded, generously: the machine may be shared); throws with `what` otherwise. */
export async function until(fn: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export { sleep };
