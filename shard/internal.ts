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
import type { DeliveryRecord } from './delivery-sequencer.js';
import { ApiError, checkText } from './errors.js';
import { isClientId, isGroupId, parseSubId } from './ids.js';
import type { Ownership } from './ownership.js';
import type { GroupRow, Message, Store } from './store.js';

export const INTERNAL_TOKEN_HEADER = 'x-shardchat-internal-token';
const MAX_INTERNAL_BODY = 16 * 1024;
/** POST /internal/deliver bodies at most (senders cap a batch at 4 MiB of records). */
export const MAX_DELIVER_BODY = 16 * 1024 * 1024;

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
  /** Cross-shard delivery (docs/delivery-protocol.md); absent: those routes answer 404. */
  delivery?: DeliveryHandlers;
}

/** What the delivery routes do on this shard. */
export interface DeliveryHandlers {
  /** Stores a message for a member (membership already checked), as the public POST does. */
  post(
    groupId: string,
    userId: string,
    contents: string,
    clientMsgId: string,
  ): Promise<{ message: Message; created: boolean }>;
  /** Fans a typing event out to the group's other members. */
  typing(groupId: string, userId: string): void;
  /** A session host's presence report for a member (membership already checked). */
  presence(groupId: string, userId: string, status: 'online' | 'away' | 'offline', host: number): void;
  /** The members of a group whose session host is `host`. */
  recipientsOn(groupId: string, host: number): string[];
  /** Of these users, those with a live WebSocket to the group on this shard. */
  liveOf(groupId: string, userIds: string[]): string[];
  /** Messages after `after` (the recent ones from memory, older ones from the store). */
  messagesAfter(groupId: string, after: number, limit: number): Message[];
  /** Hands received records to this session host's sequencer. */
  deliver(from: number, seq: number, records: DeliveryRecord[]): void;
}

