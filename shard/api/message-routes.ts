/** Messages (post, read by page or long-poll) and presence of a group (docs/architecture.md section 4). */
import type express from 'express';
import { badRequest } from '../../common/http-answers.js';
import { intParam, jsonBody, route } from './http-input.js';
import type { RouteKit } from './route-kit.js';

export function messageRoutes(app: express.Express, k: RouteKit): void {
  const { s, owned, jsonParser, authed, groupOf, member } = k;
  const { cfg, store, messagesAfter } = s;
  const limits = cfg.shard.limits;

  app.post(
    '/groups/:groupId/messages',
    owned('groupId'),
    jsonParser,
    route(async (req, res) => {
      const me = await authed(req);
      const g = groupOf(req.params.groupId as string);
      member(g, me);
      const body = jsonBody(req);
      const { message, created } = await s.intake.post(
        { groupId: g.id, userId: me, contents: body.contents, clientMsgId: body.clientMsgId },
        { memberChecked: true, admitted: true },
      );
      res.status(created === false ? 200 : 201).json({
        msgId: message.msgId,
        prevMsgId: message.prevMsgId,
        epoch: message.epoch,
        ts: message.ts,
      });
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
