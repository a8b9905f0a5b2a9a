/**
 * The members of each group by their session host `shard(userId)`, as the fan-out
 * needs them: cached, the least recently used forgotten first, and invalidated when the
 * group's membership changes (the store's `members-changed`).
 */
import type { Store } from '../storage/store.js';

/** Groups whose member lists are cached at most. */
const MEMBER_CACHE_GROUPS = 10_000;
const MEMBER_PAGE = 1000;

export class MemberCache {
  private readonly cache = new Map<string, Map<number, string[]>>();

  constructor(
    private readonly store: Pick<Store, 'listMembers'>,
    /** The session host of a user. */
    private readonly hostOf: (userId: string) => number,
    private readonly maxMembers: number,
  ) {}

  /** Forgets every group: the session hosts of users changed (a new shard map). */
  invalidateAll(): void {
    this.cache.clear();
  }

  invalidate(groupId: string): void {
    this.cache.delete(groupId);
  }

  /** Session host ordinal -> the members it hosts. */
  byHost(groupId: string): Map<number, string[]> {
    const hit = this.cache.get(groupId);
    if (hit) {
      this.cache.delete(groupId);
      this.cache.set(groupId, hit);
      return hit;
    }
    const byHost = new Map<number, string[]>();
    let after = '';
    for (let seen = 0; seen < this.maxMembers; ) {
      const page = this.store.listMembers(groupId, after, MEMBER_PAGE);
      for (const { userId } of page) {
        const host = this.hostOf(userId);
        let list = byHost.get(host);
        if (!list) {
          list = [];
          byHost.set(host, list);
        }
        list.push(userId);
        after = userId;
      }
      seen += page.length;
      if (page.length < MEMBER_PAGE) break;
    }
    this.cache.set(groupId, byHost);
    if (this.cache.size > MEMBER_CACHE_GROUPS) this.cache.delete(this.cache.keys().next().value as string);
    return byHost;
  }

  /** The members of a group hosted by `host`. */
  on(groupId: string, host: number): string[] {
    return this.byHost(groupId).get(host) ?? [];
  }
}