function readJson(req: http.IncomingMessage, max = MAX_INTERNAL_BODY): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > max) {
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
      const body = Buffer.concat(chunks);
      try {
        // Malformed UTF-8 is refused, never decoded to U+FFFD and stored.
        checkText(body, 'utf-8');
      } catch (err) {
        reject(new ApiError(400, 'malformed_json', (err as Error).message));
        return;
      }
      try {
        v = JSON.parse(body.toString('utf8'));
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

const CLIENT_MSG_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** A group id from the path, owned by this shard (421 otherwise), existing (404) and the user a member (403). */
function memberGroup(
  deps: InternalDeps,
  raw: string,
  shardHeader: string | undefined,
  userId: string | undefined,
): GroupRow {
  const id = decodeSegment(raw);
  if (!isGroupId(id)) throw new ApiError(400, 'bad_id', 'malformed group id');
  deps.own.check(id, shardHeader);
  const g = deps.store.getGroup(id);
  if (!g) throw new ApiError(404, 'not_found', `group ${id} does not exist`);
  if (userId !== undefined && !deps.store.isMember(id, userId))
    throw new ApiError(403, 'forbidden', `only members of ${id} may do this`);
  return g;
}

function bodyUserId(body: Record<string, unknown>): string {
  const userId = body.userId;
  if (typeof userId !== 'string' || !isClientId(userId))
    throw new ApiError(400, 'bad_field', 'userId must be a valid id');
  return userId;
}

function queryInt(q: URLSearchParams, name: string, min: number, max: number, dflt: number): number {
  const v = q.get(name);
  if (v === null) return dflt;
  if (!/^\d{1,15}$/.test(v)) throw new ApiError(400, 'bad_parameter', `${name} must be a whole number`);
  const n = Number(v);
  if (n < min || n > max)
    throw new ApiError(400, 'bad_parameter', `${name} must be between ${min} and ${max}`);
  return n;
}

const isStr = (v: unknown): v is string => typeof v === 'string';
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Checks the records of a delivered batch (400 on the first bad one). */
export function parseRecords(raw: unknown): DeliveryRecord[] {
  if (!Array.isArray(raw)) throw new ApiError(400, 'bad_field', 'records must be a list');
  return raw.map((r: unknown, i) => {
    const bad = (why: string) => new ApiError(400, 'bad_field', `records[${i}]: ${why}`);
    if (typeof r !== 'object' || r === null) throw bad('not an object');
    const o = r as Record<string, unknown>;
    if (!isStr(o.groupId) || !isGroupId(o.groupId)) throw bad('groupId');
    if (o.kind === 'head') {
      if (!isStr(o.epoch) || !isInt(o.lastMsgId)) throw bad('epoch, lastMsgId');
      return { kind: 'head', groupId: o.groupId, epoch: o.epoch, lastMsgId: o.lastMsgId };
    }
    if (!Array.isArray(o.recipients) || !o.recipients.every(isStr)) throw bad('recipients');
    if (typeof o.event !== 'object' || o.event === null || Array.isArray(o.event)) throw bad('event');
    const event = o.event as Record<string, unknown>;
    if (o.kind === 'typing' || o.kind === 'presence')
      return { kind: o.kind, groupId: o.groupId, recipients: o.recipients, event };
    if (o.kind === 'tick') {
      if (!isStr(o.epoch) || !isInt(o.lastMsgId) || (o.mode !== 'push' && o.mode !== 'pull'))
        throw bad('epoch, lastMsgId, mode');
      return {
        kind: 'tick',
        groupId: o.groupId,
        epoch: o.epoch,
        lastMsgId: o.lastMsgId,
        mode: o.mode,
        recipients: o.recipients,
        event,
      };
    }
    if (o.kind !== 'message') throw bad('kind');
    if (!isStr(o.epoch) || !isInt(o.msgId) || !isInt(o.prevMsgId)) throw bad('epoch, msgId, prevMsgId');
    if (o.live !== undefined && !(Array.isArray(o.live) && o.live.every(isStr))) throw bad('live');
    return {
      kind: 'message',
      groupId: o.groupId,
      epoch: o.epoch,
      msgId: o.msgId,
      prevMsgId: o.prevMsgId,
      recipients: o.recipients,
      ...(o.live === undefined ? {} : { live: o.live as string[] }),
      event,
    };
  });
}

async function dispatchDelivery(
  deps: InternalDeps,
  req: http.IncomingMessage,
  segs: string[],
  shardHeader: string | undefined,
): Promise<[number, unknown] | undefined> {
  const d = deps.delivery;
  if (!d) return undefined;
  // ['', 'internal', 'deliver']
  if (segs.length === 3 && segs[2] === 'deliver') {
    if (req.method !== 'POST') throw new ApiError(405, 'method_not_allowed', 'use POST to deliver');
    const body = await readJson(req, MAX_DELIVER_BODY);
    if (!isInt(body.from) || !isInt(body.seq))
      throw new ApiError(400, 'bad_field', 'from and seq must be whole numbers');
    const records = parseRecords(body.records);
    d.deliver(body.from, body.seq, records);
    return [200, { accepted: records.length }];
  }
  // ['', 'internal', 'groups', g, 'messages' | 'typing' | 'presence']
  if (segs.length !== 5 || segs[2] !== 'groups') return undefined;
  const raw = segs[3] as string;
  if (segs[4] === 'messages' && req.method === 'GET') {
    const g = memberGroup(deps, raw, shardHeader, undefined);
    const q = new URL(req.url ?? '/', 'http://shard').searchParams;
    const after = queryInt(q, 'after', 0, Number.MAX_SAFE_INTEGER, 0);
    const limit = queryInt(q, 'limit', 1, 1000, 200);
    const host = q.get('for') === null ? undefined : queryInt(q, 'for', 0, deps.own.shards - 1, 0);
    const messages = d.messagesAfter(g.id, after, limit);
    if (host === undefined) return [200, { messages }];
    const recipients = d.recipientsOn(g.id, host);
    return [200, { messages, recipients, live: d.liveOf(g.id, recipients) }];
  }
  if (segs[4] === 'messages' && req.method === 'POST') {
    const body = await readJson(req);
    const userId = bodyUserId(body);
    const g = memberGroup(deps, raw, shardHeader, userId);
    const { contents, clientMsgId } = body;
    const max = deps.cfg.shard.limits.maxMessageBytes;
    if (typeof contents !== 'string' || contents.trim() === '' || Buffer.byteLength(contents) > max)
      throw new ApiError(400, 'bad_field', `contents must be 1 to ${max} bytes of text`);
    if (typeof clientMsgId !== 'string' || !CLIENT_MSG_ID.test(clientMsgId))
      throw new ApiError(400, 'bad_field', 'clientMsgId must be 1 to 128 of A-Z a-z 0-9 . _ : -');
    const { message, created } = await d.post(g.id, userId, contents, clientMsgId);
    return [created ? 201 : 200, message];
  }
  if (segs[4] === 'presence' && req.method === 'POST') {
    const body = await readJson(req);
    const userId = bodyUserId(body);
    const { status, host } = body;
    if (status !== 'online' && status !== 'away' && status !== 'offline')
      throw new ApiError(400, 'bad_field', "status must be 'online', 'away' or 'offline'");
    if (!isInt(host) || host >= deps.own.shards)
      throw new ApiError(400, 'bad_field', 'host must be the ordinal of a shard');
    const g = memberGroup(deps, raw, shardHeader, undefined);
    // Non-members are ignored (the host reports what its clients follow, unchecked).
    const accepted = deps.store.isMember(g.id, userId);
    if (accepted) d.presence(g.id, userId, status, host);
    return [202, { groupId: g.id, accepted }];
  }
  if (segs[4] === 'typing' && req.method === 'POST') {
    const body = await readJson(req);
    const userId = bodyUserId(body);
    const g = memberGroup(deps, raw, shardHeader, userId);
    d.typing(g.id, userId);
    return [202, { groupId: g.id }];
  }
  return undefined;
}

async function dispatch(
  deps: InternalDeps,
  req: http.IncomingMessage,
  path: string,
): Promise<[number, unknown]> {
  const header = req.headers['x-shardchat-shard'];
  const shardHeader = typeof header === 'string' ? header : undefined;
  const segs = path.split('/');
  const delivered = await dispatchDelivery(deps, req, segs, shardHeader);
  if (delivered) return delivered;
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
        for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
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
    /** The error code the other shard answered, if any. */
    readonly code?: string,
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

  /** POST /internal/groups/{g}/messages on the group's shard: the stored message. */
  postMessage(
    ordinal: number,
    groupId: string,
    body: { userId: string; contents: string; clientMsgId: string },
  ): Promise<Message> {
    return this.callJson<Message>(
      ordinal,
      'POST',
      `/internal/groups/${encodeURIComponent(groupId)}/messages`,
      body,
    );
  }

  /** POST /internal/groups/{g}/typing: one attempt (typing is ephemeral). */
  async typing(ordinal: number, groupId: string, userId: string): Promise<void> {
    await this.callJson(
      ordinal,
      'POST',
      `/internal/groups/${encodeURIComponent(groupId)}/typing`,
      { userId },
      1,
    );
  }

  /** POST /internal/groups/{g}/presence: a presence report (retried: it is idempotent). */
  async presence(
    ordinal: number,
    groupId: string,
    body: { userId: string; status: 'online' | 'away' | 'offline'; host: number },
  ): Promise<void> {
    await this.callJson(ordinal, 'POST', `/internal/groups/${encodeURIComponent(groupId)}/presence`, body);
  }

  /** GET /internal/groups/{g}/messages?after=&limit=&for=: a repair page. */
  messagesAfter(
    ordinal: number,
    groupId: string,
    after: number,
    limit: number,
    host: number,
  ): Promise<{ messages: Message[]; recipients?: string[]; live?: string[] }> {
    return this.callJson(
      ordinal,
      'GET',
      `/internal/groups/${encodeURIComponent(groupId)}/messages?after=${after}&limit=${limit}&for=${host}`,
      undefined,
      1,
    );
  }

  /** POST /internal/deliver: one attempt (the fan-out retries the batch itself). */
  async deliver(ordinal: number, body: unknown): Promise<void> {
    await this.callJson(ordinal, 'POST', '/internal/deliver', body, 1);
  }

  /** One idempotent call, retried (bounded by `attempts`) on network errors, timeouts and 5xx. */
  private async call(ordinal: number, method: string, path: string, body?: unknown): Promise<void> {
    await this.callJson(ordinal, method, path, body);
  }

  /** One idempotent call with a JSON answer, retried on network errors, timeouts and 5xx. */
  async callJson<T = unknown>(
    ordinal: number,
    method: string,
    path: string,
    body?: unknown,
    attempts = this.attempts,
  ): Promise<T> {
    let last = '';
    for (let attempt = 1; attempt <= attempts; attempt++) {
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
      if (status >= 200 && status < 300) return (text ? JSON.parse(text) : undefined) as T;
      last = `${status} ${text.slice(0, 200)}`;
      // 429 rate_limited is the user's per-user message limit (shard/user-rate.ts): the
      // user is told at once, as on the group's shard; an immediate retry would only use
      // up more of the budget. Other 429s are retried.
      if (status < 500 && (status !== 429 || /"code"\s*:\s*"rate_limited"/.test(text))) {
        // 400/401/403/404/409/421: a retry gets the same answer
        let code: string | undefined;
        let message = last;
        try {
          const e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
          code = e?.code;
          if (e?.message) message = e.message;
        } catch {
          // not JSON
        }
        if (status !== 403 && status !== 404 && status !== 429)
          this.log.error(
            { shard: ordinal, method, path, status, body: text.slice(0, 200) },
            'internal call refused',
          );
        throw new InternalCallError(
          message === last ? `shard ${ordinal} answered ${last}` : message,
          status,
          code,
        );
      }
    }
    if (attempts > 1) this.log.warn({ shard: ordinal, method, path, attempts, last }, 'internal call failed');
    throw new InternalCallError(`shard ${ordinal} did not answer ${method} ${path} (${last})`, undefined);
  }
}
