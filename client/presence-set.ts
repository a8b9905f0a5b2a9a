/**
 * Who is online in one group, from two sources: snapshots (`GET /groups/{id}/presence`)
 * and `presence` events. A snapshot is read over HTTP while events keep arriving on the
 * socket, so it can reach the client after an event newer than itself: the events that
 * arrive while a snapshot is being read are applied again on top of it, in order.
 */
export class PresenceSet {
  private readonly online = new Set<string>();
  /** Events since the oldest snapshot still being read (none are kept otherwise). */
  private log: { userId: string; on: boolean }[] = [];
  /** The position of log[0] among all events kept, and how many were kept. */
  private base = 0;
  private kept = 0;
  private reading = 0;

  users(): string[] {
    return [...this.online];
  }

  has(userId: string): boolean {
    return this.online.has(userId);
  }

  get size(): number {
    return this.online.size;
  }

  add(userId: string): void {
    this.online.add(userId);
  }

  /** Takes `users` as they are (a copy of another set's state). */
  replace(users: Iterable<string>): void {
    this.online.clear();
    for (const u of users) this.online.add(u);
  }

  /** Nobody known to be online (a disconnect); snapshots being read still apply. */
  clear(): void {
    this.online.clear();
  }

  /** A presence event: `userId` came online or went offline. */
  event(userId: string, on: boolean): void {
    if (on) this.online.add(userId);
    else this.online.delete(userId);
    if (this.reading > 0) {
      this.log.push({ userId, on });
      this.kept++;
    }
  }

  /** A snapshot is being read; pass the result to `snapshot` and always call `done`. */
  begin(): number {
    this.reading++;
    return this.kept;
  }

  /** The snapshot read since `from`: it replaces what is known, then the events since are applied again. */
  snapshot(from: number, users: Iterable<string>): void {
    this.replace(users);
    for (let i = Math.max(0, from - this.base); i < this.log.length; i++) {
      const e = this.log[i] as { userId: string; on: boolean };
      if (e.on) this.online.add(e.userId);
      else this.online.delete(e.userId);
    }
  }

  /** The snapshot begun at `from` is over (applied, stale or failed). */
  done(): void {
    this.reading--;
    if (this.reading <= 0) {
      this.reading = 0;
      this.log = [];
      this.base = this.kept;
    }
  }
}
