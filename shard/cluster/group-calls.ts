/**
 * What a session host does at a group's shard for its inbox clients, besides posting
 * (shard/messages/intake.ts): their typing and their presence. Done here when this
 * shard owns the group, else by an internal call to the group's shard.
 */

import { memberGroup } from '../access.js';
import type { PresenceStatus } from '../delivery/presence.js';
import { remoteError } from '../messages/intake.js';
import type { Store } from '../storage/store.js';
import type { InternalClient } from './internal-client.js';
import type { Ownership } from './ownership.js';

export interface GroupCallsDeps {
  own: Ownership;
  store: Store;
  internal: InternalClient;
  /** On the group's shard: fans a member's typing out. */
  typing(groupId: string, userId: string): void;
  /** On the group's shard: a member's presence as reported by session host `host`. */
  presence(groupId: string, userId: string, status: PresenceStatus, host: number): void;
}

export class GroupCalls {
  constructor(private readonly d: GroupCallsDeps) {}

  /** A member types: 404/403 when the group or membership is not there. */
  async typing(groupId: string, userId: string): Promise<void> {
    const owner = this.d.own.ownerOf(groupId);
    if (owner === this.d.own.ordinal) {
      memberGroup(this.d.store, groupId, userId);
      this.d.typing(groupId, userId);
      return;
    }
    try {
      await this.d.internal.typing(owner, groupId, userId);
    } catch (err) {
      throw remoteError(err);
    }
  }

  /** A user's presence in a group as this host sees it (ignored for non-members). */
  async presence(groupId: string, userId: string, status: PresenceStatus): Promise<void> {
    const owner = this.d.own.ownerOf(groupId);
    if (owner === this.d.own.ordinal) {
      if (this.d.store.getGroup(groupId) && this.d.store.isMember(groupId, userId))
        this.d.presence(groupId, userId, status, owner);
      return;
    }
    await this.d.internal.presence(owner, groupId, { userId, status, host: this.d.own.ordinal });
  }
}
