/**
 * Calls from this shard to another's admin port (`/internal/*`, docs/architecture.md
 * sections 5 and 6), each with the internal token and this shard's view of the map
 * (`x-shardchat-shard: <ordinal>/<S>`, so the other shard answers 421 when they
 * disagree). Idempotent calls are retried with backoff on network errors, timeouts and
 * 5xx; an answer retrying cannot change (4xx) fails at once.
 */
import { backoffDelay, NO_JITTER } from '../../common/backoff.js';
import type { Config } from '../../common/config.js';
import type { Logger } from '../../common/logger.js';
import { INTERNAL_TOKEN_HEADER, type Message, SHARD_HEADER } from '../../common/protocol.js';
import { expandTemplate, staticEndpoints, type Topology } from '../../common/topology.js';
import type { DeliveryBatch } from '../delivery/records.js';
import type { MembershipChange } from '../storage/store.js';
import type { Ownership } from './ownership.js';
import type { SubSpec } from './subconversations.js';

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

/**
 * Static mode: a shard's admin address from `adminTargets`, or from `adminTemplate` for
 * any ordinal (a cluster grown by resharding has more shards than configured).
 */
export function staticAdminOf(
  cfg: Config,
  log: Pick<Logger, 'error'>,
): (ordinal: number) => string | undefined {
  const t = cfg.topology;
  if (t.targets.length === 0 && t.adminTemplate) {
    const template = t.adminTemplate;
    return (o) => new URL(expandTemplate(template, o, t.namespace)).origin;
  }
  let admin: (string | undefined)[];
  try {
    admin = staticEndpoints(cfg).map((e) => e.admin);
  } catch (err) {
    // no usable addresses: every call to another shard fails (503 to the client)
    log.error({ err: (err as Error).message }, 'cannot tell the admin addresses of the other shards');
    admin = [];
  }
  return (o) => admin[o];
}

/** 421 answers followed per call at most. */
const MAX_HOPS = 3;

/** The owner a 421 answer names, when it is another shard than the one asked. */
function misdirectedOwner(text: string, asked: number): number | undefined {
  try {
    const owner = (JSON.parse(text) as { error?: { details?: { owner?: unknown } } }).error?.details?.owner;
    return typeof owner === 'number' && Number.isInteger(owner) && owner >= 0 && owner !== asked
      ? owner
      : undefined;
  } catch {
    return undefined;
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
      this.adminOf = staticAdminOf(cfg, log);
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

  /** POST /internal/user-groups: one attempt (the outbox retries the changes itself). */
  async userGroups(ordinal: number, changes: MembershipChange[]): Promise<void> {
    await this.callJson(ordinal, 'POST', '/internal/user-groups', { changes }, 1);
  }

  /** POST /internal/deliver: one attempt (the fan-out retries the batch itself). */
  async deliver(ordinal: number, body: DeliveryBatch): Promise<void> {
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
    let hops = 0;
    let shard = ordinal;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1)
        await sleep(
          backoffDelay(attempt - 2, {
            minMs: this.backoffMs,
            maxMs: Number.POSITIVE_INFINITY,
            jitter: NO_JITTER,
          }),
        );
      // Looked up on every attempt: in kubernetes mode a restarted pod has a new IP.
      const base = this.adminOf(shard);
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
            [SHARD_HEADER]: `${shard}/${this.own.shards}`,
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
      // 421: nothing was written, and the answer names the owner under a newer map
      // (a migration switched): the same call goes there, without counting an attempt.
      const owner = status === 421 && hops < MAX_HOPS ? misdirectedOwner(text, shard) : undefined;
      if (owner !== undefined) {
        hops++;
        attempt--;
        shard = owner;
        continue;
      }
      // 429 rate_limited is the user's per-user message limit (shard/messages/user-rate.ts): the
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
          this.log.error({ shard, method, path, status, body: text.slice(0, 200) }, 'internal call refused');
        throw new InternalCallError(
          message === last ? `shard ${shard} answered ${last}` : message,
          status,
          code,
        );
      }
    }
    if (attempts > 1) this.log.warn({ shard, method, path, attempts, last }, 'internal call failed');
    throw new InternalCallError(`shard ${shard} did not answer ${method} ${path} (${last})`, undefined);
  }
}
