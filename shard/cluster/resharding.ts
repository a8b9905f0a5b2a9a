/**
 * This shard's part in a migration of the shard map (docs/architecture.md section 7).
 * The coordinator (`shardchat reshard`, cli/reshard/) drives; each shard:
 *
 * - keeps the map it accepted in its database and serves by it (a newer version only,
 *   and a source switches only from a fence of the same migration);
 * - as a source, lists its leaving keys, exports them (a group's row, members and
 *   roster, its outbox of membership changes, with its messages in pages; a user's
 *   profile and groups), and tells which of them
 *   changed since a generation, so the coordinator copies again only those;
 * - as a target, imports what it is sent, only for keys the migration gives it;
 * - after the switch, closes the WebSockets of keys it no longer owns once with 4012,
 *   and on `drop` deletes what it no longer owns (never while a migration copies).
 *
 * One coordinator at a time: the lease of a holder is kept by every shard.
 */
import { EventEmitter } from 'node:events';
import { ApiError } from '../../common/http-answers.js';
import type { Logger } from '../../common/logger.js';
import { isValidMap, type ShardMap, sameLayout } from '../../common/placement.js';
import type { Message } from '../../common/protocol.js';
import type { GroupSnapshot, Store, UserSnapshot } from '../storage/store.js';
import type { Ownership } from './ownership.js';

export interface ReshardingEvents {
  /** Keys imported (groups, users) and messages. */
  imported: [keys: number, messages: number];
  /** Keys exported and messages. */
  exported: [keys: number, messages: number];
  /** Keys deleted after they moved away. */
  dropped: [keys: number];
}

export interface ExportRequest {
  groups: { id: string; after: number; snapshot: boolean }[];
  users: string[];
  /** Messages per group at most in this answer. */
  limit: number;
  /** Messages in all at most in this answer. */
  budget: number;
}

export interface ExportedGroup {
  id: string;
  /** Absent when not asked for, null when the group is not stored here. */
  snapshot?: GroupSnapshot | null;
  messages: Message[];
  /** More messages follow (ask again after the last one). */
  more: boolean;
}

export interface ImportRequest {
  groups: { snapshot?: GroupSnapshot; id: string; messages: Message[] }[];
  users: UserSnapshot[];
}

/** Keys looked at per turn of the event loop when deleting what moved away. */
const DROP_BATCH = 20;

interface Lease {
  holder: string;
  expiresAt: number;
}

export class Resharding extends EventEmitter<ReshardingEvents> {
  /** Bumped by every change of a leaving key. */
  private generation = 1;
  /** Leaving keys changed, with the generation of their last change. */
  private readonly dirty = new Map<string, number>();
  /** Changes before this generation are not known (the process started mid-migration). */
  private readonly knownSince: number;
  private lease: Lease | undefined;

  constructor(
    private readonly store: Store,
    private readonly own: Ownership,
    private readonly log: Logger,
    /** Closes the live WebSockets of keys this shard no longer owns (4012). */
    private readonly closeMoved: () => number,
  ) {
    super();
    // Started during a migration: what changed before is unknown, so every leaving key
    // counts as changed (the coordinator copies them all again).
    this.knownSince = own.map.migration ? this.generation + 1 : 0;
    if (this.knownSince > 0) this.generation++;
    store.on('changed', (key) => {
      if (this.own.leaving(key)) this.dirty.set(key, ++this.generation);
    });
  }

  state(): object {
    return {
      shard: this.own.ordinal,
      map: this.own.map,
      generation: this.generation,
      dirty: this.dirty.size,
      heldWrites: this.own.held,
      lease: this.lease && this.lease.expiresAt > Date.now() ? this.lease : null,
    };
  }

  // --- the lease: one coordinator at a time ---

