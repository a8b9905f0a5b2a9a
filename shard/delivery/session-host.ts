/**
 * This shard as a session host (docs/delivery-protocol.md section 3): the records the
 * groups' shards send it (and its own fan-out, without HTTP) go through the sequencer,
 * exactly once and in order per group, to the recipients' inbox connections here; a gap
 * is repaired from the group's shard (or from this shard's history when it owns the
 * group). Recipients with no live connection anywhere get an offline notification.
 */
import type { Config } from '../../common/config.js';
import type { Logger } from '../../common/logger.js';
import type { Message } from '../../common/protocol.js';
import type { InternalClient } from '../cluster/internal-client.js';
import type { Ownership } from '../cluster/ownership.js';
import type { ShardMetrics } from '../metrics.js';
import type { History } from './history.js';
import type { MemberCache } from './member-cache.js';
import type { Notifier } from './notifier.js';
import { DeliverySequencer, type RepairPage } from './sequencer.js';

/** The inbox connections of this host, as delivery sees them. */
export interface Inboxes {
  deliver(recipients: readonly string[], event: object): number;
  isOnline(userId: string): boolean;
}

export interface SessionHostDeps {
  cfg: Config;
  log: Logger;
  own: Ownership;
  internal: InternalClient;
  members: MemberCache;
  history: History;
  metrics: ShardMetrics;
  notifier: Notifier;
  inboxes: Inboxes;
  /** Of these members, those with a live WebSocket to the group on this shard. */
  liveOf(groupId: string, userIds: string[]): string[];
}

export function sessionHost(d: SessionHostDeps): DeliverySequencer {
  const { own, metrics, notifier, inboxes } = d;
  const fetch = async (groupId: string, after: number, limit: number): Promise<RepairPage> => {
    const owner = own.ownerOf(groupId);
    if (owner === own.ordinal) {
      const recipients = d.members.on(groupId, own.ordinal);
      return {
        messages: d.history.after(groupId, after, limit),
        recipients,
        live: d.liveOf(groupId, recipients),
      };
    }
    const page = await d.internal.messagesAfter(owner, groupId, after, limit, own.ordinal);
    return { messages: page.messages, recipients: page.recipients ?? [], live: page.live };
  };
  const deliver = (recipients: string[], event: Record<string, unknown>, live?: string[]): void => {
    if (event.type === 'message' && typeof event.ts === 'number')
      metrics.deliveryLag.observe(Math.max(0, Date.now() - event.ts) / 1000);
    inboxes.deliver(recipients, event);
    if (event.type === 'message' && notifier.enabled) {
      // Offline: no inbox connection here, no group WebSocket on the group's shard, not the author.
      const m = event as unknown as Message;
      const offline = recipients.filter(
        (u) => u !== m.userId && !inboxes.isOnline(u) && !(live?.includes(u) ?? false),
      );
      notifier.offline(offline, m);
    }
  };
  return new DeliverySequencer({
    fetch,
    deliver,
    onRepair: () => metrics.gapRepairs.inc(),
    onRepairError: (groupId, err) =>
      d.log.debug({ groupId, err: (err as Error).message }, 'gap repair failed; retrying'),
    retryMinMs: d.cfg.shard.fanout.retry.minMs,
    retryMaxMs: d.cfg.shard.fanout.retry.maxMs,
  });
}
