/**
 * The coordinator's calls to the shards' admin ports (`/internal/reshard/*`, with the
 * internal token). A shard that does not answer (restarting, not started yet) is asked
 * again with backoff until a deadline; a 4xx answer is final and carries the shard's
 * error code, message and details.
 */
import { backoffDelay, NO_JITTER } from '../../common/backoff.js';
import { INTERNAL_TOKEN_HEADER } from '../../common/protocol.js';

export class ShardCallError extends Error {
  override name = 'ShardCallError';
  constructor(
    message: string,
    readonly shard: number,
    readonly status: number | undefined,
    readonly code?: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface ShardCallsOptions {
  /** The admin base URL of a shard. */
  adminOf(ordinal: number): string | undefined;
  token: string;
  /** One call's timeout. */
  timeoutMs?: number;
  /** How long a shard may stay unreachable before a call fails. */
  unreachableMs?: number;
  /** Told once per wait for an unreachable shard. */
  waiting?(shard: number, why: string): void;
}

export class ShardCalls {
  constructor(private readonly o: ShardCallsOptions) {}

  async call<T>(
    shard: number,
    method: string,
    path: string,
    body?: unknown,
    opts: { unreachableMs?: number } = {},
  ): Promise<T> {
    const base = this.o.adminOf(shard);
    if (!base)
      throw new ShardCallError(
        `shard ${shard} has no admin address in the configuration (topology.adminTargets or adminTemplate)`,
        shard,
        undefined,
      );
    const deadline = Date.now() + (opts.unreachableMs ?? this.o.unreachableMs ?? 120_000);
    let told = false;
    for (let attempt = 0; ; attempt++) {
      let why: string;
      try {
        const res = await fetch(`${base}/internal/reshard/${path}`, {
          method,
          headers: {
            [INTERNAL_TOKEN_HEADER]: this.o.token,
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(this.o.timeoutMs ?? 60_000),
        });
        const text = await res.text();
        if (res.ok) return JSON.parse(text) as T;
        if (res.status < 500) {
          let e: { code?: string; message?: string; details?: unknown } = {};
          try {
            e = (JSON.parse(text) as { error?: typeof e }).error ?? {};
          } catch {
            // not JSON
          }
          throw new ShardCallError(
            `shard ${shard}: ${e.message ?? `${res.status} ${text.slice(0, 200)}`}`,
            shard,
            res.status,
            e.code,
            e.details,
          );
        }
        why = `${res.status} ${text.slice(0, 200)}`;
      } catch (err) {
        if (err instanceof ShardCallError) throw err;
        const e = err as Error & { cause?: { code?: string } };
        why = e.cause?.code ?? e.name;
      }
      if (Date.now() >= deadline)
        throw new ShardCallError(
          `shard ${shard} did not answer ${method} ${path} (${why})`,
          shard,
          undefined,
        );
      if (!told) {
        this.o.waiting?.(shard, why);
        told = true;
      }
      await sleep(backoffDelay(attempt, { minMs: 100, maxMs: 2000, jitter: NO_JITTER }));
    }
  }
}
