/**
 * Shard-to-shard calls for sharded conversations (DESIGN section 5), on the admin port
 * under /internal/*, guarded by SHARDCHAT_INTERNAL_TOKEN (checked in server.ts before
 * these handlers run). The parent's shard keeps the roster; the sub-conversation
 * `{parent}~k` lives on the shard the shard function names, and the parent creates it
 * and adds or removes members there through these idempotent calls:
 *
 *   POST   /internal/groups/{subId}                   create-if-absent {subject, owner, capacity, parent}
 *   PUT    /internal/groups/{subId}/members/{userId}   add (no-op when already a member)
 *   DELETE /internal/groups/{subId}/members/{userId}   remove (no-op when not a member)
 *
 * Each handler checks that this shard owns the sub id (421 otherwise, nothing written)
 * and validates its input (400). `InternalClient` makes these calls with a timeout per
 * attempt and retries with exponential backoff.
 */
import type http from 'node:http';
import type { Config } from '../common/config.js';
import { sendJson } from '../common/http-json.js';
import type { Logger } from '../common/logger.js';
import { staticEndpoints, type Topology } from '../common/topology.js';
import { ApiError } from './errors.js';
import { isClientId, parseSubId } from './ids.js';
import type { Ownership } from './ownership.js';
import type { GroupRow, Store } from './store.js';

export const INTERNAL_TOKEN_HEADER = 'x-shardchat-internal-token';
const MAX_INTERNAL_BODY = 16 * 1024;

/** What the parent tells a sub-conversation's shard when it creates it. */
export interface SubSpec {
  subject: string;
  owner: string;
  capacity: number;
  parent: string;
  closed: boolean;
}

// --- applying the operations to a store (used by the handlers and for local subs) ---

/** Creates the sub-conversation if absent (no members: the owner is not placed in it). */
export function ensureSub(store: Store, subId: string, spec: SubSpec): { group: GroupRow; created: boolean } {
  const existing = store.getGroup(subId);
  if (existing) {
    if (existing.parent !== spec.parent) {
      throw new ApiError(409, 'conflict', `${subId} exists and is not a sub-conversation of ${spec.parent}`);
    }
    return { group: existing, created: false };
  }
  return store.createGroup({
    id: subId,
    subject: spec.subject,
    owner: spec.owner,
    capacity: spec.capacity,
    // sub-conversations never overflow into ~k~j
    overflow: 'reject',
    closed: spec.closed,
    parent: spec.parent,
    firstMember: null,
  });
}

function subOr404(store: Store, subId: string): GroupRow {
  const g = store.getGroup(subId);
  if (!g) throw new ApiError(404, 'not_found', `group ${subId} does not exist`);
  if (g.parent === null)
    throw new ApiError(409, 'not_sub_conversation', `${subId} is not a sub-conversation`);
  return g;
}

export function addSubMember(store: Store, subId: string, userId: string): boolean {
  subOr404(store, subId);
  return store.addMember(subId, userId);
}

export function removeSubMember(store: Store, subId: string, userId: string): boolean {
  subOr404(store, subId);
  return store.removeMember(subId, userId);
}

// --- the handlers on the admin port ---

export interface InternalDeps {
  cfg: Config;
  log: Logger;
  store: Store;
  own: Ownership;
}

function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > MAX_INTERNAL_BODY) {
        failed = true;
        reject(new ApiError(413, 'body_too_large', 'the request body is too large'));
        return;
      }
      chunks.push(c);
    });
    req.on('error', (err) => {
      if (!failed) {
        failed = true;
        reject(err);
      }
    });
    req.on('end', () => {
      if (failed) return;
      let v: unknown;
      try {
        v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        reject(new ApiError(400, 'malformed_json', 'the request body is not valid JSON'));
        return;
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        reject(new ApiError(400, 'bad_body', 'the request body must be a JSON object'));
        return;
      }
      resolve(v as Record<string, unknown>);
    });
  });
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new ApiError(400, 'bad_id', 'malformed percent-encoding in the path');
  }
}

