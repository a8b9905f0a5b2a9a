/**
 * Recent history in memory (docs/architecture.md section 6: pull mode moves the load to reads). The
 * group's shard keeps, per group, a ring of the last `messagesPerGroup` committed
 * messages, fed in commit order by the store's commit hook. `GET …/messages?after=N`
 * is answered from the ring when the ring holds every message after N (N at least the
 * msgId before the ring's oldest); otherwise, and for `before=`, SQLite answers. The
 * ring always ends at the group's last committed message, so both give the same page.
 *
 * Bounded twice: messages per group, and bytes over all groups (`maxBytes`, the least
 * recently written groups dropped first). A ring starts with the first message
 * committed after the process started (or after it was dropped): older ranges are read
 * from SQLite.
 */
import type { Message } from '../../common/protocol.js';

/** Bytes a message is counted for besides its contents and ids. */
const OVERHEAD_BYTES = 160;

function sizeOf(m: Message): number {
  return OVERHEAD_BYTES + m.contents.length * 2 + m.userId.length + m.clientMsgId.length + m.epoch.length;
}

interface Ring {
  epoch: string;
  /** Circular buffer of `capacity` slots; `count` messages from `start`. */
  slots: (Message | undefined)[];
  start: number;
  count: number;
  bytes: number;
}

export class RecentMessages {
  private readonly rings = new Map<string, Ring>();
  private bytesNow = 0;

  constructor(
    private readonly perGroup: number,
    private readonly maxBytes: number,
  ) {}

  /** Bytes counted over all rings. */
  get bytes(): number {
    return this.bytesNow;
  }

  get groups(): number {
    return this.rings.size;
  }

  /** A committed message (every one, in commit order per group). */
  /** A commit's messages, in commit order. */
  addAll(messages: readonly Message[]): void {
    for (const m of messages) this.add(m);
  }

  add(m: Message): void {
    if (this.perGroup === 0) return;
    let r = this.rings.get(m.groupId);
    if (r) {
      this.rings.delete(m.groupId);
      const last = r.count > 0 ? this.at(r, r.count - 1) : undefined;
      if (r.epoch !== m.epoch || (last !== undefined && m.prevMsgId !== last.msgId)) {
        // Not the next message of the ring: start over (never a ring with a hole).
        this.bytesNow -= r.bytes;
        r = undefined;
      }
    }
    if (!r) r = { epoch: m.epoch, slots: new Array(this.perGroup), start: 0, count: 0, bytes: 0 };
    // Most recently written last (Map order): the oldest are dropped first.
    this.rings.set(m.groupId, r);
    const size = sizeOf(m);
    if (r.count === this.perGroup) {
      const old = r.slots[r.start] as Message;
      r.bytes -= sizeOf(old);
      this.bytesNow -= sizeOf(old);
      r.slots[r.start] = m;
      r.start = (r.start + 1) % this.perGroup;
    } else {
      r.slots[(r.start + r.count) % this.perGroup] = m;
      r.count++;
    }
    r.bytes += size;
    this.bytesNow += size;
    while (this.bytesNow > this.maxBytes && this.rings.size > 0) {
      const oldest = this.rings.keys().next().value as string;
      this.drop(oldest);
    }
  }

  /** Forgets a group's ring. */
  drop(groupId: string): void {
    const r = this.rings.get(groupId);
    if (!r) return;
    this.rings.delete(groupId);
    this.bytesNow -= r.bytes;
  }

  /**
   * The messages after `after` in msgId order (at most `limit`), or undefined when the
   * ring does not hold all of them (read SQLite instead).
   */
  after(groupId: string, after: number, limit: number): Message[] | undefined {
    const r = this.rings.get(groupId);
    if (!r || r.count === 0) return undefined;
    const first = this.at(r, 0);
    if (after < first.prevMsgId) return undefined;
    const skip = after - first.prevMsgId;
    const out: Message[] = [];
    for (let i = skip; i < r.count && out.length < limit; i++) out.push(this.at(r, i));
    return out;
  }

  private at(r: Ring, i: number): Message {
    return r.slots[(r.start + i) % this.perGroup] as Message;
  }
}
