/**
 * The session host's side of cross-shard delivery (docs/delivery-protocol.md section 3):
 * exactly once and in order per group. Per group the host keeps the last msgId it
 * delivered (`last`, with the epoch). A message record with `msgId <= last` is a
 * duplicate (dropped); one with `prevMsgId == last` (or the group's first record) is
 * delivered; anything else is a gap: the host fetches the missing range from the
 * group's shard before delivering anything newer of that group (later records of the
 * group wait; other groups do not). A head with `lastMsgId > last` triggers the same
 * repair; a head of a group with no state yet (e.g. after a restart) is taken like a
 * first record: its message is fetched and delivered. A new epoch resets the group's
 * state. Pure logic: I/O comes in as functions.
 *
 * Pull mode (section 7): a group's shard sends `tick` records instead of messages. A tick
 * moves `last` to its lastMsgId without delivering messages (the clients read them
 * with ?after=), so what was not pushed is never a gap; a repair under way stops. The
 * tick itself goes to the recipients when it announces something new or a change of
 * mode (repeated ticks are dropped). A tick with mode `push` ends pull mode: the next
 * message follows it. A message record or a head (both sent only in push mode) also
 * ends it, when the push tick was lost.
 */
import { backoffDelay } from '../../common/backoff.js';
import type { Message } from '../../common/protocol.js';
import type { DeliveryRecord, HeadRecord, MessageRecord, TickRecord } from './records.js';

export type { DeliveryRecord } from './records.js';

/** What a repair fetch answers: messages after `after` in msgId order, and the recipients on this host. */
export interface RepairPage {
  messages: Message[];
  recipients: string[];
  /** Of the recipients, those on a group WebSocket of the group's shard (not offline). */
  live?: string[];
}

export interface SequencerDeps {
  /** GET /internal/groups/{g}/messages?after=&limit= on the group's shard (or the local store). */
  fetch(groupId: string, after: number, limit: number): Promise<RepairPage>;
  /**
   * Hands an event to the recipients' inbox connections; `live` (messages only) names the
   * recipients connected to the group's own WebSockets, who are not offline either.
   */
  deliver(recipients: string[], event: Record<string, unknown>, live?: string[]): void;
  /** A gap (or a head ahead of `last`) started a repair. */
  onRepair?(groupId: string): void;
  onDuplicate?(groupId: string): void;
  /** A tick moved `last` past messages that were not pushed (pull mode). */
  onTick?(groupId: string): void;
  onRepairError?(groupId: string, err: unknown): void;
  /** Messages per repair fetch. */
  pageSize?: number;
  /** Backoff of a failed repair fetch. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Records of one group waiting behind a repair at most (more are fetched by the repair anyway). */
  maxPending?: number;
  /** Groups tracked at most (the least recently used are forgotten). */
  maxGroups?: number;
}

interface GroupState {
  epoch: string;
  /** The last msgId delivered (undefined: nothing yet in this epoch). */
  last: number | undefined;
  /** Records newer than `last` that wait behind a gap, by msgId. */
  pending: Map<number, MessageRecord>;
  /** The highest msgId known to exist (records and heads). */
  target: number;
  repairing: boolean;
  /** Bumped on every reset: a repair of an older generation stops. */
  gen: number;
  /** The group is in pull mode (its last tick said so). */
  pull: boolean;
  failures: number;
  timer: NodeJS.Timeout | undefined;
}

export class DeliverySequencer {
  private readonly groups = new Map<string, GroupState>();
  private readonly pageSize: number;
  private readonly maxPending: number;
  private readonly maxGroups: number;
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;
  private stopped = false;

  constructor(private readonly d: SequencerDeps) {
    this.pageSize = d.pageSize ?? 200;
    this.maxPending = d.maxPending ?? 10_000;
    this.maxGroups = d.maxGroups ?? 100_000;
    this.retryMinMs = d.retryMinMs ?? 100;
    this.retryMaxMs = d.retryMaxMs ?? 5000;
  }

  /** The last msgId delivered for a group and its epoch (tests, diagnostics). */
  state(
    groupId: string,
  ): { epoch: string; last: number | undefined; repairing: boolean; pull: boolean } | undefined {
    const st = this.groups.get(groupId);
    return st ? { epoch: st.epoch, last: st.last, repairing: st.repairing, pull: st.pull } : undefined;
  }

  accept(r: DeliveryRecord): void {
    if (this.stopped) return;
    if (r.kind === 'typing' || r.kind === 'presence') {
      this.d.deliver(r.recipients, r.event);
      return;
    }
    if (r.kind === 'head') {
      this.head(r);
      return;
    }
    if (r.kind === 'tick') {
      this.tick(r);
      return;
    }
    const st = this.stateFor(r.groupId, r.epoch);
    // Messages are pushed only in push mode: the tick that said so was lost.
    st.pull = false;
    if (st.last !== undefined && r.msgId <= st.last) {
      this.d.onDuplicate?.(r.groupId);
      return;
    }
    if (r.msgId > st.target) st.target = r.msgId;
    if (!st.repairing && (st.last === undefined || r.prevMsgId === st.last)) {
      this.deliverRecord(st, r);
      this.drain(r.groupId, st);
      return;
    }
    if (st.pending.size < this.maxPending) st.pending.set(r.msgId, r);
    if (!st.repairing) this.repair(r.groupId, st);
  }