/** A sub id from the path: valid, and owned by this shard under its own view of S (421 otherwise). */
function ownedSubId(
  deps: InternalDeps,
  raw: string,
  shardHeader: string | undefined,
): { id: string; parent: string } {
  const id = decodeSegment(raw);
  const sub = parseSubId(id);
  if (!sub) throw new ApiError(400, 'bad_id', 'internal calls address sub-conversations {groupId}~k only');
  deps.own.check(id, shardHeader);
  return { id, parent: sub.parent };
}

function parseSpec(deps: InternalDeps, body: Record<string, unknown>, parent: string): SubSpec {
  const { subject, owner, capacity, closed } = body;
  if (typeof subject !== 'string' || Buffer.byteLength(subject) > 500)
    throw new ApiError(400, 'bad_field', 'subject must be a string of at most 500 bytes');
  if (typeof owner !== 'string' || !isClientId(owner))
    throw new ApiError(400, 'bad_field', 'owner must be a valid id');
  const max = deps.cfg.shard.limits.maxCapacity;
  if (typeof capacity !== 'number' || !Number.isInteger(capacity) || capacity < 1 || capacity > max)
    throw new ApiError(400, 'bad_field', `capacity must be a whole number from 1 to ${max}`);
  if (body.parent !== parent)
    throw new ApiError(400, 'bad_field', `parent must be ${parent}, the prefix of the sub-conversation id`);
  if (closed !== undefined && typeof closed !== 'boolean')
    throw new ApiError(400, 'bad_field', 'closed must be true or false');
  return { subject, owner, capacity, parent, closed: closed === true };
}

async function dispatch(
  deps: InternalDeps,
  req: http.IncomingMessage,
  path: string,
): Promise<[number, unknown]> {
  const header = req.headers['x-shardchat-shard'];
  const shardHeader = typeof header === 'string' ? header : undefined;
  const segs = path.split('/');
  // ['', 'internal', 'groups', subId] or ['', 'internal', 'groups', subId, 'members', userId]
  if (segs.length === 4 && segs[2] === 'groups') {
    if (req.method !== 'POST')
      throw new ApiError(405, 'method_not_allowed', 'use POST to create a sub-conversation');
    const { id, parent } = ownedSubId(deps, segs[3] as string, shardHeader);
    const spec = parseSpec(deps, await readJson(req), parent);
    const { group, created } = ensureSub(deps.store, id, spec);
    return [created ? 201 : 200, { groupId: group.id, parent: group.parent, memberCount: group.memberCount }];
  }
  if (segs.length === 6 && segs[2] === 'groups' && segs[4] === 'members') {
    const { id } = ownedSubId(deps, segs[3] as string, shardHeader);
    const userId = decodeSegment(segs[5] as string);
    if (!isClientId(userId)) throw new ApiError(400, 'bad_id', 'userId must be a valid id');
    if (req.method === 'PUT') {
      const added = addSubMember(deps.store, id, userId);
      return [200, { groupId: id, userId, added }];
    }
    if (req.method === 'DELETE') {
      const removed = removeSubMember(deps.store, id, userId);
      return [200, { groupId: id, userId, removed }];
    }
    throw new ApiError(405, 'method_not_allowed', 'use PUT or DELETE on a member');
  }
  throw new ApiError(404, 'not_found', `no internal route ${req.method} ${path}`);
}

/** Answers an (already authenticated) /internal/* request on the admin port. */
export function handleInternal(
  deps: InternalDeps,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  path: string,
): void {
  dispatch(deps, req, path).then(
    ([status, body]) => sendJson(res, status, body),
    (err: unknown) => {
      if (err instanceof ApiError) {
        sendJson(res, err.status, { error: { code: err.code, message: err.message } });
        return;
      }
      const e = err as { name?: string; code?: string; message?: string };
      if (e.name === 'StorageError') {
        res.setHeader('retry-after', '5');
        sendJson(res, 503, {
          error: { code: e.code ?? 'storage_failed', message: e.message ?? 'storage failed' },
        });
        return;
      }
      deps.log.error({ err: (err as Error)?.stack ?? String(err) }, 'internal call failed');
      sendJson(res, 500, { error: { code: 'internal', message: 'internal error' } });
    },
  );
}

