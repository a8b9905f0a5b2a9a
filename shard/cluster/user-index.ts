/**
 * The groups of each user (docs/architecture.md section 4): a group's shard tells the
 * user's shard every join and leave of its members, so that `GET /users/{u}/groups`
 * lists them all wherever they live.
 *
 * - A join or leave queues a change in the same transaction as the membership (the
 *   outbox, shard/storage/user-index-sql.ts): a change is never lost, even when the
 *   user's shard is down or this process dies before it is sent.
 * - UserIndexSync sends the queue in batches per user's shard, one pass at a time, and
 *   dequeues what was written; a failure waits a backoff and the pass starts again. Only
 *   the latest change of a user and group is kept, and writing it twice is harmless.
 * - A change is sent as a write of its group (admitted: held while the group is fenced,
 *   and awaited by the fence), so no change of a group that moved arrives after its new
 *   shard's newer one. The outbox moves with the group (its snapshot carries it).
 * - On the user's shard, `applyChanges` admits the users' keys (held while they are
 *   fenced; 421 for one it does not own) and records the changes in one transaction.
 */
import { backoffDelay } from '../../common/backoff.js';
import { ApiError } from '../../common/http-answers.js';
import type { Logger } from '../../common/logger.js';
import type { MembershipChange, QueuedChange, Store } from '../storage/store.js';
import type { InternalClient } from './internal-client.js';
import type { Ownership, Release } from './ownership.js';

/** Changes read from the outbox per pass at most. */
const PASS_SIZE = 500;
/** Changes in one call to a user's shard at most (the route's limit too). */
export const MAX_CHANGES_PER_CALL = 500;

export interface UserIndexSyncDeps {
  store: Store;
  own: Ownership;
  internal: InternalClient;
  log: Logger;
  retry: { minMs: number; maxMs: number };
}

/** Records membership changes on this shard as the users' shard (see the header). */
export async function applyChanges(
  store: Store,
  own: Ownership,
  changes: readonly MembershipChange[],
): Promise<void> {
  const releases: Release[] = [];
  try {
    for (const userId of new Set(changes.map((c) => c.userId))) releases.push(await own.admit(userId));
    store.applyMembershipChanges(changes);
  } finally {
    for (const r of releases) r();
  }
}

export class UserIndexSync {
  private running = false;
  private again = false;
  private stopped = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly d: UserIndexSyncDeps) {}

  /** Sends what is queued now (left by an earlier process too), and again whenever more is. */
  start(): void {
    this.d.store.on('index-queued', () => this.kick());
    this.kick();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Starts a pass, or asks the running one for another. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) return; // a retry is scheduled: it will see this too
    this.running = true;
    this.pass().then(
      (ok) => this.passEnded(ok),
      (err: unknown) => {
        this.d.log.warn({ err: (err as Error).message }, 'user index: a pass failed');
        this.passEnded(false);
      },
    );
  }

  private passEnded(ok: boolean): void {
    this.running = false;
    if (this.stopped) return;
    if (ok) {
      this.failures = 0;
      if (this.again) {
        this.again = false;
        this.kick();
      }
      return;
    }
    this.again = false;
    const delay = backoffDelay(this.failures++, this.d.retry);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.kick();
    }, delay);
    this.timer.unref();
  }

  /** Sends every queued change once; false when some could not be sent (retried later). */
  private async pass(): Promise<boolean> {
    let ok = true;
    for (let after = 0; ; ) {
      const queued = this.d.store.queuedChanges(after, PASS_SIZE);
      if (queued.length === 0) return ok;
      after = (queued[queued.length - 1] as QueuedChange).id;
      if (!(await this.sendAll(queued))) ok = false;
      if (queued.length < PASS_SIZE) return ok;
    }
  }

  /** Sends changes to their users' shards, as writes of their groups; true when all were written. */
  private async sendAll(queued: QueuedChange[]): Promise<boolean> {
    const { own } = this.d;
    const releases: Release[] = [];
    const admitted = new Set<string>();
    const skipped = new Set<string>();
    try {
      for (const g of new Set(queued.map((c) => c.groupId))) {
        try {
          releases.push(await own.admit(g));
          admitted.add(g);
        } catch (err) {
          // Not ours (it moved: its new shard sends the outbox it copied), or fenced
          // past the hold time (sent on a later pass).
          if (!(err instanceof ApiError)) throw err;
          skipped.add(g);
        }
      }
      const byShard = new Map<number, QueuedChange[]>();
      for (const c of queued) {
        if (!admitted.has(c.groupId)) continue;
        const shard = own.ownerOf(c.userId);
        const list = byShard.get(shard);
        if (list) list.push(c);
        else byShard.set(shard, [c]);
      }
      let ok = [...skipped].every((g) => !own.owns(g));
      for (const [shard, changes] of byShard)
        for (let i = 0; i < changes.length; i += MAX_CHANGES_PER_CALL)
          if (!(await this.send(shard, changes.slice(i, i + MAX_CHANGES_PER_CALL)))) ok = false;
      return ok;
    } finally {
      for (const r of releases) r();
    }
  }

  private async send(shard: number, changes: QueuedChange[]): Promise<boolean> {
    const { store, own, internal, log } = this.d;
    const body = changes.map(({ userId, groupId, member, joinedAt }) => ({
      userId,
      groupId,
      member,
      joinedAt,
    }));
    try {
      if (shard === own.ordinal) await applyChanges(store, own, body);
      else await internal.userGroups(shard, body);
    } catch (err) {
      log.debug(
        { shard, changes: changes.length, err: (err as Error).message },
        'user index: not written; retrying',
      );
      return false;
    }
    store.dequeueChanges(changes.map((c) => c.id));
    return true;
  }
}
