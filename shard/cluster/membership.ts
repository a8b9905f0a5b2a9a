/**
 * Joining and leaving groups (docs/architecture.md section 5). A group fills to its `capacity`; past
 * it, a group with `overflow: reject` refuses joins (409), and one with
 * `overflow: shard` places users in sub-conversations `{id}~1`, `{id}~2`, …:
 *
 * - The parent itself is the first conversation and fills to `capacity` (counted by
 *   the group's own member count, so members from before `overflow: shard` count too).
 * - Then the least-populated sub-conversation with room takes the user (ties: the
 *   lowest k; counts from the roster, where an opened ~k that emptied counts 0), and
 *   when every one is full the next k opens.
 * - The roster (user → conversation) lives here, on the parent's shard, so a repeated
 *   join from any device answers the same conversation.
 * - The sub-conversation lives on the shard the shard function names. The placement is
 *   recorded as PENDING in the roster first, then that shard is written (create-if-absent,
 *   then add the member: idempotent internal calls, retried), and the placement is
 *   confirmed only when that succeeded; a failure is 503 with Retry-After. A pending
 *   placement holds its place (it counts against the capacity), and a retried join goes
 *   to the same sub-conversation: when the sub's shard added the member but its answer
 *   was lost, the user never ends up in two sub-conversations, nor a sub over capacity.
 *   A leave removes the member there first (idempotent), then from the roster. When this
 *   shard owns the sub, the store is used directly.
 * - Joins and leaves of one parent run one at a time (a promise chain per parent), so
 *   concurrent joins never overfill a conversation.
 * - Sub-conversations are joined and left only through their parent: both answer 409
 *   naming the parent (the public join route refuses a ~k itself already).
 */
import type { Config } from '../../common/config.js';
import { ApiError } from '../../common/http-answers.js';
import type { Logger } from '../../common/logger.js';
import { parseSubId, subId } from '../../common/protocol.js';
import type { GroupRow, Store } from '../storage/store.js';
import { InternalCallError, type InternalClient } from './internal-client.js';
import type { Ownership } from './ownership.js';
import { addSubMember, ensureSub, removeSubMember, type SubSpec } from './subconversations.js';

/** The largest k an id may carry (common/protocol.ts: up to six digits). */
const MAX_K = 999_999;
/** Joins and leaves waiting for one parent at most; more are refused with 503. */
const MAX_QUEUED_PER_PARENT = 10_000;

export interface MembershipDeps {
  cfg: Config;
  log: Logger;
  store: Store;
  own: Ownership;
  internal: InternalClient;
}

export class Membership {
  private readonly store: Store;
  private readonly own: Ownership;
  private readonly internal: InternalClient;
  private readonly log: Logger;
  private readonly retryAfter: string;
  /** The tail of each parent's chain of joins and leaves, and how many wait on it. */
  private readonly chains = new Map<string, { tail: Promise<unknown>; queued: number }>();

  constructor(deps: MembershipDeps) {
    this.store = deps.store;
    this.own = deps.own;
    this.internal = deps.internal;
    this.log = deps.log;
    this.retryAfter = String(deps.cfg.router.retryAfterSeconds);
  }

  /** Places the user; returns the conversation the user is in (the group or one of its ~k). */
  async join(g: GroupRow, userId: string): Promise<string> {
    this.refuseSub(g, 'join');
    return this.serialized(g.id, () => this.joinNow(g.id, userId));
  }

  /** Removes the user from the group (and from its sub-conversation); false when not in it. */
  async leave(g: GroupRow, userId: string): Promise<boolean> {
    this.refuseSub(g, 'leave');
    return this.serialized(g.id, () => this.leaveNow(g.id, userId));
  }

  private refuseSub(g: GroupRow, what: 'join' | 'leave'): void {
    const parent = g.parent ?? parseSubId(g.id)?.parent;
    if (parent !== undefined) {
      throw new ApiError(
        409,
        'sub_conversation',
        `${what} ${parent} instead: the system places members in its sub-conversation ${g.id}`,
      );
    }
  }

  /** Runs fn after every earlier join/leave of the same parent settled. */
  private serialized<T>(parentId: string, fn: () => Promise<T>): Promise<T> {
    let chain = this.chains.get(parentId);
    if (!chain) {
      chain = { tail: Promise.resolve(), queued: 0 };
      this.chains.set(parentId, chain);
    }
    if (chain.queued >= MAX_QUEUED_PER_PARENT) {
      return Promise.reject(
        new ApiError(503, 'busy', `too many joins waiting for ${parentId}`, {
          'retry-after': this.retryAfter,
        }),
      );
    }
    const c = chain;
    c.queued++;
    const run = c.tail.then(fn);
    c.tail = run.then(
      () => undefined,
      () => undefined,
    );
    const done = () => {
      c.queued--;
      if (c.queued === 0 && this.chains.get(parentId) === c) this.chains.delete(parentId);
    };
    return run.finally(done);
  }