  /**
   * Takes or renews the lease of `holder`; refused while another holder's lease runs,
   * unless the caller names that holder in `takeOver` (it knows it is gone).
   */
  takeLease(holder: string, ttlMs: number, takeOver?: string): object {
    const now = Date.now();
    const l = this.lease;
    if (l && l.holder !== holder && l.expiresAt > now && takeOver !== l.holder)
      throw new ApiError(
        409,
        'lease_held',
        `another shardchat reshard (${l.holder}) is running; its lease ends in ${Math.ceil((l.expiresAt - now) / 1000)} s unless it renews it`,
        {},
        { holder: l.holder, expiresInMs: l.expiresAt - now },
      );
    this.lease = { holder, expiresAt: now + ttlMs };
    return this.lease;
  }

  releaseLease(holder: string): void {
    if (this.lease?.holder === holder) this.lease = undefined;
  }

  // --- the map ---

  /**
   * Accepts a map from the coordinator: the same one again (idempotent), or a newer
   * one. A fence completes once the writes admitted before it are done; a switch closes
   * the WebSockets of keys that left.
   */
  async applyMap(next: unknown): Promise<ShardMap> {
    if (!isValidMap(next)) throw new ApiError(400, 'bad_map', 'not a shard map');
    const cur = this.own.map;
    if (next.version < cur.version)
      throw new ApiError(409, 'stale_map', `this shard serves map version ${cur.version}`, {}, { map: cur });
    if (next.version === cur.version) {
      if (JSON.stringify(next) !== JSON.stringify(cur))
        throw new ApiError(409, 'map_conflict', `map version ${cur.version} differs here`, {}, { map: cur });
    } else {
      this.checkTransition(cur, next);
      this.store.writeMap(next);
      this.own.adopt(next);
      this.log.info(
        {
          version: next.version,
          shards: next.shards,
          assignment: next.assignment,
          migration: next.migration,
        },
        'shard map accepted',
      );
    }
    if (next.migration?.state === 'fenced') {
      await this.own.drained();
      await this.store.settled();
    }
    if (next.migration?.state === 'switched' || !next.migration) {
      const closed = this.closeMoved();
      if (closed > 0) this.log.info({ closed }, 'WebSockets of moved keys closed (4012)');
    }
    return this.own.map;
  }

  /** A source switches only from the fence of the same migration: its final tail was copied. */
  private checkTransition(cur: ShardMap, next: ShardMap): void {
    const n = next.migration;
    const c = cur.migration;
    if (n?.state !== 'switched' || this.own.ordinal >= n.from.shards) return;
    if (c?.state === 'fenced' && sameLayout(c.to, n.to) && sameLayout(c.from, n.from)) return;
    if (c?.state === 'switched' && sameLayout(c.to, n.to)) return;
    throw new ApiError(
      409,
      'not_fenced',
      `shard ${this.own.ordinal} is a source of this migration and has not been fenced: it cannot switch`,
      {},
      { map: cur },
    );
  }

  // --- as a source ---

  /** Keys leaving this shard, in id order, after a cursor (`g:<id>` then `u:<id>`). */
  leavingKeys(cursor: string, limit: number): { groups: string[]; users: string[]; next: string | null } {
    const groups: string[] = [];
    const users: string[] = [];
    let [kind, after] = cursor === '' ? ['g', ''] : [cursor.slice(0, 1), cursor.slice(2)];
    while (groups.length + users.length < limit) {
      const ids = kind === 'g' ? this.store.groupIds(after, 500) : this.store.userIds(after, 500);
      for (const id of ids) {
        after = id;
        if (this.own.leaving(id)) (kind === 'g' ? groups : users).push(id);
        if (groups.length + users.length >= limit) return { groups, users, next: `${kind}:${after}` };
      }
      if (ids.length < 500) {
        if (kind === 'u') return { groups, users, next: null };
        kind = 'u';
        after = '';
      }
    }
    return { groups, users, next: `${kind}:${after}` };
  }

