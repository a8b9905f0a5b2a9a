/**
 * Offline notifications (docs/architecture.md section 6), on each user's session host: when the host
 * delivers a message to the recipients it serves, those with no live connection anywhere
 * (no inbox connection on this host, no WebSocket to the group on the group's shard, and
 * not the author) get a best-effort notification through a webhook. Notifications wait in
 * a bounded queue (full: dropped and counted) and leave in batches, one POST of
 * `{notifications: [{userId, groupId, msgId, userIdFrom, preview, ts}]}` at a time, at
 * most one every `batchMs`, with `maxBatch` at most per POST. A failed POST is retried
 * once, then its notifications are counted as dropped. Off when `webhookUrl` is empty.
 */
import type { Config } from '../../common/config.js';
import type { Logger } from '../../common/logger.js';
import type { Message } from '../../common/protocol.js';
import type { ShardMetrics } from '../metrics.js';

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
  metrics: ShardMetrics;
}
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

  /** These recipients of a delivered message are offline: notify them. Never throws, never blocks. */
  offline(userIds: readonly string[], m: Message): void {
    if (!this.enabled || this.stopped || userIds.length === 0) return;
    const { queueSize } = this.o.cfg.shard.notifications;
    const text = preview(m.contents);
    let dropped = 0;
    for (const userId of userIds) {
      if (this.queue.length >= queueSize) {
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
    if (dropped > 0) this.o.metrics.notificationsDropped.inc(dropped);
    this.schedule();
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
   * left after that is counted as dropped.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
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
