/**
 * The one entry of a message (docs/architecture.md section 4). Whichever way a message
 * comes in (HTTP POST, a group WebSocket, an inbox WebSocket on the user's session host,
 * a post forwarded by another shard), it is checked here (checkMessage), and then either
 * forwarded to the group's shard, or, on the group's shard, checked for membership,
 * charged to the user's message budget (429 past it) and appended: the answer waits for
 * the commit. What the commit stores is told by the store's `committed` event.
 */
import type { Config } from '../../common/config.js';
import { ApiError } from '../../common/http-answers.js';
import type { Message } from '../../common/protocol.js';
import { requireMemberOf } from '../access.js';
import { InternalCallError, type InternalClient } from '../cluster/internal-client.js';
import type { Ownership } from '../cluster/ownership.js';
import type { ShardMetrics } from '../metrics.js';
import type { Store } from '../storage/store.js';
import type { UserRateLimiter } from './user-rate.js';
import { checkMessage } from './validate.js';

export interface PostedMessage {
  groupId: string;
  userId: string;
  contents: unknown;
  clientMsgId: unknown;
}

export interface Posted {
  message: Message;
  /** False for a repeated clientMsgId (the first result); undefined when forwarded. */
  created: boolean | undefined;
}

export interface IntakeDeps {
  cfg: Config;
  store: Store;
  own: Ownership;
  internal: InternalClient;
  rate: UserRateLimiter;
  metrics: ShardMetrics;
}

export class MessageIntake {
  private readonly maxBytes: number;

  constructor(private readonly d: IntakeDeps) {
    this.maxBytes = d.cfg.shard.limits.maxMessageBytes;
  }

  /**
   * Takes a message from a user: resolves once it is durable on the group's shard.
   * `memberChecked`: the caller has just checked the membership (the public route,
   * which answers 403 before it reads the body).
   */
  async post(p: PostedMessage, o: { memberChecked?: boolean; admitted?: boolean } = {}): Promise<Posted> {
    const { contents, clientMsgId } = checkMessage(p.contents, p.clientMsgId, this.maxBytes);
    const owner = this.d.own.ownerOf(p.groupId);
    if (owner !== this.d.own.ordinal) return this.forward(owner, p.groupId, p.userId, contents, clientMsgId);
    // A write of a group that is moving away is held while it is fenced (the routes that
    // call with `admitted` did so for the whole request).
    const release = o.admitted ? undefined : await this.d.own.admit(p.groupId);
    try {
      if (!o.memberChecked) requireMemberOf(this.d.store, p.groupId, p.userId);
      try {
        this.d.rate.admit(p.userId);
      } catch (err) {
        this.d.metrics.rateLimited.inc();
        throw err;
      }
      return await this.d.store.append(p.groupId, p.userId, contents, clientMsgId);
    } finally {
      release?.();
    }
  }

  private async forward(
    owner: number,
    groupId: string,
    userId: string,
    contents: string,
    clientMsgId: string,
  ): Promise<Posted> {
    try {
      const message = await this.d.internal.postMessage(owner, groupId, { userId, contents, clientMsgId });
      return { message, created: undefined };
    } catch (err) {
      throw remoteError(err);
    }
  }
}

/** An internal call's failure as the answer to the client (the group's shard's code when it gave one). */
export function remoteError(err: unknown): unknown {
  if (!(err instanceof InternalCallError)) return err;
  const code =
    err.code ?? (err.status === 403 ? 'forbidden' : err.status === 404 ? 'not_found' : 'unavailable');
  return new ApiError(err.status ?? 503, code, err.message);
}
