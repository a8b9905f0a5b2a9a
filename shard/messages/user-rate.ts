/**
 * The per-user message rate limit (`shard.limits.userMessagesPerSecond`,
 * `userMessageBurst`, `userRateMaxUsers`), applied on the shard that owns the group: one
 * token bucket per userId, shared by every way a message reaches that shard (HTTP
 * `POST …/messages`, group WebSocket `message` events, and posts forwarded from the
 * user's inbox host over `/internal/*`). A user with two connections and an HTTP client
 * has one budget. Every attempt costs a token, a retried clientMsgId included.
 *
 * Memory is bounded: the buckets are kept in order of last use, and a bucket that has
 * refilled completely (idle for burst / rate seconds) equals a fresh one, so it is
 * dropped; past `maxUsers` the least recently used bucket is dropped as well (that user
 * starts again with a full burst, which only matters when more than `maxUsers` users post
 * within burst / rate seconds).
 */
import { ApiError } from '../../common/http-answers.js';

interface Bucket {
  tokens: number;
  /** performance.now() of the last refill. */
  at: number;
}

export interface UserRateOptions {
  perSecond: number;
  burst: number;
  maxUsers: number;
  /** Milliseconds, monotonic (tests may pass their own clock). */
  now?: () => number;
}

export class UserRateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly now: () => number;
  /** After this long unused, a bucket is full again: the same as no bucket. */
  private readonly idleMs: number;

  constructor(private readonly o: UserRateOptions) {
    this.now = o.now ?? (() => performance.now());
    this.idleMs = (o.burst / o.perSecond) * 1000;
  }

  /** Buckets held now. */
  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token for `userId`: 0 when the message may go ahead, else the whole seconds until a token is there (at least 1). */
  take(userId: string): number {
    const now = this.now();
    this.dropIdle(now);
    let b = this.buckets.get(userId);
    if (b) {
      // Re-inserted below, so that the map stays in order of last use.
      this.buckets.delete(userId);
      b.tokens = Math.min(this.o.burst, b.tokens + ((now - b.at) / 1000) * this.o.perSecond);
      b.at = now;
    } else {
      if (this.buckets.size >= this.o.maxUsers) {
        const oldest = this.buckets.keys().next().value;
        if (oldest !== undefined) this.buckets.delete(oldest);
      }
      b = { tokens: this.o.burst, at: now };
    }
    this.buckets.set(userId, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.o.perSecond));
  }

  /** Takes a token or throws 429 `rate_limited` with Retry-After. */
  admit(userId: string): void {
    const wait = this.take(userId);
    if (wait === 0) return;
    throw new ApiError(
      429,
      'rate_limited',
      `too many messages from ${userId}: at most ${this.o.perSecond} per second (bursts of ${this.o.burst}); try again in ${wait} s`,
      { 'retry-after': String(wait) },
    );
  }

  /** Drops the least recently used buckets that have refilled completely. */
  private dropIdle(now: number): void {
    for (const [id, b] of this.buckets) {
      if (now - b.at < this.idleMs) return;
      this.buckets.delete(id);
    }
  }
}
