/**
 * Capped exponential backoff with jitter, the one definition used by the SDK's
 * reconnects, the shards' retries (fan-out batches, gap repairs, internal calls) and the
 * Kubernetes watch restarts. Attempt n (from 0) waits `min(maxMs, minMs * factor^n)`
 * scaled by a random factor in `jitter` ([0.5, 1] by default, "equal jitter": half the
 * delay fixed, half random), so that clients cut off together do not return together.
 * Nothing here needs Node.js (the browser bundle uses it).
 */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** The delay is the capped value times a random number in [low, high] (default [0.5, 1]). */
  jitter?: readonly [number, number];
}

export const EQUAL_JITTER: readonly [number, number] = [0.5, 1];
export const NO_JITTER: readonly [number, number] = [1, 1];

export const DEFAULT_BACKOFF = { minMs: 250, maxMs: 10_000, factor: 2 } satisfies BackoffOptions;

/** The capped, unjittered delay of attempt `attempt` (0 for the first). */
export function backoffCap(attempt: number, o: BackoffOptions): number {
  return Math.min(o.maxMs, o.minMs * (o.factor ?? 2) ** Math.min(attempt, 64));
}

/** The delay before attempt `attempt` (0 for the first), in whole milliseconds. */
export function backoffDelay(attempt: number, o: BackoffOptions, random: () => number = Math.random): number {
  const [low, high] = o.jitter ?? EQUAL_JITTER;
  return Math.round(backoffCap(attempt, o) * (low + random() * (high - low)));
}

/** A sequence of growing delays, reset once a connection has proved healthy. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly o: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; each call grows it until `maxMs`. */
  next(): number {
    return backoffDelay(this.attempt++, this.o, this.random);
  }

  /** The next failure starts from `minMs` again. */
  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
