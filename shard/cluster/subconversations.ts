/**
 * Sub-conversations on their own shard (docs/architecture.md section 5): the parent's
 * shard creates a sub-conversation `{parent}~k` and adds or removes its members there.
 * These are the operations as a store applies them: the internal routes call them for
 * other shards, and membership calls them directly when this shard owns the sub.
 */
import { ApiError } from '../../common/http-answers.js';
import type { GroupRow, Store } from '../storage/store.js';

/** What the parent tells a sub-conversation's shard when it creates it. */
export interface SubSpec {
  subject: string;
  owner: string;
  capacity: number;
  parent: string;
  closed: boolean;
}

/** Creates the sub-conversation if absent (no members: the owner is not placed in it). */
export function ensureSub(store: Store, subId: string, spec: SubSpec): { group: GroupRow; created: boolean } {
  const existing = store.getGroup(subId);
  if (existing) {
    if (existing.parent !== spec.parent) {
      throw new ApiError(409, 'conflict', `${subId} exists and is not a sub-conversation of ${spec.parent}`);
    }
    return { group: existing, created: false };
  }
  return store.createGroup({
    id: subId,
    subject: spec.subject,
    owner: spec.owner,
    capacity: spec.capacity,
    // sub-conversations never overflow into ~k~j
    overflow: 'reject',
    closed: spec.closed,
    parent: spec.parent,
    firstMember: null,
  });
}

function subOr404(store: Store, subId: string): GroupRow {
  const g = store.getGroup(subId);
  if (!g) throw new ApiError(404, 'not_found', `group ${subId} does not exist`);
  if (g.parent === null)
    throw new ApiError(409, 'not_sub_conversation', `${subId} is not a sub-conversation`);
  return g;
}

export function addSubMember(store: Store, subId: string, userId: string): boolean {
  subOr404(store, subId);
  return store.addMember(subId, userId);
}

export function removeSubMember(store: Store, subId: string, userId: string): boolean {
  subOr404(store, subId);
  return store.removeMember(subId, userId);
}
