/**
 * The chat API of one shard (docs/architecture.md section 4), behind the router. Every
 * route checks ownership of the id in its path first (421), then authentication (401),
 * then existence (404) and membership or ownership (403). Routes match exactly as the
 * router's pattern reads the path: case-sensitive, no trailing-slash folding.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Config } from '../../common/config.js';
import { ApiError, badRequest, forbidden, notFound } from '../../common/http-answers.js';
import type { Logger } from '../../common/logger.js';
import {
  CLIENT_ID,
  type DeliveryMode,
  isClientId,
  isGroupId,
  MAP_HEADER,
  type Message,
  parseSubId,
  SHARD_HEADER,
} from '../../common/protocol.js';
import { groupOr404, requireMember } from '../access.js';
import type { Ownership } from '../cluster/ownership.js';
import type { GroupWaiters } from '../delivery/waiters.js';
import type { MessageIntake } from '../messages/intake.js';
import type { GroupRow, Store } from '../storage/store.js';
import { type Authenticator, tokenOf } from './auth.js';
import { errorHandler, verifyText } from './errors.js';
import { groupView, userView } from './views.js';

export interface ShardServices {
  cfg: Config;
  log: Logger;
  store: Store;
  auth: Authenticator;
  own: Ownership;
  waiters: GroupWaiters;
  intake: MessageIntake;
  /** Who is present in a group: group WebSocket users and users present through their inbox. */
  presence(groupId: string): { userId: string; connections: number; status: 'online' | 'away' }[];
  /** Places a joining user (sub-conversations when the group is full); returns the conversation. */
  join(group: GroupRow, userId: string): Promise<string>;
  /** Removes a user from the group (and from its sub-conversation, when sharded). */
  leave(group: GroupRow, userId: string): Promise<boolean>;
  /** The group's delivery mode now (docs/delivery-protocol.md section 7). */
  modeOf(groupId: string): DeliveryMode;
  /** Messages after `after` (recent ones from memory, older ones from the store). */
  messagesAfter(groupId: string, after: number, limit: number): Message[];
}

type Handler = (req: Request, res: Response) => Promise<void> | void;

/** Wraps an async handler so that rejections reach the error handler. */
const route =
  (fn: Handler) =>
  (req: Request, res: Response, next: NextFunction): void => {
    Promise.resolve(fn(req, res)).catch(next);
  };

function intParam(q: unknown, name: string, min: number, max: number, dflt: number): number {
  if (q === undefined) return dflt;
  if (typeof q !== 'string' || !/^\d{1,15}$/.test(q))
    throw badRequest('bad_parameter', `${name} must be a whole number`);
  const n = Number(q);
  if (n < min || n > max) throw badRequest('bad_parameter', `${name} must be between ${min} and ${max}`);
  return n;
}

function stringField(
  body: Record<string, unknown>,
  name: string,
  maxBytes: number,
  required: boolean,
): string | null {
  const v = body[name];
  if (v === undefined || v === null) {
    if (required) throw badRequest('bad_field', `${name} is required`);
    return null;
  }
  if (typeof v !== 'string') throw badRequest('bad_field', `${name} must be a string`);
  if (required && v.trim() === '') throw badRequest('bad_field', `${name} must not be empty`);
  if (Buffer.byteLength(v) > maxBytes)
    throw badRequest('bad_field', `${name} is longer than ${maxBytes} bytes`);
  return v;
}

function jsonBody(req: Request): Record<string, unknown> {
  const b: unknown = req.body;
  if (b === undefined) {
    throw new ApiError(415, 'unsupported_media_type', 'send the body as application/json');
  }
  if (typeof b !== 'object' || b === null || Array.isArray(b))
    throw badRequest('bad_body', 'the body must be a JSON object');
  return b as Record<string, unknown>;
}