  private head(h: HeadRecord): void {
    // Heads go only to hosts with members of the group. A group with no state here (the
    // first thing this host hears of it since it started, or a new epoch) starts at the
    // head as it would at a first record: the head's message is fetched and delivered,
    // and what came before it is the clients' catch-up (the gap before it tells them).
    // Ignoring the head instead would leave clients that caught up before the group's
    // last records were lost with nothing that tells them of those messages.
    const st = this.stateFor(h.groupId, h.epoch);
    // Heads are sent only in push mode: the tick that said so was lost.
    st.pull = false;
    if (st.last === undefined) {
      if (h.lastMsgId < 1) return;
      st.last = h.lastMsgId - 1;
    }
    if (h.lastMsgId > st.target) st.target = h.lastMsgId;
    if (h.lastMsgId > st.last && !st.repairing) this.repair(h.groupId, st);
  }

  private tick(t: TickRecord): void {
    const st = this.stateFor(t.groupId, t.epoch);
    const pull = t.mode === 'pull';
    const changed = st.pull !== pull;
    const ahead = st.last === undefined || t.lastMsgId > st.last;
    if (ahead) {
      // Up to lastMsgId the clients read for themselves: nothing of it is a gap here.
      if (st.repairing) {
        st.gen++;
        st.repairing = false;
        st.failures = 0;
        if (st.timer) clearTimeout(st.timer);
        st.timer = undefined;
      }
      st.last = t.lastMsgId;
      if (st.target < st.last) st.target = st.last;
      for (const k of st.pending.keys()) if (k <= st.last) st.pending.delete(k);
      this.d.onTick?.(t.groupId);
    }
    st.pull = pull;
    if (ahead || changed) this.d.deliver(t.recipients, t.event);
    else this.d.onDuplicate?.(t.groupId);
    // Back to push: pushed records that wait behind the tick follow it.
    if (!pull && st.pending.size > 0) this.drain(t.groupId, st);
  }

  private stateFor(groupId: string, epoch: string): GroupState {
    let st = this.groups.get(groupId);
    if (st) {
      // Most recently used last (Map order): the oldest are forgotten first.
      this.groups.delete(groupId);
      this.groups.set(groupId, st);
      if (st.epoch !== epoch) this.reset(st, epoch);
      return st;
    }
    st = {
      epoch,
      last: undefined,
      pending: new Map(),
      target: 0,
      repairing: false,
      gen: 0,
      pull: false,
      failures: 0,
      timer: undefined,
    };
    this.groups.set(groupId, st);
    if (this.groups.size > this.maxGroups) {
      for (const [g, old] of this.groups) {
        if (old.repairing) continue;
        this.groups.delete(g);
        break;
      }
    }
    return st;
  }

  private reset(st: GroupState, epoch: string): void {
    st.epoch = epoch;
    st.last = undefined;
    st.pending.clear();
    st.target = 0;
    st.repairing = false;
    st.gen++;
    st.pull = false;
    st.failures = 0;
    if (st.timer) clearTimeout(st.timer);
    st.timer = undefined;
  }

  private deliverRecord(st: GroupState, r: MessageRecord): void {
    st.last = r.msgId;
    this.d.deliver(r.recipients, r.event, r.live);
  }

  /** Delivers the waiting records that now follow `last`; repairs when a gap remains. */
  private drain(groupId: string, st: GroupState): void {
    for (;;) {
      if (st.last === undefined) return;
      for (const k of st.pending.keys()) if (k <= st.last) st.pending.delete(k);
      const next = st.pending.get(st.last + 1);
      if (!next || next.prevMsgId !== st.last) break;
      st.pending.delete(next.msgId);
      this.deliverRecord(st, next);
    }
    if (st.last !== undefined && (st.pending.size > 0 || st.target > st.last)) this.repair(groupId, st);
  }

  /** Fetches what follows `last` from the group's shard until the known target is reached. */
  private repair(groupId: string, st: GroupState): void {
    if (st.repairing || this.stopped) return;
    st.repairing = true;
    this.d.onRepair?.(groupId);
    void this.runRepair(groupId, st, st.gen);
  }

  private async runRepair(groupId: string, st: GroupState, gen: number): Promise<void> {
    try {
      for (let rounds = 0; rounds < 10_000; rounds++) {
        const after = st.last ?? 0;
        const page = await this.d.fetch(groupId, after, this.pageSize);
        if (st.gen !== gen || this.stopped) return;
        let progressed = false;
        for (const m of page.messages) {
          if (m.epoch !== st.epoch) {
            // The group's history began again: start over with the new epoch.
            this.reset(st, m.epoch);
            return;
          }
          if (st.last !== undefined && m.msgId <= st.last) continue;
          if (st.last !== undefined && m.prevMsgId !== st.last) break;
          const rec = st.pending.get(m.msgId);
          st.pending.delete(m.msgId);
          st.last = m.msgId;
          if (rec) this.d.deliver(rec.recipients, rec.event, rec.live);
          else this.d.deliver(page.recipients, { type: 'message', ...m }, page.live);
          progressed = true;
        }
        st.failures = 0;
        const last = st.last ?? 0;
        for (const k of st.pending.keys()) if (k <= last) st.pending.delete(k);
        const more = page.messages.length >= this.pageSize || st.pending.size > 0 || st.target > last;
        if (!progressed || !more) {
          // Nothing newer is stored (a head or record ahead of the store cannot happen; be safe).
          if (st.target > last) st.target = last;
          st.pending.clear();
          break;
        }
      }
      st.repairing = false;
    } catch (err) {
      if (st.gen !== gen || this.stopped) return;
      this.d.onRepairError?.(groupId, err);
      st.failures++;
      const delay = backoffDelay(st.failures - 1, { minMs: this.retryMinMs, maxMs: this.retryMaxMs });
      st.timer = setTimeout(() => {
        st.timer = undefined;
        if (st.gen !== gen || this.stopped) return;
        st.repairing = false;
        this.repair(groupId, st);
      }, delay);
      st.timer.unref?.();
    }
  }

  stop(): void {
    this.stopped = true;
    for (const st of this.groups.values()) if (st.timer) clearTimeout(st.timer);
  }
}
