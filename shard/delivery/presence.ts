/**
 * Presence across shards (docs/delivery-protocol.md section 6), on the group's shard.
 * Two sources say who is present in a group: the group's own WebSockets (GroupHub,
 * online while connected) and the members' session hosts, which report users present
 * through their inbox (`POST /internal/groups/{g}/presence {userId, status, host}`,
 * refreshed every 30 s; an entry expires 90 s after its last report). A user's
 * effective status counts both: online when either says online, away when only the
 * inbox says away, offline otherwise. Every change of it is announced (to the group's
 * WebSockets and, through the fan-out, to the members' session hosts).
 */

export type PresenceStatus = 'online' | 'away' | 'offline';

/** How long a reported status lives without a refresh. */
export const PRESENCE_TTL_MS = 90_000;
/** How often a session host refreshes what it reported. */
export const PRESENCE_REFRESH_MS = 30_000;
/** Remote entries per group at most (a report past it is ignored). */
const MAX_PER_GROUP = 100_000;

interface Remote {
  status: 'online' | 'away';
  host: number;
  expiresAt: number;
}

export interface PresenceEntry {
  userId: string;
  /** The user's group WebSocket connections (0: present through the inbox only). */
  connections: number;
  status: 'online' | 'away';
}

export interface GroupPresenceOptions {
  /** Group WebSocket users of a group, with their connections. */
  local(groupId: string): { userId: string; connections: number }[];
  /** Whether the user has a group WebSocket to the group. */
  isConnected(groupId: string, userId: string): boolean;
  /** A user's effective status in a group changed. */
  changed(groupId: string, userId: string, status: PresenceStatus): void;
  ttlMs?: number;
  sweepMs?: number;
  now?: () => number;
}

export class GroupPresence {
  private readonly remote = new Map<string, Map<string, Remote>>();
  private readonly timer: NodeJS.Timeout;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(private readonly o: GroupPresenceOptions) {
    this.ttlMs = o.ttlMs ?? PRESENCE_TTL_MS;
    this.now = o.now ?? Date.now;
    this.timer = setInterval(() => this.sweep(), o.sweepMs ?? 5000);
    this.timer.unref();
  }

  /** The effective status of a user in a group. */
  statusOf(groupId: string, userId: string): PresenceStatus {
    if (this.o.isConnected(groupId, userId)) return 'online';
    const r = this.remote.get(groupId)?.get(userId);
    if (!r || r.expiresAt <= this.now()) return 'offline';
    return r.status;
  }

  /** A session host's report (membership already checked). */
  report(groupId: string, userId: string, status: PresenceStatus, host: number): void {
    const before = this.statusOf(groupId, userId);
    let g = this.remote.get(groupId);
    if (status === 'offline') {
      const r = g?.get(userId);
      // An offline from another host than the entry's is stale (the user moved): ignored.
      if (r && r.host === host) {
        g?.delete(userId);
        if (g?.size === 0) this.remote.delete(groupId);
      }
    } else {
      if (!g) {
        g = new Map();
        this.remote.set(groupId, g);
      }
      if (g.size >= MAX_PER_GROUP && !g.has(userId)) return;
      g.set(userId, { status, host, expiresAt: this.now() + this.ttlMs });
    }
    this.announce(groupId, userId, before);
  }

  /** A group WebSocket user connected or disconnected (call after the hub's own bookkeeping). */
  localChanged(groupId: string, userId: string, connected: boolean): void {
    // Before the change the user was online through the socket (or not at all).
    const before: PresenceStatus = connected ? this.remoteStatus(groupId, userId) : 'online';
    this.announce(groupId, userId, before);
  }

  /** A member left: whatever the host reported of them in this group goes. */
  removed(groupId: string, userId: string): void {
    const g = this.remote.get(groupId);
    if (!g?.has(userId)) return;
    const before = this.statusOf(groupId, userId);
    g.delete(userId);
    if (g.size === 0) this.remote.delete(groupId);
    this.announce(groupId, userId, before);
  }

  /** GET /groups/{g}/presence: group WebSocket users and users present through an inbox. */
  list(groupId: string): PresenceEntry[] {
    const out = new Map<string, PresenceEntry>();
    for (const { userId, connections } of this.o.local(groupId))
      out.set(userId, { userId, connections, status: 'online' });
    const now = this.now();
    for (const [userId, r] of this.remote.get(groupId) ?? []) {
      if (r.expiresAt <= now || out.has(userId)) continue;
      out.set(userId, { userId, connections: 0, status: r.status });
    }
    return [...out.values()];
  }

  private remoteStatus(groupId: string, userId: string): PresenceStatus {
    const r = this.remote.get(groupId)?.get(userId);
    return !r || r.expiresAt <= this.now() ? 'offline' : r.status;
  }

  private announce(groupId: string, userId: string, before: PresenceStatus): void {
    const after = this.statusOf(groupId, userId);
    if (after !== before) this.o.changed(groupId, userId, after);
  }

  /** Drops entries not refreshed in time (their users go offline unless connected here). */
  sweep(): void {
    const now = this.now();
    for (const [groupId, g] of this.remote) {
      for (const [userId, r] of g) {
        if (r.expiresAt > now) continue;
        g.delete(userId);
        if (!this.o.isConnected(groupId, userId)) this.o.changed(groupId, userId, 'offline');
      }
      if (g.size === 0) this.remote.delete(groupId);
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
