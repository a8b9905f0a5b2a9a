/**
 * The shard-to-shard routes on the admin port (`/internal/*`, docs/architecture.md
 * sections 5 and 6), for callers that proved the internal token (checked by the admin
 * server before these run):
 *
 *   POST   /internal/deliver                            a fan-out batch {from, seq, records}
 *   GET    /internal/groups/{g}/messages?after&limit&for a repair page (and the recipients on host `for`)
 *   POST   /internal/groups/{g}/messages                a member's post from their session host
 *   POST   /internal/groups/{g}/typing                  a member's typing, fanned out
 *   POST   /internal/groups/{g}/presence                a session host's presence report
 *   POST   /internal/groups/{subId}                     create a sub-conversation if absent
 *   PUT    /internal/groups/{subId}/members/{userId}    add a member (no-op when one)
 *   DELETE /internal/groups/{subId}/members/{userId}    remove a member (no-op when none)
 *   POST   /internal/user-groups                        {changes}: joins and leaves of users this shard owns
 *
 * Every route on a group checks first that this shard owns the id (421, nothing read or
 * written otherwise), then reads a bounded body (well-formed UTF-8 JSON) and checks it
 * against its schema (400 `bad_field` naming the field).
 */
import type http from 'node:http';
import { z } from 'zod';
import type { Config } from '../../common/config.js';
import { ApiError, badRequest, sendError, sendJson } from '../../common/http-answers.js';
import type { Logger } from '../../common/logger.js';
import { isClientId, isGroupId, type Message, parseSubId, SHARD_HEADER } from '../../common/protocol.js';
import { groupOr404, memberGroup } from '../access.js';
import type { Ownership } from '../cluster/ownership.js';
import { addSubMember, ensureSub, removeSubMember } from '../cluster/subconversations.js';
import { applyChanges, MAX_CHANGES_PER_CALL } from '../cluster/user-index.js';
import { type DeliveryBatch, deliveryBatchSchema } from '../delivery/records.js';
import type { MessageIntake } from '../messages/intake.js';
import type { Store } from '../storage/store.js';
import { answerOrLog } from './errors.js';
import { decodeSegment, parse, queryInt, readJson } from './internal-io.js';

const MAX_INTERNAL_BODY = 16 * 1024;
/** POST /internal/user-groups bodies at most (500 changes of ids up to 128 bytes). */
const MAX_USER_GROUPS_BODY = 256 * 1024;
/** POST /internal/deliver bodies at most (senders cap a batch at 4 MiB of records). */
export const MAX_DELIVER_BODY = 16 * 1024 * 1024;

export interface InternalDeps {
  cfg: Config;
  log: Logger;
  store: Store;
  own: Ownership;
  intake: MessageIntake;
  delivery: InternalDelivery;
  /** The coordinator's routes (`/internal/reshard/<what>`, shard/api/reshard-routes.ts). */
  reshard(req: http.IncomingMessage, what: string): Promise<[status: number, body: unknown]>;
}

/** What the delivery routes do on this shard. */
export interface InternalDelivery {
  /** Fans a member's typing out to the group's other members. */
  typing(groupId: string, userId: string): void;
  /** A session host's presence report for a member. */
  presence(groupId: string, userId: string, status: 'online' | 'away' | 'offline', host: number): void;
  /** The members of a group whose session host is `host`. */
  recipientsOn(groupId: string, host: number): string[];
  /** Of these users, those with a live WebSocket to the group on this shard. */
  liveOf(groupId: string, userIds: string[]): string[];
  /** Messages after `after` (the recent ones from memory, older ones from the store). */
  messagesAfter(groupId: string, after: number, limit: number): Message[];
  /** Hands a received batch to this session host's sequencer. */
  deliver(batch: DeliveryBatch): void;
}

// --- bodies ---

