/**
 * What every public route starts with, made once per API: the ownership gate of the id in
 * the path (421 before anything else; writes of a moving key held while it is fenced),
 * the JSON body parser (after that gate), authentication, and the group and membership
 * checks.
 */
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Config } from '../../common/config.js';
import { badRequest } from '../../common/http-answers.js';
import type { Logger } from '../../common/logger.js';
import type { DeliveryMode, Message } from '../../common/protocol.js';
import { CLIENT_ID, isClientId, isGroupId } from '../../common/protocol.js';
import { groupOr404, requireMember } from '../access.js';
import type { Ownership } from '../cluster/ownership.js';
import type { GroupWaiters } from '../delivery/waiters.js';
import type { MessageIntake } from '../messages/intake.js';
import type { GroupRow, Store } from '../storage/store.js';
import { type Authenticator, tokenOf } from './auth.js';
import { verifyText } from './errors.js';
import { jsonBodyReader } from './json-body.js';

/** What the public API is built from. */
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

export interface RouteKit {
  s: ShardServices;
  /** The ownership gate of the path's `userId` or `groupId`. */
  owned(param: 'userId' | 'groupId'): RequestHandler;
  /** Parses a JSON body within shard.limits.maxBodyBytes. */
  jsonParser: RequestHandler;
  /** The authenticated user (401 otherwise). */
  authed(req: Request): Promise<string>;
  /** The same, from the Authorization header's value. */
  authedBy(authorization: string | undefined): Promise<string>;
  /** The group (404 otherwise). */
  groupOf(id: string): GroupRow;
  /** 403 unless userId is a member of the group. */
  member(g: GroupRow, userId: string): void;
}

export function routeKit(s: ShardServices): RouteKit {
  const { store, auth, own } = s;
  const limits = s.cfg.shard.limits;
  // JSON bodies are parsed per route, after the ownership check, so that a misdirected
  // request is answered 421 even when its body is malformed or too large.
  const jsonParser = jsonBodyReader({
    limit: limits.maxBodyBytes,
    // What the reader does not take (other types and charsets, compressed or chunked bodies).
    fallback: express.json({
      limit: limits.maxBodyBytes,
      strict: true,
      type: ['application/json', 'application/*+json'],
      // Malformed UTF-8 is refused (400 malformed_json), never stored as U+FFFD.
      verify: verifyText,
    }),
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

  return {
    s,
    owned,
    jsonParser,
    authed: async (req) => auth.verify(tokenOf(req.get('authorization'), undefined)),
    authedBy: async (authorization) => auth.verify(tokenOf(authorization, undefined)),
    groupOf: (id) => groupOr404(store, id),
    member: (g, userId) => requireMember(store, g.id, userId),
  };
}
