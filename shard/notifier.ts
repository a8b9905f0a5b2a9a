/**
 * Offline notifications (DESIGN section 6): after a message is stored, every member of
 * its group with no live WebSocket to the group on this shard (except the author) gets a
 * best-effort notification through a webhook. Notifications wait in a bounded queue
 * (full: dropped and counted) and leave in batches, one POST of
 * `{notifications: [{userId, groupId, msgId, userIdFrom, preview, ts}]}` at a time, at
 * most one every `batchMs`, with `maxBatch` at most per POST. A failed POST is retried
 * once, then its notifications are counted as dropped. Off when `webhookUrl` is empty.
 */
import type { Config } from '../common/config.js';
import type { Logger } from '../common/logger.js';
import type { ShardMetrics } from './metrics.js';
import type { Message, Store } from './store.js';

export interface Notification {
  userId: string;
  groupId: string;
  msgId: number;
  userIdFrom: string;
  preview: string;
  ts: number;
}

export interface NotifierOptions {
  cfg: Config;
  log: Logger;
  store: Store;
  metrics: ShardMetrics;
  /** Whether the user has a live connection to the group on this shard. */
  isConnected(groupId: string, userId: string): boolean;
}

/** Members notified per message at most; the rest of a huge group is counted as dropped. */
export const MAX_FANOUT = 10_000;
/** Members read from the store per page. */
const PAGE = 1000;
/** Characters (code points) of the contents in a preview. */
export const PREVIEW_CHARS = 140;

export function preview(contents: string): string {
  if (contents.length <= PREVIEW_CHARS) return contents;
  let out = '';
  let n = 0;
  for (const ch of contents) {
    if (n++ === PREVIEW_CHARS) break;
    out += ch;
  }
  return out;
}

export class Notifier {
  private readonly queue: Notification[] = [];
  /** Stored messages whose fan-out has not run yet (it runs off the request path). */
  private readonly pending: Message[] = [];
  private fanoutScheduled = false;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private lastSendAt = 0;
  private stopped = false;
  private readonly stopCtl = new AbortController();

  constructor(private readonly o: NotifierOptions) {}

  get enabled(): boolean {
    return this.o.cfg.shard.notifications.webhookUrl !== '';
  }

  /** Notifications waiting to be sent. */
  get queued(): number {
    return this.queue.length;
  }

  /** Called after a message is stored (and published). Never throws, never blocks on the webhook. */
  published(m: Message): void {
    if (!this.enabled || this.stopped) return;
    const cfg = this.o.cfg.shard.notifications;
    if (this.pending.length >= cfg.queueSize) {
      // Fan-out itself is falling behind: drop this message's notifications.
      this.o.metrics.notificationsDropped.inc(
        Math.max(0, (this.o.store.getGroup(m.groupId)?.memberCount ?? 1) - 1),
      );
      return;
    }
    this.pending.push(m);
    if (!this.fanoutScheduled) {
      this.fanoutScheduled = true;
      setImmediate(() => {
        this.fanoutScheduled = false;
        this.fanoutPending();
      });
    }
  }

  private fanoutPending(): void {
    // Bounded: pending holds queueSize messages at most, each fanned out once.
    for (let m = this.pending.shift(); m !== undefined; m = this.pending.shift()) {
      try {
        this.fanout(m);
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message, groupId: m.groupId }, 'notification fan-out failed');
      }
    }
    this.schedule();
  }

  private fanout(m: Message): void {
    const cfg = this.o.cfg.shard.notifications;
    const text = preview(m.contents);
    let after = '';
    let seen = 0;
    let dropped = 0;
    for (let pages = 0; pages < Math.ceil(MAX_FANOUT / PAGE) && seen < MAX_FANOUT; pages++) {
      const members = this.o.store.listMembers(m.groupId, after, Math.min(PAGE, MAX_FANOUT - seen));
      for (const { userId } of members) {
        seen++;
        after = userId;
        if (userId === m.userId || this.o.isConnected(m.groupId, userId)) continue;
        if (this.queue.length >= cfg.queueSize) {
          dropped++;
          continue;
        }
        this.queue.push({
          userId,
          groupId: m.groupId,
          msgId: m.msgId,
          userIdFrom: m.userId,
          preview: text,
          ts: m.ts,
        });
      }
      if (members.length < PAGE) break;
    }
    if (seen >= MAX_FANOUT) {
      const total = this.o.store.getGroup(m.groupId)?.memberCount ?? seen;
      dropped += Math.max(0, total - seen);
    }
    if (dropped > 0) this.o.metrics.notificationsDropped.inc(dropped);
  }

  /** Arms the batch timer: the next POST leaves `batchMs` after the previous one began. */
  private schedule(): void {
    if (this.stopped || this.timer || this.inFlight || this.queue.length === 0) return;
    const { batchMs } = this.o.cfg.shard.notifications;
    const wait = Math.max(0, this.lastSendAt + batchMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.sendNext();
    }, wait);
    this.timer.unref();
  }

  private sendNext(): void {
    if (this.stopped || this.inFlight || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.o.cfg.shard.notifications.maxBatch);
    this.lastSendAt = Date.now();
    this.inFlight = this.deliver(batch, 2).finally(() => {
      this.inFlight = undefined;
      this.schedule();
    });
  }

  /** POSTs one batch, `attempts` times at most; counts it as sent or dropped. Never rejects. */
  private async deliver(batch: Notification[], attempts: number, deadline?: AbortSignal): Promise<void> {
    const cfg = this.o.cfg.shard.notifications;
    const body = JSON.stringify({ notifications: batch });
    let lastError = '';
    for (let i = 0; i < attempts; i++) {
      const signals = [AbortSignal.timeout(cfg.timeoutMs), deadline ?? this.stopCtl.signal];
      try {
        const res = await fetch(cfg.webhookUrl, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          signal: AbortSignal.any(signals),
        });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) {
          this.o.metrics.notificationsSent.inc(batch.length);
          return;
        }
        lastError = `webhook answered ${res.status}`;
        // A client error will not get better with a retry.
        if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) break;
      } catch (err) {
        lastError = (err as Error).message;
      }
      // No retries while shutting down (stop() flushes once, within its deadline).
      if (deadline?.aborted || this.stopped) break;
    }
    this.o.metrics.notificationsDropped.inc(batch.length);
    this.o.log.warn({ err: lastError, notifications: batch.length }, 'notifications dropped: webhook failed');
  }

  /**
   * Stops taking messages and flushes what is queued, all within `timeoutMs`; what is
   * left after that is counted as dropped. Call before the store closes.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    // Fan out what is pending while the store is still open.
    this.fanoutPending();
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.enabled) return;
    const cfg = this.o.cfg.shard.notifications;
    const deadline = AbortSignal.timeout(cfg.timeoutMs);
    // Let the POST under way finish within the deadline, then end it.
    const abortInFlight = () => this.stopCtl.abort();
    deadline.addEventListener('abort', abortInFlight, { once: true });
    if (this.inFlight) await this.inFlight;
    const maxRounds = Math.ceil(this.queue.length / cfg.maxBatch) + 1;
    for (let round = 0; round < maxRounds && this.queue.length > 0 && !deadline.aborted; round++) {
      await this.deliver(this.queue.splice(0, cfg.maxBatch), 1, deadline);
    }
    deadline.removeEventListener('abort', abortInFlight);
    if (this.queue.length > 0) {
      this.o.metrics.notificationsDropped.inc(this.queue.length);
      this.queue.length = 0;
    }
  }
}