const userId = z.string().refine(isClientId, 'must be a valid id');
const typingBody = z.object({ userId });
const userGroupsBody = z.object({
  changes: z
    .array(
      z.object({
        userId,
        groupId: z.string().refine(isGroupId, 'must be a group id'),
        member: z.boolean(),
        joinedAt: z.number().int().min(0),
      }),
    )
    .max(MAX_CHANGES_PER_CALL),
});
const postBody = z.object({ userId, contents: z.unknown(), clientMsgId: z.unknown() });
const presenceBody = z.object({
  userId,
  status: z.enum(['online', 'away', 'offline']),
  host: z.number().int().min(0),
});
const subSpecBody = (maxCapacity: number) =>
  z.object({
    subject: z.string().refine((s) => Buffer.byteLength(s) <= 500, 'must be at most 500 bytes'),
    owner: userId,
    capacity: z.number().int().min(1).max(maxCapacity),
    parent: z.string(),
    closed: z.boolean().optional(),
  });

// --- routes ---

type Answer = [status: number, body: unknown];

class InternalRoutes {
  constructor(private readonly d: InternalDeps) {}

  /** The id of a path segment, valid (400) and owned by this shard under its view of the map (421). */
  private owned(raw: string, shardHeader: string | undefined, sub: boolean): string {
    const id = decodeSegment(raw);
    if (sub ? parseSubId(id) === undefined : !isGroupId(id))
      throw new ApiError(
        400,
        'bad_id',
        sub ? 'internal calls address sub-conversations {groupId}~k only' : 'malformed group id',
      );
    this.d.own.check(id, shardHeader);
    return id;
  }

  async dispatch(req: http.IncomingMessage, path: string): Promise<Answer> {
    const header = req.headers[SHARD_HEADER];
    const shardHeader = typeof header === 'string' ? header : undefined;
    const segs = path.split('/'); // ['', 'internal', ...]
    const method = req.method ?? 'GET';
    if (segs.length === 3 && segs[2] === 'deliver') {
      if (method !== 'POST') throw new ApiError(405, 'method_not_allowed', 'use POST to deliver');
      return this.deliver(req);
    }
    if (segs.length === 3 && segs[2] === 'user-groups') {
      if (method !== 'POST') throw new ApiError(405, 'method_not_allowed', 'use POST to change user groups');
      return this.userGroups(req);
    }
    if (segs[2] === 'reshard' && segs.length === 4) return this.d.reshard(req, segs[3] as string);
    if (segs[2] !== 'groups' || segs.length < 4) throw this.noRoute(method, path);
    const raw = segs[3] as string;
    if (segs.length === 4) {
      if (method !== 'POST')
        throw new ApiError(405, 'method_not_allowed', 'use POST to create a sub-conversation');
      return this.admitted(this.owned(raw, shardHeader, true), (id) => this.createSub(req, id));
    }
    if (segs.length === 5) {
      const groupId = this.owned(raw, shardHeader, false);
      if (segs[4] === 'messages' && method === 'GET') return this.messages(req, groupId);
      if (segs[4] === 'messages' && method === 'POST')
        return this.admitted(groupId, (id) => this.post(req, id));
      if (segs[4] === 'typing' && method === 'POST') return this.typing(req, groupId);
      if (segs[4] === 'presence' && method === 'POST') return this.presence(req, groupId);
    }
    if (segs.length === 6 && segs[4] === 'members') {
      const subId = this.owned(raw, shardHeader, true);
      const member = decodeSegment(segs[5] as string);
      if (!isClientId(member)) throw new ApiError(400, 'bad_id', 'userId must be a valid id');
      if (method === 'PUT')
        return this.admitted(subId, async (id) => [
          200,
          { groupId: id, userId: member, added: addSubMember(this.d.store, id, member) },
        ]);
      if (method === 'DELETE')
        return this.admitted(subId, async (id) => [
          200,
          { groupId: id, userId: member, removed: removeSubMember(this.d.store, id, member) },
        ]);
      throw new ApiError(405, 'method_not_allowed', 'use PUT or DELETE on a member');
    }
    throw this.noRoute(method, path);
  }

  /** A write of a group: held while its key is fenced, counted until it is answered. */
  private async admitted(id: string, write: (id: string) => Promise<Answer>): Promise<Answer> {
    const release = await this.d.own.admit(id);
    try {
      return await write(id);
    } finally {
      release();
    }
  }

