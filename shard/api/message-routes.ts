/** Messages (post, read by page or long-poll) and presence of a group (docs/architecture.md section 4). */
import type express from 'express';
import { badRequest } from '../../common/http-answers.js';
import { requireMemberOf } from '../access.js';
import { intParam, jsonBody, route } from './http-input.js';
import type { RouteKit } from './route-kit.js';

/**
 * POST /groups/{id}/messages once the ownership gate and the body parser have run:
 * authenticated, the group exists, a member posts; the message goes through the one
 * intake. Shared by the Express route and the hot path (hot-routes.ts).
 */
export async function postMessage(
  k: RouteKit,
  groupId: string,
  authorization: string | undefined,
  req: { body?: unknown },
): Promise<{ status: number; body: { msgId: number; prevMsgId: number; epoch: string; ts: number } }> {
  const me = await k.authedBy(authorization);
  requireMemberOf(k.s.store, groupId, me);
  const body = jsonBody(req);
  const { message, created } = await k.s.intake.post(
    { groupId, userId: me, contents: body.contents, clientMsgId: body.clientMsgId },
    { memberChecked: true, admitted: true },
  );
  return {
    status: created === false ? 200 : 201,
    body: { msgId: message.msgId, prevMsgId: message.prevMsgId, epoch: message.epoch, ts: message.ts },
  };
}

export function messageRoutes(app: express.Express, k: RouteKit): void {
  const { s, owned, jsonParser, authed, groupOf, member } = k;
  const { cfg, store, messagesAfter } = s;
  const limits = cfg.shard.limits;

  app.post(
    '/groups/:groupId/messages',
    owned('groupId'),
    jsonParser,
    route(async (req, res) => {
      const ack = await postMessage(k, req.params.groupId as string, req.get('authorization'), req);
      res.status(ack.status).json(ack.body);
    }),
  );

  app.get(
    '/groups/:groupId/messages',
    owned('groupId'),
    route(async (req, res) => {
      const me = await authed(req);
      const groupId = req.params.groupId as string;
      const g = groupOf(groupId);
      member(g, me);
      const limit = intParam(req.query.limit, 'limit', 1, limits.maxPageSize, limits.defaultPageSize);
      if (req.query.after !== undefined && req.query.before !== undefined) {
        throw badRequest('bad_parameter', 'give after or before, not both');
      }
      if (req.query.before !== undefined) {
        const before = intParam(req.query.before, 'before', 1, Number.MAX_SAFE_INTEGER, 0);
        res.json({ messages: store.messagesBefore(groupId, before, limit) });
        return;
      }
      const after = intParam(req.query.after, 'after', 0, Number.MAX_SAFE_INTEGER, 0);
      const wait = intParam(req.query.wait, 'wait', 0, limits.maxWaitSeconds, 0);
      let messages = messagesAfter(groupId, after, limit);
      if (messages.length === 0 && wait > 0) {
        const ac = new AbortController();
        res.once('close', () => ac.abort());
        if (await s.waiters.wait(groupId, wait * 1000, ac.signal))
          messages = messagesAfter(groupId, after, limit);
        if (res.destroyed) return;
      }
      res.json({ messages });
    }),
  );

  app.get(
    '/groups/:groupId/presence',
    owned('groupId'),
    route(async (req, res) => {
      const me = await authed(req);
      const g = groupOf(req.params.groupId as string);
      member(g, me);
      res.json({ presence: s.presence(g.id) });
    }),
  );
}
