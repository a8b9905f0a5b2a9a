/**
 * Fan-out from a group's shard to the members' session hosts (docs/delivery-protocol.md
 * section 2). After a message is stored, one record per destination shard (the
 * session hosts `shard(userId)` of the members, with the recipients there) is queued;
 * each destination's queue leaves in batches (`batchMs` + random jitter, sooner at
 * `maxBatch`), one POST /internal/deliver in flight per destination, a failed batch
 * retried with capped exponential backoff while later records wait behind it. Queues
 * are bounded (the oldest records are dropped and counted) and never block the posting
 * client or the other destinations. The local session host gets its records without
 * HTTP. Heads (anti-entropy) go every `headsMs` for groups active in the last 10 s.
 *
 * Groups in pull mode (shard/delivery/modes.ts) send `tick` records instead of messages;
 * for them the anti-entropy repeats the last tick (a host that already had it drops it).
 */
import { EventEmitter } from 'node:events';
import { backoffDelay } from '../../common/backoff.js';
import type { Config } from '../../common/config.js';
import type { Logger } from '../../common/logger.js';
import type { Message } from '../../common/protocol.js';
import type { ShardMetrics } from '../metrics.js';
import type { MemberCache } from './member-cache.js';
import type { Tick } from './modes.js';
import {
  type DeliveryBatch,
  type DeliveryRecord,
  eventRecord,
  headRecord,
  messageRecord,
  tickRecord,
} from './records.js';

/** How long after its last message a group still gets heads. */
export const HEADS_WINDOW_MS = 10_000;
/** Bytes of records per batch at most (the receiver refuses bodies past MAX_DELIVER_BODY). */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;

/** Sends one batch to a destination's /internal/deliver; rejects when it was not accepted. */
export type BatchSender = (dest: number, body: DeliveryBatch) => Promise<void>;

/** A batch the destination refused for good (4xx): retrying cannot help. */
export class BatchRejected extends Error {
  override name = 'BatchRejected';
}

export interface FanoutOptions {
  cfg: Config;
  log: Logger;
  /** This shard's ordinal (its own session host gets records without HTTP). */
  ordinal: number;
  metrics: ShardMetrics;
  members: MemberCache;
  send: BatchSender;
  /**
   * Of these members, those with a live WebSocket to the group on this shard: sent with
   * each message so that session hosts do not notify them as offline. Absent: not sent.
   */
  liveOf?(groupId: string, userIds: string[]): string[];
  /** SHARDCHAT_TEST_FAULTS=1: honour cfg.shard.fanout.faults. */
  faultsEnabled: boolean;
  random?: () => number;
}

interface Queued {
  record: DeliveryRecord;
  bytes: number;
}

interface Destination {
  dest: number;
  label: string;
  queue: Queued[];
  /** The batch being sent (kept until it is accepted, dropped or given up). */
  inFlight: Queued[] | undefined;
  timer: NodeJS.Timeout | undefined;
  seq: number;
  failures: number;
}

interface Recent {
  epoch: string;
  /** The last msgId sent to the destinations (in a message or a tick). */
  lastMsgId: number;
  at: number;
  dests: Set<number>;
  /** The group is in pull mode: the anti-entropy repeats its last tick instead of a head. */
  pull: boolean;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

export interface FanoutEvents {
  /** A record for this shard's own session host (no HTTP, no batching). */
  local: [DeliveryRecord];
}

export class Fanout extends EventEmitter<FanoutEvents> {
  private readonly dests = new Map<number, Destination>();
  private readonly recent = new Map<string, Recent>();
  private readonly headsTimer: NodeJS.Timeout;
  private readonly random: () => number;
  private stopped = false;

  constructor(private readonly o: FanoutOptions) {
    super();
    this.random = o.random ?? Math.random;
    this.headsTimer = setInterval(() => this.heads(), o.cfg.shard.fanout.headsMs);
    this.headsTimer.unref();
  }

  /** Queues a stored message for every session host of the group's members. Never throws. */
  published(m: Message): void {
    if (this.stopped) return;
    const byHost = this.hostsOf(m.groupId);
    if (!byHost) return;
    const rec = this.recentOf(m.groupId, m.epoch, m.msgId, false);
    const bytes = Buffer.byteLength(m.contents) + 400;
    for (const [host, recipients] of byHost) {
      rec.dests.add(host);
      const live = this.o.liveOf?.(m.groupId, recipients);
      this.enqueue(
        host,
        messageRecord(m, recipients, live),
        bytes + (recipients.length + (live?.length ?? 0)) * 40,
      );
    }
  }

