/**
 * Delivery on one shard (docs/architecture.md section 6, docs/delivery-protocol.md),
 * assembled: as a group's shard it pushes committed messages (or ticks) to the group's
 * WebSockets and the members' session hosts, wakes long-polls and keeps recent history
 * and presence; as a session host it sequences what arrives for its inboxes and notifies
 * offline members.
 */
import type { Config } from '../../common/config.js';
import type { Logger } from '../../common/logger.js';
import type { Message } from '../../common/protocol.js';
import { InternalCallError, type InternalClient } from '../cluster/internal-client.js';
import type { Ownership } from '../cluster/ownership.js';
import type { ShardMetrics } from '../metrics.js';
import { gathering } from '../sockets/gathering.js';
import type { Store } from '../storage/store.js';
import { BatchRejected, Fanout, HEADS_WINDOW_MS } from './fanout.js';
import { History } from './history.js';
import { MemberCache } from './member-cache.js';
import type { DeliveryModes } from './modes.js';
import { Notifier } from './notifier.js';
import { GroupPresence } from './presence.js';
import { type GroupSockets, Publisher } from './publisher.js';
import { RecentMessages } from './recent.js';
import type { DeliveryBatch } from './records.js';
import type { DeliverySequencer } from './sequencer.js';
import { type Inboxes, sessionHost } from './session-host.js';
import { GroupWaiters } from './waiters.js';

/** The group WebSockets of this shard, as delivery uses them. */
export interface GroupConnections extends GroupSockets {
  typing(groupId: string, userId: string): void;
  /** Users connected to a group now, with their number of connections. */
  presence(groupId: string): { userId: string; connections: number }[];
  isConnected(groupId: string, userId: string): boolean;
  announcePresence(groupId: string, userId: string, status: 'online' | 'away' | 'offline'): void;
}

export interface DeliveryDeps {
  cfg: Config;
  log: Logger;
  store: Store;
  own: Ownership;
  internal: InternalClient;
  metrics: ShardMetrics;
  modes: DeliveryModes;
  groups: GroupConnections;
  inboxes: Inboxes;
}

export class Delivery {
  readonly modes: DeliveryModes;
  readonly recent: RecentMessages;
  readonly history: History;
  readonly waiters: GroupWaiters;
  readonly members: MemberCache;
  readonly notifier: Notifier;
  readonly fanout: Fanout;
  readonly presence: GroupPresence;
  readonly sequencer: DeliverySequencer;
  private readonly publisher: Publisher;

  constructor(private readonly d: DeliveryDeps) {
    const { cfg, log, store, own, metrics, groups } = d;
    this.modes = d.modes;
    this.recent = new RecentMessages(
      cfg.shard.delivery.recent.messagesPerGroup,
      cfg.shard.delivery.recent.maxBytes,
    );
    this.history = new History(store, this.recent, metrics);
    this.waiters = new GroupWaiters(cfg.shard.limits.maxConnections, (n) => metrics.longPollWaiters.set(n));
    this.members = new MemberCache(store, (userId) => own.ownerOf(userId), cfg.shard.limits.maxCapacity);
    // Offline notifications go out from here, each user's session host.
    this.notifier = new Notifier({ cfg, log, metrics });
    const faultsEnabled = process.env.SHARDCHAT_TEST_FAULTS === '1';
    if (faultsEnabled) log.warn({ faults: cfg.shard.fanout.faults }, 'fan-out fault injection on');
    this.fanout = new Fanout({
      cfg,
      log,
      ordinal: own.ordinal,
      metrics,
      members: this.members,
      send: (dest, batch) => this.send(dest, batch),
      // Only session hosts that notify need to know who is on the group's own sockets.
      ...(this.notifier.enabled ? { liveOf: (g: string, users: string[]) => this.liveOf(g, users) } : {}),
      faultsEnabled,
    });
    // Presence across shards (docs/delivery-protocol.md section 6).
    this.presence = new GroupPresence({
      local: (groupId) => groups.presence(groupId),
      isConnected: (groupId, userId) => groups.isConnected(groupId, userId),
      changed: (groupId, userId, status) => {
        groups.announcePresence(groupId, userId, status);
        this.fanout.presence(groupId, userId, status);
      },
    });
    this.sequencer = sessionHost({
      cfg,
      log,
      own,
      internal: d.internal,
      members: this.members,
      history: this.history,
      metrics,
      notifier: this.notifier,
      inboxes: d.inboxes,
      liveOf: (g, users) => this.liveOf(g, users),
    });
    this.fanout.on('local', (record) => this.sequencer.accept(record));
    this.publisher = new Publisher(this.modes, groups, this.fanout, this.members);
    this.modes.on('tick', () => metrics.ticks.inc());
    this.modes.on('changed', (groupId, mode) => {
      metrics.modeSwitches.inc({ mode });
      metrics.pullGroups.set(this.modes.pulling);
      log.info({ groupId, mode }, 'delivery mode switched');
    });
  }

