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
import type { WebSocket } from 'ws';
import type { Config } from '../../common/config.js';
import { ApiError } from '../../common/http-answers.js';
import type { Logger } from '../../common/logger.js';
import { isClientId, isGroupId } from '../../common/protocol.js';
import type { Authenticator } from '../api/auth.js';
import type { GroupCalls } from '../cluster/group-calls.js';
import type { Ownership } from '../cluster/ownership.js';
import { PRESENCE_REFRESH_MS, type PresenceStatus } from '../delivery/presence.js';
import type { MessageIntake } from '../messages/intake.js';
import type { ShardMetrics } from '../metrics.js';
import { textFrame } from './gathering.js';
import { SocketHub } from './socket-hub.js';
import { answerPost, ConnState, noRoom, socketRequest } from './ws-conn.js';

/** Groups one inbox connection may follow at most. */
const MAX_FOLLOWED = 10_000;

export interface InboxOptions {
  cfg: Config;
  log: Logger;
  auth: Authenticator;
  own: Ownership;
  metrics: ShardMetrics;
  /** The one entry of a message: forwarded to the group's shard (or appended here when it is this one). */
  intake: Pick<MessageIntake, 'post'>;
  /** Typing and presence at the group's shard. */
  groupCalls: Pick<GroupCalls, 'typing' | 'presence'>;
  /** Group WebSockets and inboxes share the shard's connection limit. */
  otherConnections(): number;
  /** How often reported presence is refreshed (default 30 s). */
  presenceRefreshMs?: number;
}

/** An open inbox WebSocket (one hidden class for all of them: see ConnState). */
export class InboxConn extends ConnState {
  /** Groups this connection follows (for presence). */
  readonly groups = new Set<string>();
  status: 'online' | 'away' = 'online';

  constructor(
    ws: WebSocket,
    socket: Duplex,
    limits: Config['shard']['limits'],
    readonly userId: string,
  ) {
    super(ws, socket, limits);
  }
}
type Conn = InboxConn;

export class InboxHub extends SocketHub<Conn, string> {
  private readonly users = new Map<string, Set<Conn>>();
  /** What was last reported per user and group (absent: offline). */
  private readonly reported = new Map<string, Map<string, 'online' | 'away'>>();
  /** The report in progress per `userId groupId` (reports of one key go in order). */
  private readonly chains = new Map<string, Promise<void>>();
  private readonly refreshTimer: NodeJS.Timeout;

  constructor(private readonly o: InboxOptions) {
    super(o, 'inbox', o.metrics.inboxConnections);
    this.refreshTimer = setInterval(() => this.refresh(), o.presenceRefreshMs ?? PRESENCE_REFRESH_MS);
    this.refreshTimer.unref();
  }

  /** Whether the user has a live inbox connection on this host. */
  isOnline(userId: string): boolean {
    return (this.users.get(userId)?.size ?? 0) > 0;
  }

  /** Whether a request path is an inbox WebSocket. */
  static matches(url: string | undefined): boolean {
    return /^\/users\/[^/?]+\/ws(?:\?|$)/.test(url ?? '');
  }

  /** An upgrade for /users/{id}/ws: ownership (421), the token (401), and only your own inbox (403). */
  protected async admit(req: IncomingMessage): Promise<string> {
    const { id: userId, userId: me } = await socketRequest(req, {
      path: /^\/users\/([^/]+)\/ws$/,
      kind: 'user',
      valid: isClientId,
      own: this.o.own,
      auth: this.o.auth,
      closing: this.closing,
    });
    if (me !== userId) throw new ApiError(403, 'forbidden', 'you may only open your own inbox');
    if (this.connections + this.o.otherConnections() >= this.limits.maxConnections) throw noRoom();
    return userId;
  }

  protected create(ws: WebSocket, socket: Duplex, userId: string): Conn {
    return new InboxConn(ws, socket, this.limits, userId);
  }

  protected added(conn: Conn): void {
    let set = this.users.get(conn.userId);
    if (!set) {
      set = new Set();
      this.users.set(conn.userId, set);
    }
    set.add(conn);
    this.send(conn, { type: 'hello', userId: conn.userId, shard: this.o.own.ordinal });
  }

  protected removed(conn: Conn): boolean {
    const set = this.users.get(conn.userId);
    if (!set?.delete(conn)) return false;
    if (set.size === 0) this.users.delete(conn.userId);
    if (conn.groups.size > 0) this.updatePresence(conn.userId);
    return true;
  }

  protected *all(): Iterable<Conn> {
    for (const set of this.users.values()) yield* set;
  }

  protected keyOf(conn: Conn): string {
    return conn.userId;
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
      .then(() => this.o.groupCalls.presence(groupId, userId, status))
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

  protected received(conn: Conn, ev: Record<string, unknown>): void {
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
      this.o.groupCalls
        .typing(groupId, conn.userId)
        .catch((err: Error & { code?: string }) =>
          this.send(conn, { type: 'error', code: err.code ?? 'unavailable', groupId, message: err.message }),
        );
      return;
    }
    const posted = this.o.intake.post({
      groupId,
      userId: conn.userId,
      contents: ev.contents,
      clientMsgId: ev.clientMsgId,
    });
    void answerPost(posted, ev.clientMsgId, { groupId }, (e) => this.send(conn, e));
  }

  /** Sends an event to every inbox connection of each recipient on this host; returns how many got it. */
  deliver(recipients: readonly string[], event: object): number {
    let frame: Buffer | undefined;
    let n = 0;
    for (const userId of recipients) {
      const set = this.users.get(userId);
      if (!set) continue;
      frame ??= textFrame(JSON.stringify(event));
      for (const c of set) if (this.sendFrame(c, frame)) n++;
    }
    return n;
  }

  /** Closes every inbox with 1001 (shutdown). */
  override close(): void {
    clearInterval(this.refreshTimer);
    super.close();
  }
}
