/**
 * Group WebSockets (`GET /groups/{id}/ws`, docs/architecture.md section 4): `hello {epoch, lastMsgId,
 * mode}` on connect, then `message`, `typing`, `presence` and `error` events (in pull
 * mode `tick` instead of `message`, docs/delivery-protocol.md section 7); clients
 * send `message` and `typing`. Each connection has a bounded send queue (a consumer
 * that falls behind is closed with 4008, never buffered without bound) and a message
 * rate limit.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Config } from '../../common/config.js';
import type { Logger } from '../../common/logger.js';
import { type DeliveryMode, isGroupId, type Message } from '../../common/protocol.js';
import { memberGroup } from '../access.js';
import type { Authenticator } from '../api/auth.js';
import type { Ownership } from '../cluster/ownership.js';
import type { Tick } from '../delivery/modes.js';
import type { MessageIntake } from '../messages/intake.js';
import type { ShardMetrics } from '../metrics.js';
import type { Store } from '../storage/store.js';
import { textFrame } from './gathering.js';
import { SocketHub } from './socket-hub.js';
import { answerPost, CLOSE, ConnState, closeConn, noRoom, socketRequest } from './ws-conn.js';

export interface HubOptions {
  cfg: Config;
  log: Logger;
  store: Store;
  auth: Authenticator;
  own: Ownership;
  metrics: ShardMetrics;
  /** The one entry of a message (what a client sends goes there, as POST …/messages does). */
  intake: Pick<MessageIntake, 'post'>;
  /** The group's delivery mode now (hello). */
  modeOf(groupId: string): DeliveryMode;
}

export type GroupHubEvents = {
  /** A member typed (their typing goes to every other member: `typing` here, and the session hosts). */
  typing: [groupId: string, userId: string];
  /**
   * A user's first connection to a group opened (true) or their last closed (false); the
   * hub announces no presence itself (delivery/presence.ts does, through
   * `announcePresence`, counting users present through their inbox as well).
   */
  presence: [groupId: string, userId: string, connected: boolean];
};

/** An open group WebSocket (one hidden class for all of them: see ConnState). */
export class GroupConn extends ConnState {
  constructor(
    ws: WebSocket,
    socket: Duplex,
    limits: Config['shard']['limits'],
    readonly groupId: string,
    readonly userId: string,
  ) {
    super(ws, socket, limits);
  }
}
type Conn = GroupConn;

/** The connections of one group, and how many each connected user has. */
interface GroupConns {
  conns: Set<Conn>;
  users: Map<string, number>;
}

type Admitted = { groupId: string; userId: string };

export class GroupHub extends SocketHub<Conn, Admitted, GroupHubEvents> {
  private readonly groups = new Map<string, GroupConns>();

  constructor(private readonly o: HubOptions) {
    super(o, 'group', o.metrics.connections);
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

  /** An upgrade for /groups/{id}/ws: ownership (421), the token (401), the group (404) and membership (403). */
  protected async admit(req: IncomingMessage): Promise<Admitted> {
    const { id: groupId, userId } = await socketRequest(req, {
      path: /^\/groups\/([^/]+)\/ws$/,
      kind: 'group',
      valid: isGroupId,
      own: this.o.own,
      auth: this.o.auth,
      closing: this.closing,
    });
    memberGroup(this.o.store, groupId, userId);
    if (this.connections >= this.limits.maxConnections) throw noRoom();
    return { groupId, userId };
  }

  protected create(ws: WebSocket, socket: Duplex, a: Admitted): Conn {
    return new GroupConn(ws, socket, this.limits, a.groupId, a.userId);
  }

  protected added(conn: Conn): void {
    const { groupId, userId } = conn;
    let g = this.groups.get(groupId);
    if (!g) {
      g = { conns: new Set(), users: new Map() };
      this.groups.set(groupId, g);
    }
    const before = g.users.get(userId) ?? 0;
    g.conns.add(conn);
    g.users.set(userId, before + 1);
    const row = this.o.store.getGroup(groupId);
    this.send(conn, {
      type: 'hello',
      groupId,
      userId,
      epoch: row?.epoch,
      lastMsgId: row?.lastMsgId ?? 0,
      mode: this.o.modeOf(groupId),
      shard: this.o.own.ordinal,
    });
    if (before === 0) this.emit('presence', groupId, userId, true);
  }

  protected removed(conn: Conn): boolean {
    const g = this.groups.get(conn.groupId);
    if (!g?.conns.delete(conn)) return false;
    const left = (g.users.get(conn.userId) ?? 1) - 1;
    if (left > 0) g.users.set(conn.userId, left);
    else g.users.delete(conn.userId);
    if (g.conns.size === 0) this.groups.delete(conn.groupId);
    if (left === 0) this.emit('presence', conn.groupId, conn.userId, false);
    return true;
  }

  protected *all(): Iterable<Conn> {
    for (const g of this.groups.values()) yield* g.conns;
  }

  protected keyOf(conn: Conn): string {
    return conn.groupId;
  }

  protected received(conn: Conn, ev: Record<string, unknown>): void {
    if (ev.type === 'typing') {
      this.emit('typing', conn.groupId, conn.userId);
      return;
    }
    if (ev.type !== 'message') {
      this.send(conn, { type: 'error', code: 'unknown_type', message: "send 'message' or 'typing'" });
      return;
    }
    const posted = this.o.intake.post({
      groupId: conn.groupId,
      userId: conn.userId,
      contents: ev.contents,
      clientMsgId: ev.clientMsgId,
    });
    void answerPost(posted, ev.clientMsgId, {}, (e) => this.send(conn, e)).then((err) => {
      // Membership may have ended since the connection opened.
      if (err?.status === 403) closeConn(conn, CLOSE.policy, 'not a member');
    });
  }

  /** Typing is never stored, and goes to the other members only (not the sender's other tabs). */
  typing(groupId: string, userId: string): void {
    this.broadcast(groupId, { type: 'typing', groupId, userId }, userId);
  }

  /** Tells a group's connections (except the user's own) that a user's presence changed. */
  announcePresence(groupId: string, userId: string, status: 'online' | 'away' | 'offline'): void {
    this.broadcast(groupId, { type: 'presence', groupId, userId, status }, userId);
  }

  /** Delivers a stored message to every connection of its group. */
  publish(m: Message): void {
    this.broadcast(m.groupId, { type: 'message', ...m });
  }

  /** Pull mode (or a switch of mode): the group's head, for the clients to read what is new. */
  tick(t: Tick): void {
    this.broadcast(t.groupId, { type: 'tick', ...t });
  }

  /** Sends an event to every open connection of a group, except those of `exceptUser`. */
  private broadcast(groupId: string, event: object, exceptUser?: string): void {
    const g = this.groups.get(groupId);
    if (!g) return;
    const frame = textFrame(JSON.stringify(event));
    for (const c of g.conns) if (c.userId !== exceptUser) this.sendFrame(c, frame);
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
      closeConn(conn, CLOSE.policy, 'not a member');
    }
  }
}