  /** A commit's messages (the store's `committed` event): history, push or tick, long-polls. */
  committed(messages: readonly Message[]): void {
    this.recent.addAll(messages);
    this.publisher.committed(messages);
    const woken = this.waiters.committed(messages);
    if (woken > 0) this.d.metrics.longPollWakeups.inc(woken);
  }

  /**
   * Heads for the groups this shard owns whose last message came within the heads'
   * window of the newest one stored: at start (fan-out queues die with a killed process)
   * and when the shard map changes (groups moved here; members' session hosts moved).
   */
  resumeHeads(): void {
    const active = this.d.store.lastActive(HEADS_WINDOW_MS).filter((g) => this.d.own.owns(g.groupId));
    this.fanout.resume(active);
  }

  /** A group moved here or away (the store's `replaced` event): nothing kept of it in memory is true. */
  replaced(groupId: string): void {
    this.recent.drop(groupId);
    this.fanout.forget(groupId);
    this.members.invalidate(groupId);
  }

  /** A member types on this (the group's) shard: to the group's other sockets and session hosts. */
  typing(groupId: string, userId: string): void {
    this.d.groups.typing(groupId, userId);
    this.fanout.typing(groupId, userId);
  }

  /** Of these members, those with a live WebSocket to the group on this shard. */
  liveOf(groupId: string, userIds: string[]): string[] {
    return userIds.filter((u) => this.d.groups.isConnected(groupId, u));
  }

  /** What the internal routes do with delivery. */
  internalRoutes() {
    return {
      typing: (groupId: string, userId: string) => this.typing(groupId, userId),
      presence: (groupId: string, userId: string, status: 'online' | 'away' | 'offline', host: number) =>
        this.presence.report(groupId, userId, status, host),
      recipientsOn: (groupId: string, host: number) => this.members.on(groupId, host),
      liveOf: (groupId: string, userIds: string[]) => this.liveOf(groupId, userIds),
      messagesAfter: (groupId: string, after: number, limit: number) =>
        this.history.after(groupId, after, limit),
      // The batch's events reach each inbox connection in one write.
      deliver: (batch: DeliveryBatch) =>
        gathering.run(() => {
          for (const r of batch.records) this.sequencer.accept(r);
        }),
    };
  }

  private async send(dest: number, batch: DeliveryBatch): Promise<void> {
    try {
      await this.d.internal.deliver(dest, batch);
    } catch (err) {
      const status = err instanceof InternalCallError ? err.status : undefined;
      if (status !== undefined && status >= 400 && status < 500 && status !== 429 && status !== 421)
        throw new BatchRejected((err as Error).message);
      throw err;
    }
  }

  stop(): void {
    this.modes.stop();
    this.fanout.stop();
    this.sequencer.stop();
    this.presence.stop();
  }
}
