/**
 * Long-poll waits on a group's history (`GET …/messages?after=N&wait=S`): every
 * request waiting on a group is woken by one notification when a message commits
 * (one wake-up shared by all of them; they then read the new messages, from memory
 * while the range is recent: shard/delivery/recent.ts).
 */

type Wake = () => void;

export class GroupWaiters {
  private readonly byGroup = new Map<string, Set<Wake>>();
  private count = 0;

  constructor(
    private readonly maxWaiters: number,
    /** Told the number of waiting requests whenever it changes (metrics). */
    private readonly onCount?: (waiting: number) => void,
  ) {}

  get waiting(): number {
    return this.count;
  }

  /** Resolves true when the group got a message, false on timeout or when `signal` aborts. */
  wait(groupId: string, ms: number, signal: AbortSignal): Promise<boolean> {
    if (this.count >= this.maxWaiters) return Promise.resolve(false);
    return new Promise((resolve) => {
      let set = this.byGroup.get(groupId);
      if (!set) {
        set = new Set();
        this.byGroup.set(groupId, set);
      }
      const done = (woken: boolean) => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        if (set.delete(wake)) {
          this.count--;
          this.onCount?.(this.count);
        }
        if (set.size === 0) this.byGroup.delete(groupId);
        resolve(woken);
      };
      const wake = () => done(true);
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), ms);
      signal.addEventListener('abort', onAbort);
      set.add(wake);
      this.count++;
      this.onCount?.(this.count);
    });
  }

  /** Wakes the waiters of the groups of committed messages; returns how many groups had some. */
  committed(messages: readonly { groupId: string }[]): number {
    let woken = 0;
    for (const m of messages) if (this.notify(m.groupId) > 0) woken++;
    return woken;
  }

  /** Wakes everyone waiting on the group; returns how many were woken. */
  notify(groupId: string): number {
    const set = this.byGroup.get(groupId);
    if (!set) return 0;
    const all = [...set];
    for (const wake of all) wake();
    return all.length;
  }
}
