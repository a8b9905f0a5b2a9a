/**
 * Joining and leaving groups. A group fills to its `capacity`; past it, a group with
 * `overflow: reject` refuses joins (409), and one with `overflow: shard` places users
 * in sub-conversations (DESIGN section 5; see placement in this file's callers).
 */
import { ApiError } from './errors.js';
import type { GroupRow, Store } from './store.js';

export class Membership {
  constructor(private readonly store: Store) {}

  /** Adds the user to the group itself; returns the conversation the user is in. */
  async join(g: GroupRow, userId: string): Promise<string> {
    if (this.store.isMember(g.id, userId)) return g.id;
    if (g.memberCount >= g.capacity) {
      throw new ApiError(409, 'group_full', `${g.id} has reached its capacity of ${g.capacity} members`);
    }
    this.store.addMember(g.id, userId);
    return g.id;
  }

  async leave(g: GroupRow, userId: string): Promise<boolean> {
    return this.store.removeMember(g.id, userId);
  }
}
