/** How users and groups look in API answers (docs/architecture.md section 4). */
import type { DeliveryMode } from '../../common/protocol.js';
import type { GroupRow, UserRow } from '../storage/store.js';

export function userView(u: UserRow, viewer: string) {
  return {
    userId: u.id,
    name: u.name,
    ...(viewer === u.id ? { email: u.email } : {}),
    photoUrl: u.photoUrl,
    createdAt: u.createdAt,
    updatedAt: u.updatedAt,
  };
}

export function groupView(g: GroupRow, mode: DeliveryMode = 'push') {
  return {
    groupId: g.id,
    subject: g.subject,
    owner: g.owner,
    memberCount: g.memberCount,
    capacity: g.capacity,
    overflow: g.overflow,
    closed: g.closed,
    parent: g.parent,
    epoch: g.epoch,
    lastMsgId: g.lastMsgId,
    mode,
  };
}