  private unavailable(what: string, err: unknown): ApiError {
    this.log.warn({ err: (err as Error)?.message ?? String(err) }, what);
    return new ApiError(503, 'shard_unavailable', `${what}: ${(err as Error)?.message ?? String(err)}`, {
      'retry-after': this.retryAfter,
    });
  }

  private async joinNow(groupId: string, userId: string): Promise<string> {
    // Re-read inside the chain: counts may have changed while waiting.
    const g = this.store.getGroup(groupId);
    if (!g) throw new ApiError(404, 'not_found', `group ${groupId} does not exist`);
    const placed = this.store.rosterOf(g.id, userId);
    if (placed && !placed.pending) return placed.conversation;
    if (!placed) {
      if (this.store.isMember(g.id, userId)) {
        // A member from before the group overflowed into sub-conversations: record it.
        if (g.overflow === 'shard') this.store.placeInRoster(g.id, userId, g.id);
        return g.id;
      }
      if (g.memberCount < g.capacity) {
        this.store.addMember(g.id, userId);
        if (g.overflow === 'shard') this.store.placeInRoster(g.id, userId, g.id);
        return g.id;
      }
      if (g.overflow !== 'shard') {
        throw new ApiError(409, 'group_full', `${g.id} has reached its capacity of ${g.capacity} members`);
      }
    }
    // A pending placement is finished where it began; a new one is recorded before the
    // sub-conversation's shard is written.
    const target = placed?.conversation ?? this.pickSub(g);
    if (!placed) this.store.placeInRoster(g.id, userId, target, true);
    const ordinal = this.own.ownerOf(target);
    const spec: SubSpec = {
      subject: g.subject,
      owner: g.owner,
      capacity: g.capacity,
      parent: g.id,
      closed: g.closed,
    };
    if (ordinal === this.own.ordinal) {
      ensureSub(this.store, target, spec);
      addSubMember(this.store, target, userId);
    } else {
      try {
        await this.internal.ensureSub(ordinal, target, spec);
        await this.internal.addMember(ordinal, target, userId);
      } catch (err) {
        throw this.unavailable(`cannot place ${userId} in ${target} on shard ${ordinal}`, err);
      }
    }
    this.store.placeInRoster(g.id, userId, target);
    return target;
  }

  /** The least-populated open sub-conversation with room (lowest k on ties), else the next k. */
  private pickSub(g: GroupRow): string {
    const counts = this.store.rosterCounts(g.id);
    let maxK = 0;
    for (const conv of counts.keys()) {
      const sub = parseSubId(conv);
      if (sub && sub.parent === g.id && sub.k > maxK) maxK = sub.k;
    }
    let best: { k: number; n: number } | undefined;
    for (let k = 1; k <= maxK; k++) {
      const n = counts.get(subId(g.id, k)) ?? 0;
      if (n < g.capacity && (best === undefined || n < best.n)) best = { k, n };
    }
    if (best) return subId(g.id, best.k);
    if (maxK >= MAX_K) {
      throw new ApiError(409, 'group_full', `${g.id} cannot open more than ${MAX_K} sub-conversations`);
    }
    return subId(g.id, maxK + 1);
  }

  private async leaveNow(groupId: string, userId: string): Promise<boolean> {
    const g = this.store.getGroup(groupId);
    if (!g) throw new ApiError(404, 'not_found', `group ${groupId} does not exist`);
    const placed = this.store.rosterOf(g.id, userId)?.conversation;
    if (placed === undefined || placed === g.id) {
      const removed = this.store.removeMember(g.id, userId);
      if (placed !== undefined) this.store.removeFromRoster(g.id, userId);
      return removed || placed !== undefined;
    }
    const ordinal = this.own.ownerOf(placed);
    if (ordinal === this.own.ordinal) {
      try {
        removeSubMember(this.store, placed, userId);
      } catch (err) {
        // the sub-conversation is gone: nothing to remove there
        if (!(err instanceof ApiError && err.status === 404)) throw err;
      }
    } else {
      try {
        await this.internal.removeMember(ordinal, placed, userId);
      } catch (err) {
        // 404: the sub-conversation is gone there, so nothing is left to remove
        if (!(err instanceof InternalCallError && err.status === 404))
          throw this.unavailable(`cannot remove ${userId} from ${placed} on shard ${ordinal}`, err);
      }
    }
    this.store.removeFromRoster(g.id, userId);
    return true;
  }
}