// --- the client the parent's shard uses ---

/** An internal call that failed for good (after retries, or with an answer retrying cannot change). */
export class InternalCallError extends Error {
  override name = 'InternalCallError';
  constructor(
    message: string,
    readonly status: number | undefined,
  ) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class InternalClient {
  /** The admin base URL of a shard now (kubernetes mode: its pod IP, which may change). */
  private readonly adminOf: (ordinal: number) => string | undefined;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly timeoutMs: number;

  constructor(
    cfg: Config,
    private readonly own: Ownership,
    private readonly token: string,
    private readonly log: Logger,
    topology?: Pick<Topology, 'adminOf'>,
  ) {
    if (topology) {
      this.adminOf = (o) => topology.adminOf(o);
    } else {
      let admin: (string | undefined)[];
      try {
        admin = staticEndpoints(cfg).map((e) => e.admin);
      } catch (err) {
        // no usable addresses: every call to another shard fails (503 to the client)
        log.error({ err: (err as Error).message }, 'cannot tell the admin addresses of the other shards');
        admin = [];
      }
      this.adminOf = (o) => admin[o];
    }
    this.attempts = cfg.shard.internal.attempts;
    this.backoffMs = cfg.shard.internal.backoffMs;
    this.timeoutMs = cfg.shard.internal.timeoutMs;
  }

  ensureSub(ordinal: number, subId: string, spec: SubSpec): Promise<void> {
    return this.call(ordinal, 'POST', `/internal/groups/${encodeURIComponent(subId)}`, spec);
  }

  addMember(ordinal: number, subId: string, userId: string): Promise<void> {
    return this.call(
      ordinal,
      'PUT',
      `/internal/groups/${encodeURIComponent(subId)}/members/${encodeURIComponent(userId)}`,
    );
  }

  removeMember(ordinal: number, subId: string, userId: string): Promise<void> {
    return this.call(
      ordinal,
      'DELETE',
      `/internal/groups/${encodeURIComponent(subId)}/members/${encodeURIComponent(userId)}`,
    );
  }

  /** One idempotent call, retried (bounded by `attempts`) on network errors, timeouts and 5xx. */
  private async call(ordinal: number, method: string, path: string, body?: unknown): Promise<void> {
    let last = '';
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      if (attempt > 1) await sleep(this.backoffMs * 2 ** (attempt - 2));
      // Looked up on every attempt: in kubernetes mode a restarted pod has a new IP.
      const base = this.adminOf(ordinal);
      if (!base) {
        last = 'no known admin address';
        continue;
      }
      let status: number;
      let text: string;
      try {
        const res = await fetch(`${base}${path}`, {
          method,
          headers: {
            [INTERNAL_TOKEN_HEADER]: this.token,
            'x-shardchat-shard': `${ordinal}/${this.own.shards}`,
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        status = res.status;
        text = await res.text();
      } catch (err) {
        const e = err as Error & { cause?: { code?: string } };
        last = e.cause?.code ?? e.name;
        continue;
      }
      if (status >= 200 && status < 300) return;
      last = `${status} ${text.slice(0, 200)}`;
      if (status < 500 && status !== 429) {
        // 400/401/404/409/421: a retry gets the same answer
        this.log.error(
          { shard: ordinal, method, path, status, body: text.slice(0, 200) },
          'internal call refused',
        );
        throw new InternalCallError(`shard ${ordinal} answered ${last}`, status);
      }
    }
    this.log.warn({ shard: ordinal, method, path, attempts: this.attempts, last }, 'internal call failed');
    throw new InternalCallError(`shard ${ordinal} did not answer ${method} ${path} (${last})`, undefined);
  }
}
