/**
 * The coordinator's routes on a shard's admin port (docs/architecture.md section 7),
 * behind the internal token like every `/internal/*` route:
 *
 *   GET    /internal/reshard/state                this shard's map, generation, held writes, lease
 *   POST   /internal/reshard/lease   {holder, ttlMs, takeOver?}  take or renew the coordinator's lease
 *                                                 (409: another holds it; takeOver names a holder known gone)
 *   DELETE /internal/reshard/lease   {holder}      give it back
 *   POST   /internal/reshard/map     {map}         accept a newer map (or the same again)
 *   GET    /internal/reshard/keys?cursor&limit    leaving keys (source)
 *   GET    /internal/reshard/changed[?since]      leaving keys changed since a generation (source)
 *   POST   /internal/reshard/export  {groups, users, limit}   snapshots and message pages (source)
 *   POST   /internal/reshard/import  {groups, users}          store them (target)
 *   POST   /internal/reshard/drop                 delete what this shard no longer owns
 */
import type http from 'node:http';
import { z } from 'zod';
import { ApiError } from '../../common/http-answers.js';
import { isClientId, isGroupId } from '../../common/protocol.js';
import type { Resharding } from '../cluster/resharding.js';
import { parse, queryInt, readJson } from './internal-io.js';

/** Import bodies at most: a page of messages per group of a batch, with snapshots. */
export const MAX_IMPORT_BODY = 64 * 1024 * 1024;
const MAX_SMALL_BODY = 1024 * 1024;

const groupId = z.string().refine(isGroupId, 'must be a group id');
const userId = z.string().refine(isClientId, 'must be a user id');
const count = z.number().int().min(0);
const holder = z.string().min(1).max(200);

const leaseBody = z.object({
  holder,
  ttlMs: z.number().int().min(1000).max(600_000),
  takeOver: holder.optional(),
});
const releaseBody = z.object({ holder });
const mapBody = z.object({ map: z.unknown() });
const exportBody = z.object({
  groups: z.array(z.object({ id: groupId, after: count, snapshot: z.boolean() })).max(1000),
  users: z.array(userId).max(1000),
  limit: z.number().int().min(1).max(10_000),
  budget: z.number().int().min(1).max(100_000),
});
const message = z.object({
  groupId,
  msgId: z.number().int().min(1),
  prevMsgId: count,
  epoch: z.string(),
  ts: z.number(),
  userId,
  contents: z.string(),
  clientMsgId: z.string(),
});
const groupRow = z.object({
  id: groupId,
  subject: z.string(),
  owner: z.string(),
  capacity: z.number().int().min(1),
  overflow: z.enum(['reject', 'shard']),
  closed: z.boolean(),
  epoch: z.string().min(1),
  lastMsgId: count,
  memberCount: count,
  parent: z.string().nullable(),
  createdAt: z.number(),
  updatedAt: z.number(),
});
const snapshot = z.object({
  group: groupRow,
  members: z.array(z.object({ userId, joinedAt: z.number() })),
  roster: z.array(z.object({ userId, conversation: groupId, placedAt: z.number(), pending: z.boolean() })),
  outbox: z.array(z.object({ userId, groupId, member: z.boolean(), joinedAt: z.number() })).optional(),
});
const profile = z.object({
  id: userId,
  name: z.string(),
  email: z.string().nullable(),
  photoUrl: z.string().nullable(),
  createdAt: z.number(),
  updatedAt: z.number(),
});
/** A user: profile and groups; a bare profile is what a shard of an earlier version exports. */
const user = z.union([
  z.object({
    id: userId,
    profile: profile.nullable(),
    groups: z.array(z.object({ groupId, joinedAt: z.number() })),
  }),
  profile.transform((p) => ({ id: p.id, profile: p, groups: [] })),
]);
const importBody = z.object({
  groups: z.array(z.object({ id: groupId, snapshot: snapshot.optional(), messages: z.array(message) })),
  users: z.array(user),
});

type Answer = [status: number, body: unknown];

export function reshardRoutes(r: Resharding) {
  return async (req: http.IncomingMessage, what: string): Promise<Answer> => {
    const method = req.method ?? 'GET';
    const q = new URL(req.url ?? '/', 'http://shard').searchParams;
    switch (`${method} ${what}`) {
      case 'GET state':
        return [200, r.state()];
      case 'POST lease': {
        const b = parse(leaseBody, await readJson(req, MAX_SMALL_BODY));
        return [200, r.takeLease(b.holder, b.ttlMs, b.takeOver)];
      }
      case 'DELETE lease': {
        r.releaseLease(parse(releaseBody, await readJson(req, MAX_SMALL_BODY)).holder);
        return [200, { released: true }];
      }
      case 'POST map': {
        const b = parse(mapBody, await readJson(req, MAX_SMALL_BODY));
        return [200, { map: await r.applyMap(b.map) }];
      }
      case 'GET keys': {
        const cursor = q.get('cursor') ?? '';
        if (cursor !== '' && !/^[gu]:/.test(cursor))
          throw new ApiError(400, 'bad_parameter', 'cursor must be one this route answered');
        return [200, r.leavingKeys(cursor, queryInt(q, 'limit', 1, 10_000, 1000))];
      }
      case 'GET changed':
        // Without `since`: the generation now (where the next question starts).
        return [
          200,
          r.changedSince(q.has('since') ? queryInt(q, 'since', 0, Number.MAX_SAFE_INTEGER, 0) : null),
        ];
      case 'POST export':
        return [200, r.exportKeys(parse(exportBody, await readJson(req, MAX_SMALL_BODY)))];
      case 'POST import':
        return [200, r.importKeys(parse(importBody, await readJson(req, MAX_IMPORT_BODY)))];
      case 'POST drop':
        return [200, await r.dropForeign()];
    }
    throw new ApiError(404, 'not_found', `no internal route ${method} /internal/reshard/${what}`);
  };
}
