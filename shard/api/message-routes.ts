/** Messages (post, read by page or long-poll) and presence of a group (docs/architecture.md section 4). */
import type { ServerResponse } from 'node:http';
import type express from 'express';
import { badRequest } from '../../common/http-answers.js';
import type { Message } from '../../common/protocol.js';
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

/**
 * GET /groups/{id}/messages once the ownership gate has run: authenticated, the group
 * exists, a member reads a page after `after` (long-polling up to `wait` seconds when
 * nothing is newer) or before `before`. `query` holds the parameters as strings;
 * `res` tells when the client went away (then undefined: nothing is to be answered).
 * Shared by the Express route and the hot path (hot-routes.ts).
 */
export async function readMessages(
  k: RouteKit,
  groupId: string,
  authorization: string | undefined,
  query: Record<string, unknown>,
  res: Pick<ServerResponse, 'once' | 'destroyed'>,
): Promise<Message[] | undefined> {
  const { s, groupOf, member } = k;
  const limits = s.cfg.shard.limits;
  const me = await k.authedBy(authorization);
  const g = groupOf(groupId);
  member(g, me);
  const limit = intParam(query.limit, 'limit', 1, limits.maxPageSize, limits.defaultPageSize);
  if (query.after !== undefined && query.before !== undefined) {
    throw badRequest('bad_parameter', 'give after or before, not both');
  }
  if (query.before !== undefined) {
    const before = intParam(query.before, 'before', 1, Number.MAX_SAFE_INTEGER, 0);
    return s.store.messagesBefore(groupId, before, limit);
  }
  const after = intParam(query.after, 'after', 0, Number.MAX_SAFE_INTEGER, 0);
  const wait = intParam(query.wait, 'wait', 0, limits.maxWaitSeconds, 0);
  let messages = s.messagesAfter(groupId, after, limit);
  if (messages.length === 0 && wait > 0) {
    const ac = new AbortController();
    res.once('close', () => ac.abort());
    if (await s.waiters.wait(groupId, wait * 1000, ac.signal))
      messages = s.messagesAfter(groupId, after, limit);
    if (res.destroyed) return undefined;
  }
  return messages;
}

export function messageRoutes(app: express.Express, k: RouteKit): void {
  const { s, owned, jsonParser, authed, groupOf, member } = k;

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
      const messages = await readMessages(
        k,
        req.params.groupId as string,
        req.get('authorization'),
        req.query,
        res,
      );
      if (messages) res.json({ messages });
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