  /**
   * The leaving keys changed since `since` (complete: false when this process started
   * later and cannot tell); with `since` null, none: the generation now.
   */
  changedSince(since: number | null): { generation: number; keys: string[]; complete: boolean } {
    if (since === null) return { generation: this.generation, keys: [], complete: true };
    const keys: string[] = [];
    for (const [k, g] of this.dirty) if (g > since) keys.push(k);
    return { generation: this.generation, keys, complete: since >= this.knownSince };
  }

  /**
   * Snapshots and message pages: `limit` messages per group at most, and `budget` in
   * all (so that one call never blocks this shard long); groups past the budget answer
   * no messages and `more`.
   */
  exportKeys(req: ExportRequest): { groups: ExportedGroup[]; users: (UserSnapshot | null)[] } {
    let messages = 0;
    const groups = req.groups.map((g) => {
      this.own.check(g.id);
      const room = Math.min(req.limit, req.budget - messages);
      const page = room > 0 ? this.store.messagesAfter(g.id, g.after, room + 1) : [];
      const more = room <= 0 || page.length > room;
      if (page.length > room) page.pop();
      messages += page.length;
      const out: ExportedGroup = { id: g.id, messages: page, more };
      if (g.snapshot) out.snapshot = this.store.exportGroup(g.id) ?? null;
      return out;
    });
    const users = req.users.map((id) => {
      this.own.check(id);
      return this.store.exportUser(id) ?? null;
    });
    this.emit('exported', groups.length + users.length, messages);
    return { groups, users };
  }

  // --- as a target ---

  /** Imports keys the running migration gives to this shard; answers each group's last stored msgId. */
  importKeys(req: ImportRequest): { groups: { id: string; lastStored: number }[]; users: number } {
    const m = this.own.map.migration;
    if (!m || m.state === 'switched')
      throw new ApiError(409, 'no_migration', 'imports are taken only while a migration copies');
    const mine = (id: string) => {
      const mv = this.own.placement.move(id);
      if (mv?.to !== this.own.ordinal || mv.from === this.own.ordinal)
        throw new ApiError(409, 'not_moving_here', `${id} does not move to shard ${this.own.ordinal}`);
    };
    let messages = 0;
    const groups = req.groups.map((g) => {
      mine(g.id);
      if (g.snapshot) this.store.importGroup(g.snapshot);
      messages += this.store.importMessages(g.id, g.messages);
      return { id: g.id, lastStored: this.store.lastStoredMsgId(g.id) };
    });
    for (const u of req.users) {
      mine(u.id);
      this.store.importUser(u);
    }
    this.emit('imported', groups.length + req.users.length, messages);
    return { groups, users: req.users.length };
  }

  // --- after the switch (or an abort) ---

  /**
   * Deletes every group and user this shard does not own under its map, a few at a
   * time, letting other requests run in between (keys that stay never pause).
   */
  async dropForeign(): Promise<{ groups: number; users: number }> {
    const m = this.own.map.migration;
    if (m && m.state !== 'switched')
      throw new ApiError(409, 'copying', 'a migration is copying: nothing is deleted until it switched');
    let groups = 0;
    let users = 0;
    for (const kind of ['g', 'u'] as const) {
      for (let after = ''; ; ) {
        const ids =
          kind === 'g' ? this.store.groupIds(after, DROP_BATCH) : this.store.userIds(after, DROP_BATCH);
        for (const id of ids) {
          if (this.own.owns(id)) continue;
          if (kind === 'g' ? this.store.deleteGroup(id) : this.store.deleteUser(id)) {
            if (kind === 'g') groups++;
            else users++;
          }
        }
        if (ids.length < DROP_BATCH) break;
        after = ids[ids.length - 1] as string;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
    this.dirty.clear();
    if (groups + users > 0) this.log.info({ groups, users }, 'keys that moved away deleted');
    this.emit('dropped', groups + users);
    return { groups, users };
  }
}
