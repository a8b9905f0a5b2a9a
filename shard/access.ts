/**
 * The one membership check of the group's shard (docs/architecture.md section 4): a
 * group that does not exist is 404, a user who is not its member 403. Every way in uses
 * it: the public routes, group WebSockets, the inbox's local groups, the internal calls
 * and the message intake.
 */
import { ApiError, notFound } from '../common/http-answers.js';
import type { GroupRow, Store } from './storage/store.js';

/** The group, or 404. */
export function groupOr404(store: Pick<Store, 'getGroup'>, groupId: string): GroupRow {
  const g = store.getGroup(groupId);
  if (!g) throw notFound(`group ${groupId}`);
  return g;
}

/** 403 unless the user is a member of the group. */
export function requireMember(store: Pick<Store, 'isMember'>, groupId: string, userId: string): void {
  if (!store.isMember(groupId, userId))
    throw new ApiError(403, 'forbidden', `only members of ${groupId} may do this`);
}

/** The group, when it exists (404) and the user is its member (403). */
export function memberGroup(
  store: Pick<Store, 'getGroup' | 'isMember'>,
  groupId: string,
  userId: string,
): GroupRow {
  const g = groupOr404(store, groupId);
  requireMember(store, groupId, userId);
  return g;
}

/**
 * The same check where only the id is needed (the message paths): existence from memory
 * (Store.hasGroup) instead of a row read, then the membership.
 */
export function requireMemberOf(
  store: Pick<Store, 'hasGroup' | 'isMember'>,
  groupId: string,
  userId: string,
): void {
  if (!store.hasGroup(groupId)) throw notFound(`group ${groupId}`);
  requireMember(store, groupId, userId);
}
