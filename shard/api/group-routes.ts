/** Groups and their members: create, update, read, join, leave, list (docs/architecture.md section 4). */
import type express from 'express';
import { ApiError, badRequest, forbidden, notFound } from '../../common/http-answers.js';
import { isClientId, parseSubId } from '../../common/protocol.js';
import { intParam, jsonBody, route, stringField } from './http-input.js';
import type { RouteKit } from './route-kit.js';
import { groupView } from './views.js';

/** Creating, updating (the owner) and reading a group. */
export function groupRoutes(app: express.Express, k: RouteKit): void {
  const { s, owned, jsonParser, authed, groupOf } = k;
  const { cfg, store, modeOf } = s;
  const limits = cfg.shard.limits;

  app.put(
    '/groups/:groupId',
    owned('groupId'),
    jsonParser,
    route(async (req, res) => {
      const me = await authed(req);
      const groupId = req.params.groupId as string;
      if (!isClientId(groupId))
        throw new ApiError(409, 'reserved_id', 'ids ending in ~k are sub-conversations the system creates');
      const body = jsonBody(req);
      const existing = store.getGroup(groupId);
      if (existing && existing.owner !== me) throw forbidden('only the owner may update the group');
      const subject = stringField(body, 'subject', 500, existing === undefined) ?? existing?.subject ?? '';
      let capacity = existing?.capacity ?? 1250;
      if (body.capacity !== undefined) {
        if (
          !Number.isInteger(body.capacity) ||
          (body.capacity as number) < 1 ||
          (body.capacity as number) > limits.maxCapacity
        ) {
          throw badRequest('bad_field', `capacity must be a whole number from 1 to ${limits.maxCapacity}`);
        }
        capacity = body.capacity as number;
      }
      let overflow = existing?.overflow ?? 'reject';
      if (body.overflow !== undefined) {
        if (body.overflow !== 'reject' && body.overflow !== 'shard')
          throw badRequest('bad_field', "overflow must be 'reject' or 'shard'");
        overflow = body.overflow;
      }
      let closed = existing?.closed ?? false;
      if (body.closed !== undefined) {
        if (typeof body.closed !== 'boolean') throw badRequest('bad_field', 'closed must be true or false');
        closed = body.closed;
      }
      if (existing) {
        res.json(groupView(store.updateGroup(groupId, subject, capacity, overflow, closed), modeOf(groupId)));
        return;
      }
      const { group, created } = store.createGroup({
        id: groupId,
        subject,
        owner: me,
        capacity,
        overflow,
        closed,
        parent: null,
        firstMember: me,
      });
      if (created && overflow === 'shard') store.placeInRoster(groupId, me, groupId);
      res.status(created ? 201 : 200).json(groupView(group));
    }),
  );

  app.get(
    '/groups/:groupId',
    owned('groupId'),
    route(async (req, res) => {
      await authed(req);
      const g = groupOf(req.params.groupId as string);
      res.json(groupView(g, modeOf(g.id)));
    }),
  );
}

/** Joining (placed in a sub-conversation when the group is sharded), leaving, listing members. */
export function memberRoutes(app: express.Express, k: RouteKit): void {
  const { s, owned, jsonParser, authed, groupOf, member } = k;
  const { store } = s;
  const limits = s.cfg.shard.limits;

  app.post(
    '/groups/:groupId/members',
    owned('groupId'),
    jsonParser,
    route(async (req, res) => {
      const me = await authed(req);
      const groupId = req.params.groupId as string;
      if (parseSubId(groupId))
        throw new ApiError(
          409,
          'sub_conversation',
          `join ${groupId.replace(/~\d+$/, '')} instead: the system places members in its sub-conversations`,
        );
      const body = jsonBody(req);
      const userId = body.userId;
      if (typeof userId !== 'string' || !isClientId(userId))
        throw badRequest('bad_field', 'userId must be a valid id');
      if (userId !== me) throw forbidden('you may only join yourself');
      const g = groupOf(groupId);
      if (g.closed && !store.isMember(g.id, me) && store.rosterOf(g.id, me) === undefined) {
        throw forbidden(`${groupId} is closed`);
      }
      const conversation = await s.join(g, me);
      res.json({ groupId: conversation });
    }),
  );

  app.delete(
    '/groups/:groupId/members/:userId',
    owned('groupId'),
    route(async (req, res) => {
      const me = await authed(req);
      const groupId = req.params.groupId as string;
      const userId = req.params.userId as string;
      if (!isClientId(userId)) throw badRequest('bad_id', 'userId must be a valid id');
      const g = groupOf(groupId);
      if (userId !== me && g.owner !== me)
        throw forbidden('you may only remove yourself (or, as the owner, others)');
      const removed = await s.leave(g, userId);
      if (!removed) throw notFound(`${userId} in ${groupId}`);
      res.status(204).end();
    }),
  );

  app.get(
    '/groups/:groupId/members',
    owned('groupId'),
    route(async (req, res) => {
      const me = await authed(req);
      const g = groupOf(req.params.groupId as string);
      member(g, me);
      const limit = intParam(
        req.query.limit,
        'limit',
        1,
        limits.maxMembersPageSize,
        Math.min(100, limits.maxMembersPageSize),
      );
      const after = typeof req.query.after === 'string' ? req.query.after : '';
      const members = store.listMembers(g.id, after, limit);
      const last = members[members.length - 1];
      res.json({ members, ...(members.length === limit && last ? { next: last.userId } : {}) });
    }),
  );
}
