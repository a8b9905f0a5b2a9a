/**
 * Reading a group's history after a msgId (`?after=`, long-polls, repair pages): from
 * the recent messages in memory when they cover the range, else from SQLite; both give
 * the same page (docs/delivery-protocol.md section 7).
 */
import type { Message } from '../../common/protocol.js';
import type { ShardMetrics } from '../metrics.js';
import type { Store } from '../storage/store.js';
import type { RecentMessages } from './recent.js';

export class History {
  constructor(
    private readonly store: Pick<Store, 'messagesAfter'>,
    private readonly recent: RecentMessages,
    private readonly metrics: Pick<ShardMetrics, 'historyReads'>,
  ) {}

  after(groupId: string, after: number, limit: number): Message[] {
    const hit = this.recent.after(groupId, after, limit);
    this.metrics.historyReads.inc({ source: hit ? 'memory' : 'store' });
    return hit ?? this.store.messagesAfter(groupId, after, limit);
  }
}