export function createApi(s: ShardServices): express.Express {
  const { cfg, store, auth, own, messagesAfter, modeOf } = s;
  const limits = cfg.shard.limits;
  const app = express();
  // Routes match exactly as the router's urlPattern does (docs/architecture.md section 1).
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  // Which shard served the answer (clients show it; the router sends the same header upstream).
  // The map it serves by rides on every answer (routers adopt a newer one).
  app.use((_req, res, next) => {
    res.setHeader(SHARD_HEADER, `${own.ordinal}/${own.shards}`);
    res.setHeader(MAP_HEADER, own.mapHeaderValue);
    next();
  });
  // JSON bodies are parsed per route, after the ownership check, so that a misdirected
  // request is answered 421 even when its body is malformed or too large.
  const jsonParser = express.json({
    limit: limits.maxBodyBytes,
    strict: true,
    type: ['application/json', 'application/*+json'],
    // Malformed UTF-8 is refused (400 malformed_json), never stored as U+FFFD.
    verify: verifyText,
  });

  // Ownership of the id in the path comes before everything else (421, nothing written).
  // A write of a key that is moving away is held while it is fenced, and counted until
  // it is answered (the fence waits for it).
  const owned =
    (param: 'userId' | 'groupId') =>
    (req: Request, res: Response, next: NextFunction): void => {
      const id = req.params[param] as string;
      if (param === 'userId' ? !isClientId(id) : !isGroupId(id)) {
        next(
          badRequest(
            'bad_id',
            `${param} must match ${CLIENT_ID.source}${param === 'groupId' ? ' (or end in ~k)' : ''}`,
          ),
        );
        return;
      }
      if (!own.migrating && (req.method === 'GET' || req.method === 'HEAD')) {
        try {
          own.check(id);
          next();
        } catch (err) {
          next(err);
        }
        return;
      }
      if (req.method === 'GET' || req.method === 'HEAD') {
        own.admitRead(id).then(() => next(), next);
        return;
      }
      own.admit(id).then((release) => {
        res.once('close', release);
        next();
      }, next);
    };

  const authed = async (req: Request): Promise<string> =>
    auth.verify(tokenOf(req.get('authorization'), undefined));

  const groupOf = (id: string): GroupRow => groupOr404(store, id);
  const member = (g: GroupRow, userId: string): void => requireMember(store, g.id, userId);

  // --- users ---

  app.put(
    '/users/:userId',
    owned('userId'),
    jsonParser,
    route(async (req, res) => {
      const me = await authed(req);
      const userId = req.params.userId as string;
      if (me !== userId) throw forbidden('you may only write your own profile');
      const body = jsonBody(req);
      const max = limits.maxProfileFieldBytes;
      const name = stringField(body, 'name', 200, true) as string;
      const email = stringField(body, 'email', 254, false);
      if (email !== null && !/^[^\s@]+@[^\s@]+$/.test(email))
        throw badRequest('bad_field', 'email is not an email address');
      const photoUrl = stringField(body, 'photoUrl', max, false);
      if (photoUrl !== null && !/^https?:\/\/\S+$/i.test(photoUrl))
        throw badRequest('bad_field', 'photoUrl must be an http(s) URL');
      const { user, created } = store.putUser(userId, name, email, photoUrl);
      res.status(created ? 201 : 200).json(userView(user, me));
    }),
  );

  app.get(
    '/users/:userId',
    owned('userId'),
    route(async (req, res) => {
      const me = await authed(req);
      const u = store.getUser(req.params.userId as string);
      if (!u) throw notFound(`user ${req.params.userId}`);
      res.json(userView(u, me));
    }),
  );

  app.post(
    '/users/:userId/token',
    owned('userId'),
    route(async (req, res) => {
      if (!cfg.auth.devTokens) throw new ApiError(404, 'not_found', 'token issuing is off (auth.devTokens)');
      res.status(201).json({ token: await auth.sign(req.params.userId as string) });
    }),
  );

  // --- groups ---

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

  // --- members ---

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

  // --- messages ---

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

  app.use((req, _res, next) => next(new ApiError(404, 'not_found', `no route ${req.method} ${req.path}`)));
  app.use(errorHandler(s.log));
  return app;
}