  private noRoute(method: string, path: string): ApiError {
    return new ApiError(404, 'not_found', `no internal route ${method} ${path}`);
  }

  private async deliver(req: http.IncomingMessage): Promise<Answer> {
    const batch = parse(deliveryBatchSchema, await readJson(req, MAX_DELIVER_BODY)) as DeliveryBatch;
    this.d.delivery.deliver(batch);
    return [200, { accepted: batch.records.length }];
  }

  /** Joins and leaves for the users' shard: all of them are this shard's users (421 otherwise, nothing written). */
  private async userGroups(req: http.IncomingMessage): Promise<Answer> {
    const { changes } = parse(userGroupsBody, await readJson(req, MAX_USER_GROUPS_BODY));
    for (const c of changes) this.d.own.check(c.userId);
    await applyChanges(this.d.store, this.d.own, changes);
    return [200, { applied: changes.length }];
  }

  private messages(req: http.IncomingMessage, groupId: string): Answer {
    groupOr404(this.d.store, groupId);
    const q = new URL(req.url ?? '/', 'http://shard').searchParams;
    const after = queryInt(q, 'after', 0, Number.MAX_SAFE_INTEGER, 0);
    const limit = queryInt(q, 'limit', 1, 1000, 200);
    const host = q.get('for') === null ? undefined : queryInt(q, 'for', 0, this.d.own.span - 1, 0);
    const messages = this.d.delivery.messagesAfter(groupId, after, limit);
    if (host === undefined) return [200, { messages }];
    const recipients = this.d.delivery.recipientsOn(groupId, host);
    return [200, { messages, recipients, live: this.d.delivery.liveOf(groupId, recipients) }];
  }

  private async post(req: http.IncomingMessage, groupId: string): Promise<Answer> {
    const b = parse(postBody, await readJson(req, MAX_INTERNAL_BODY));
    const { message, created } = await this.d.intake.post({ groupId, ...b }, { admitted: true });
    return [created === false ? 200 : 201, message];
  }

  private async typing(req: http.IncomingMessage, groupId: string): Promise<Answer> {
    const b = parse(typingBody, await readJson(req, MAX_INTERNAL_BODY));
    memberGroup(this.d.store, groupId, b.userId);
    this.d.delivery.typing(groupId, b.userId);
    return [202, { groupId }];
  }

  private async presence(req: http.IncomingMessage, groupId: string): Promise<Answer> {
    const b = parse(presenceBody, await readJson(req, MAX_INTERNAL_BODY));
    if (b.host >= this.d.own.span) throw badRequest('bad_field', 'host must be the ordinal of a shard');
    groupOr404(this.d.store, groupId);
    // Non-members are ignored (the host reports what its clients follow, unchecked).
    const accepted = this.d.store.isMember(groupId, b.userId);
    if (accepted) this.d.delivery.presence(groupId, b.userId, b.status, b.host);
    return [202, { groupId, accepted }];
  }

  private async createSub(req: http.IncomingMessage, subId: string): Promise<Answer> {
    const parent = parseSubId(subId)?.parent as string;
    const b = parse(subSpecBody(this.d.cfg.shard.limits.maxCapacity), await readJson(req, MAX_INTERNAL_BODY));
    if (b.parent !== parent)
      throw badRequest('bad_field', `parent must be ${parent}, the prefix of the sub-conversation id`);
    const { group, created } = ensureSub(this.d.store, subId, { ...b, closed: b.closed === true });
    return [created ? 201 : 200, { groupId: group.id, parent: group.parent, memberCount: group.memberCount }];
  }
}

/** Answers an (already authenticated) /internal/* request on the admin port. */
export function internalHandler(deps: InternalDeps) {
  const routes = new InternalRoutes(deps);
  return (req: http.IncomingMessage, res: http.ServerResponse, path: string): void => {
    routes.dispatch(req, path).then(
      ([status, body]) => sendJson(res, status, body),
      (err: unknown) => sendError(res, answerOrLog(err, deps.log, 'internal call failed')),
    );
  };
}
