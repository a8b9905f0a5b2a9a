/**
 * Reconnect delays: exponential growth from `minMs` to `maxMs` with "equal jitter"
 * (half the delay fixed, half random), so that clients cut off together by one shard
 * restart do not all come back in the same instant.
 */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  factor: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { minMs: 250, maxMs: 10_000, factor: 2 };

export class Backoff {
  private attempt = 0;

  constructor(
    private readonly o: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; each call grows it until `maxMs`. */
  next(): number {
    const cap = Math.min(this.o.maxMs, this.o.minMs * this.o.factor ** this.attempt);
    this.attempt++;
    return Math.round(cap / 2 + (this.random() * cap) / 2);
  }

  /** Called once a connection has proved healthy: the next failure starts from `minMs`. */
  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
