/** An error answered by shardchat (`{error: {code, message}}`) or met on the way to it. */
export class ShardChatError extends Error {
  constructor(
    /** HTTP status; 0 when no answer arrived (network error). */
    readonly status: number,
    readonly code: string,
    message: string,
    /** Seconds to wait before retrying, from `Retry-After`, when the server sent one. */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'ShardChatError';
  }

  /** Whether trying again later can succeed (network errors, 5xx, 429), as opposed to a refusal. */
  get retryable(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}