  /** Queues a tick (pull mode, or a switch of mode) for every session host of the group's members. */
  tick(t: Tick): void {
    if (this.stopped) return;
    const byHost = this.hostsOf(t.groupId);
    if (!byHost) return;
    const rec = this.recentOf(t.groupId, t.epoch, t.lastMsgId, t.mode === 'pull');
    for (const [host, recipients] of byHost) {
      rec.dests.add(host);
      this.enqueue(host, tickRecord(t, recipients), 250 + recipients.length * 40);
    }
  }

  /** The group's members by session host; undefined (logged) when they cannot be read. */
  private hostsOf(groupId: string): Map<number, string[]> | undefined {
    try {
      return this.o.members.byHost(groupId);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, groupId }, 'fan-out: cannot read members');
      return undefined;
    }
  }

  /** What the destinations were last sent of a group (for the anti-entropy). */
  private recentOf(groupId: string, epoch: string, lastMsgId: number, pull: boolean): Recent {
    let rec = this.recent.get(groupId);
    if (!rec) {
      rec = { epoch, lastMsgId, at: Date.now(), dests: new Set(), pull };
      this.recent.set(groupId, rec);
    }
    rec.epoch = epoch;
    rec.lastMsgId = Math.max(rec.lastMsgId, lastMsgId);
    rec.at = Date.now();
    rec.pull = pull;
    return rec;
  }

  /**
   * Heads for groups whose last records may never have gone out: after a restart (the
   * queues died with the process) or when groups moved here. Each group not already
   * followed gets heads for the next HEADS_WINDOW_MS, to the session hosts of its members.
   */
  resume(groups: readonly { groupId: string; epoch: string; lastMsgId: number }[]): void {
    if (this.stopped) return;
    const now = Date.now();
    for (const g of groups) {
      if (g.lastMsgId < 1 || this.recent.has(g.groupId)) continue;
      this.recent.set(g.groupId, {
        epoch: g.epoch,
        lastMsgId: g.lastMsgId,
        at: now,
        dests: new Set(),
        pull: false,
      });
    }
  }

  /** Forgets what was sent of a group (it moved to or away from this shard). */
  forget(groupId: string): void {
    this.recent.delete(groupId);
  }

  /** Queues a typing event for every session host of the group's members except the typist. */
  typing(groupId: string, userId: string): void {
    if (this.stopped) return;
    const event = { type: 'typing', groupId, userId };
    for (const [host, members] of this.o.members.byHost(groupId)) {
      const recipients = members.filter((u) => u !== userId);
      if (recipients.length === 0) continue;
      this.enqueue(host, eventRecord('typing', groupId, recipients, event), 200 + recipients.length * 40);
    }
  }

  /** Queues a presence change for every session host of the group's members except the user's own inboxes. */
  presence(groupId: string, userId: string, status: 'online' | 'away' | 'offline'): void {
    if (this.stopped) return;
    const byHost = this.hostsOf(groupId);
    if (!byHost) return;
    const event = { type: 'presence', groupId, userId, status };
    for (const [host, members] of byHost) {
      const recipients = members.filter((u) => u !== userId);
      if (recipients.length === 0) continue;
      this.enqueue(host, eventRecord('presence', groupId, recipients, event), 200 + recipients.length * 40);
    }
  }

  /** Records waiting for a destination (the batch in flight included). */
  depth(dest: number): number {
    const d = this.dests.get(dest);
    return d ? d.queue.length + (d.inFlight?.length ?? 0) : 0;
  }

  private dest(dest: number): Destination {
    let d = this.dests.get(dest);
    if (!d) {
      d = {
        dest,
        label: String(dest),
        queue: [],
        inFlight: undefined,
        timer: undefined,
        seq: 0,
        failures: 0,
      };
      this.dests.set(dest, d);
    }
    return d;
  }

  private enqueue(dest: number, record: DeliveryRecord, bytes: number): void {
    if (dest === this.o.ordinal) {
      // The local session host: no HTTP, no batching, no faults.
      this.o.metrics.fanoutBatches.inc({ dest: String(dest) });
      this.o.metrics.fanoutBatchRecords.observe(1);
      try {
        this.emit('local', record);
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message }, 'local delivery failed');
      }
      return;
    }
    const d = this.dest(dest);
    const cfg = this.o.cfg.shard.fanout;
    d.queue.push({ record, bytes });
    if (d.queue.length > cfg.queueSize) {
      const over = d.queue.length - cfg.queueSize;
      d.queue.splice(0, over);
      this.o.metrics.fanoutDropped.inc({ dest: d.label, reason: 'queue_full' }, over);
    }
    this.o.metrics.fanoutQueueDepth.set({ dest: d.label }, this.depth(dest));
    this.schedule(d);
  }

  private schedule(d: Destination): void {
    if (this.stopped || d.inFlight || d.queue.length === 0) return;
    const cfg = this.o.cfg.shard.fanout;
    if (d.queue.length >= cfg.maxBatch) {
      if (d.timer) clearTimeout(d.timer);
      d.timer = undefined;
      this.sendNext(d);
      return;
    }
    if (d.timer) return;
    const wait = cfg.batchMs + this.random() * cfg.jitterMs;
    d.timer = setTimeout(() => {
      d.timer = undefined;
      this.sendNext(d);
    }, wait);
    d.timer.unref();
  }

  private sendNext(d: Destination): void {
    if (this.stopped || d.inFlight || d.queue.length === 0) return;
    const cfg = this.o.cfg.shard.fanout;
    let n = 0;
    let bytes = 0;
    while (n < d.queue.length && n < cfg.maxBatch) {
      bytes += (d.queue[n] as Queued).bytes;
      if (n > 0 && bytes > MAX_BATCH_BYTES) break;
      n++;
    }
    d.inFlight = d.queue.splice(0, n);
    d.seq++;
    void this.run(d, d.inFlight, d.seq);
  }

  /** Sends one batch until it is accepted (or dropped by a fault or a refusal), then the next. */
  private async run(d: Destination, batch: Queued[], seq: number): Promise<void> {
    const cfg = this.o.cfg.shard.fanout;
    const records = batch.map((q) => q.record);
    this.o.metrics.fanoutBatches.inc({ dest: d.label });
    this.o.metrics.fanoutBatchRecords.observe(records.length);
    for (;;) {
      if (this.stopped) return;
      if (this.o.faultsEnabled) {
        if (cfg.faults.delayMs > 0) await sleep(this.random() * cfg.faults.delayMs);
        if (this.random() < cfg.faults.dropRatio) {
          // As if the network ate it: the sender believes it was delivered.
          this.o.metrics.fanoutDropped.inc({ dest: d.label, reason: 'fault' }, records.length);
          break;
        }
      }
      try {
        await this.o.send(d.dest, { from: this.o.ordinal, seq, records });
        d.failures = 0;
        break;
      } catch (err) {
        if (err instanceof BatchRejected) {
          this.o.metrics.fanoutDropped.inc({ dest: d.label, reason: 'rejected' }, records.length);
          this.o.log.error({ dest: d.dest, err: err.message }, 'fan-out batch refused: dropped');
          break;
        }
        d.failures++;
        this.o.metrics.fanoutRetries.inc({ dest: d.label });
        const delay = backoffDelay(
          d.failures - 1,
          { minMs: cfg.retry.minMs, maxMs: cfg.retry.maxMs, jitter: [0.75, 1] },
          this.random,
        );
        if (d.failures === 1 || d.failures % 10 === 0)
          this.o.log.warn(
            { dest: d.dest, failures: d.failures, err: (err as Error).message, retryInMs: delay },
            'fan-out batch failed; retrying',
          );
        await sleep(delay);
      }
    }
    d.inFlight = undefined;
    this.o.metrics.fanoutQueueDepth.set({ dest: d.label }, this.depth(d.dest));
    this.schedule(d);
  }

  /**
   * Anti-entropy: the head of every recently active group to every destination that
   * received its records, and to the members' session hosts now (a member's host changes
   * when the shard map does: the records sent to the old one reached nobody).
   */
  private heads(): void {
    if (this.stopped) return;
    const now = Date.now();
    for (const [groupId, r] of this.recent) {
      if (now - r.at > HEADS_WINDOW_MS) {
        this.recent.delete(groupId);
        continue;
      }
      const byHost = this.hostsOf(groupId);
      const dests = new Set(r.dests);
      for (const host of byHost?.keys() ?? []) dests.add(host);
      if (r.pull) {
        // Pull mode: the last tick again (a host that missed it passes it on, others drop it).
        if (!byHost) continue;
        const t: Tick = { groupId, epoch: r.epoch, lastMsgId: r.lastMsgId, mode: 'pull' };
        for (const dest of dests) {
          const recipients = byHost.get(dest) ?? [];
          this.enqueue(dest, tickRecord(t, recipients), 250 + recipients.length * 40);
        }
        continue;
      }
      const head = headRecord(groupId, r.epoch, r.lastMsgId);
      for (const dest of dests) this.enqueue(dest, head, 200);
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.headsTimer);
    for (const d of this.dests.values()) if (d.timer) clearTimeout(d.timer);
  }
}
