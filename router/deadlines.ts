/**
 * Coarse deadlines for the router's connections. Instead of arming a timer per socket
 * and request (node's socket timeouts re-arm on every read and write), the hot path
 * stores a number, and one interval sweeps the connections. Timeouts fire within one
 * resolution step (plus any event-loop delay) after their nominal value, never before.
 */

export interface Expirable {
  /** Milliseconds since the epoch when this expires; 0 for never. */
  deadline: number;
  expire(): void;
}

export class DeadlineSweeper {
  /**
   * The time, read when a deadline is set. (A clock that only the sweep advanced ran
   * behind by a step plus any event-loop delay, a second or more on a busy machine:
   * deadlines set from it expired that much early, and an upstream still sending was
   * timed out. Date.now() costs tens of nanoseconds.)
   */
  get now(): number {
    return Date.now();
  }
  private readonly sources: Iterable<Expirable>[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly resolutionMs: number) {}

  /** Resolution for a set of timeouts: a quarter of the shortest, between 5 and 250 ms. */
  static resolutionFor(timeoutsMs: number[]): number {
    return Math.max(5, Math.min(250, Math.floor(Math.min(...timeoutsMs) / 4)));
  }

  watch(source: Iterable<Expirable>): void {
    this.sources.push(source);
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.sweep(), this.resolutionMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  sweep(): void {
    const now = Date.now();
    const due: Expirable[] = [];
    for (const source of this.sources) {
      for (const item of source) if (item.deadline !== 0 && item.deadline <= now) due.push(item);
    }
    if (due.length === 0) return;
    // Expired after this turn's I/O has been read (setImmediate runs after the poll phase,
    // and the sweep in the timers phase before it): when the router itself was held up (a
    // busy machine), an upstream's bytes may be waiting unread in its socket; reading them
    // moves its deadline, and it is not timed out for the router's own delay.
    setImmediate(() => {
      // Expire outside the iteration: expiring removes items from their sets.
      for (const item of due) {
        if (item.deadline !== 0 && item.deadline <= now) {
          item.deadline = 0;
          item.expire();
        }
      }
    });
  }
}
