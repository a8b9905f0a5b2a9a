/**
 * Memberships read from the database and found true, kept so that the post path (which
 * asks on every message) reads SQLite once per member rather than once per message.
 * Only positive answers are kept: a join needs nothing here, and the store forgets a
 * group's entries before every write that removes members (a leave, an import that
 * replaces the member list, a delete), so an answer from here is never one the database
 * would not give. Bounded in groups (the oldest group seen is forgotten first) and in
 * members per group (past the bound, the database answers).
 */
export class KnownMembers {
  private readonly groups = new Map<string, Set<string>>();

  constructor(
    private readonly maxGroups = 10_000,
    private readonly maxPerGroup = 10_000,
  ) {}

  has(groupId: string, userId: string): boolean {
    return this.groups.get(groupId)?.has(userId) === true;
  }

  /** Remembers a membership just read from the database. */
  add(groupId: string, userId: string): void {
    let set = this.groups.get(groupId);
    if (!set) {
      if (this.groups.size >= this.maxGroups) this.groups.delete(this.groups.keys().next().value as string);
      set = new Set();
      this.groups.set(groupId, set);
    }
    if (set.size < this.maxPerGroup) set.add(userId);
  }

  /** Forgets a group's members (before a write that removes any). */
  forget(groupId: string): void {
    this.groups.delete(groupId);
  }

  /** Groups with members remembered. */
  get size(): number {
    return this.groups.size;
  }
}
