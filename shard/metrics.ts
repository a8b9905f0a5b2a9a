/** The shard's Prometheus series (docs/architecture.md section 8: "shard load"), labelled with the ordinal. */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../common/process-metrics.js';
import type { TopologyStatus } from '../common/topology.js';
import type { Store } from './storage/store.js';

export class ShardMetrics {
  readonly registry = new Registry();
  readonly messages: Counter;
  readonly deliveries: Counter;
  readonly connections: Gauge;
  readonly writeDuration: Histogram;
  readonly notificationsDropped: Counter;
  readonly notificationsSent: Counter;
  readonly slowConsumers: Counter;
  readonly fanoutBatches: Counter<'dest'>;
  readonly fanoutBatchRecords: Histogram;
  readonly fanoutQueueDepth: Gauge<'dest'>;
  readonly fanoutDropped: Counter<'dest' | 'reason'>;
  readonly fanoutRetries: Counter<'dest'>;
  readonly deliveryLag: Histogram;
  readonly gapRepairs: Counter;
  readonly inboxConnections: Gauge;
  readonly rateLimited: Counter;
  readonly pullGroups: Gauge;
  readonly modeSwitches: Counter<'mode'>;
  readonly ticks: Counter;
  readonly historyReads: Counter<'source'>;
  readonly longPollWakeups: Counter;
  readonly longPollWaiters: Gauge;
  private stsReplicas: Gauge | undefined;
  private replicasMismatch: Gauge | undefined;

  constructor(ordinal: number, store: Store) {
    this.registry.setDefaultLabels({ shard: String(ordinal) });
    collectProcessMetrics(this.registry);
    const registers = [this.registry];
    new Gauge({
      name: 'shardchat_shard_groups',
      help: 'Groups (including sub-conversations) stored on this shard.',
      registers,
      collect() {
        this.set(store.counts().groups);
      },
    });
    new Gauge({
      name: 'shardchat_shard_members',
      help: 'Memberships of the groups stored on this shard.',
      registers,
      collect() {
        this.set(store.counts().members);
      },
    });
    new Gauge({
      name: 'shardchat_shard_user_index_queued',
      help: "Joins and leaves of this shard's groups not yet written on their users' shards (GET /users/{u}/groups); it stays above 0 while a user's shard cannot be reached.",
      registers,
      collect() {
        this.set(store.queuedChangeCount());
      },
    });
    new Gauge({
      name: 'shardchat_shard_db_bytes',
      help: 'Bytes of the shard database and its write-ahead log on disk.',
      registers,
      collect() {
        this.set(store.bytes());
      },
    });
    this.messages = new Counter({
      name: 'shardchat_shard_messages_total',
      help: 'Messages stored (acknowledged after a durable commit).',
      registers,
    });
    this.deliveries = new Counter({
      name: 'shardchat_shard_deliveries_total',
      help: 'Events delivered to WebSocket connections (messages, typing, presence).',
      registers,
    });
    this.connections = new Gauge({
      name: 'shardchat_shard_connections',
      help: 'Open WebSocket connections on this shard.',
      registers,
    });
    this.writeDuration = new Histogram({
      name: 'shardchat_shard_write_duration_seconds',
      help: 'Time of one durable commit (a batch of messages, one fsync).',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    });
    this.notificationsSent = new Counter({
      name: 'shardchat_shard_notifications_sent_total',
      help: 'Offline notifications delivered to the webhook.',
      registers,
    });
    this.notificationsDropped = new Counter({
      name: 'shardchat_shard_notifications_dropped_total',
      help: 'Offline notifications dropped (queue full or webhook failing).',
      registers,
    });
    this.slowConsumers = new Counter({
      name: 'shardchat_shard_slow_consumers_total',
      help: 'WebSocket connections closed because they did not keep up.',
      registers,
    });
    // Cross-shard delivery (docs/delivery-protocol.md section 4).
    this.fanoutBatches = new Counter({
      name: 'shardchat_shard_fanout_batches_total',
      help: 'Fan-out batches sent (or handed over locally) per destination shard.',
      labelNames: ['dest'],
      registers,
    });
    this.fanoutBatchRecords = new Histogram({
      name: 'shardchat_shard_fanout_batch_records',
      help: 'Records per fan-out batch.',
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
      registers,
    });
    this.fanoutQueueDepth = new Gauge({
      name: 'shardchat_shard_fanout_queue_depth',
      help: 'Fan-out records waiting per destination shard (the batch in flight included).',
      labelNames: ['dest'],
      registers,
    });
    this.fanoutDropped = new Counter({
      name: 'shardchat_shard_fanout_dropped_total',
      help: 'Fan-out records dropped per destination (queue_full, fault, rejected).',
      labelNames: ['dest', 'reason'],
      registers,
    });
    this.fanoutRetries = new Counter({
      name: 'shardchat_shard_fanout_retries_total',
      help: 'Fan-out batches retried after a failed delivery, per destination.',
      labelNames: ['dest'],
      registers,
    });
    this.deliveryLag = new Histogram({
      name: 'shardchat_shard_delivery_lag_seconds',
      help: "Time from a message's store to its delivery on this session host.",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.gapRepairs = new Counter({
      name: 'shardchat_shard_gap_repairs_total',
      help: "Gaps this session host repaired by fetching from the group's shard.",
      registers,
    });
    this.inboxConnections = new Gauge({
      name: 'shardchat_shard_inbox_connections',
      help: 'Open inbox WebSockets (/users/{id}/ws) on this session host.',
      registers,
    });
    this.rateLimited = new Counter({
      name: 'shardchat_shard_rate_limited_total',
      help: 'Messages refused by the per-user message rate limit (shard.limits.userMessagesPerSecond).',
      registers,
    });
    new Gauge({
      name: 'shardchat_shard_storage_readonly',
      help: '1 when the data volume was read-only at start: reads are served, writes get 503.',
      registers,
      collect() {
        this.set(store.readOnly ? 1 : 0);
      },
    });
    // Push or pull (docs/delivery-protocol.md section 7).
    this.pullGroups = new Gauge({
      name: 'shardchat_shard_pull_groups',
      help: "This shard's groups in pull mode now.",
      registers,
    });
    this.modeSwitches = new Counter({
      name: 'shardchat_shard_mode_switches_total',
      help: 'Groups of this shard that switched delivery mode, by the mode switched to (push, pull).',
      labelNames: ['mode'],
      registers,
    });
    this.ticks = new Counter({
      name: 'shardchat_shard_ticks_total',
      help: 'Ticks sent by the groups of this shard (pull mode and switches of mode).',
      registers,
    });
    this.historyReads = new Counter({
      name: 'shardchat_shard_history_reads_total',
      help: 'Reads of messages after a msgId, by where they were answered from (memory, store).',
      labelNames: ['source'],
      registers,
    });
    this.longPollWakeups = new Counter({
      name: 'shardchat_shard_longpoll_wakeups_total',
      help: 'Notifications that woke the long-polls waiting on a group (one for all of them).',
      registers,
    });
    this.longPollWaiters = new Gauge({
      name: 'shardchat_shard_longpoll_waiters',
      help: 'Long-polls (GET …/messages?wait=) waiting now.',
      registers,
    });
  }

  /** Kubernetes mode: what the shard sees of its StatefulSet (registered on the first call). */
  /** A batch of messages committed in `seconds`. */
  committed(messages: number, seconds: number): void {
    this.writeDuration.observe(seconds);
    this.messages.inc(messages);
  }

  setTopologyStatus(st: TopologyStatus): void {
    if (st.mode !== 'kubernetes') return;
    if (!this.stsReplicas) {
      this.stsReplicas = new Gauge({
        name: 'shardchat_shard_topology_statefulset_replicas',
        help: "The StatefulSet's spec.replicas as this shard last saw it (-1 while unknown). S never follows it.",
        registers: [this.registry],
      });
      this.replicasMismatch = new Gauge({
        name: 'shardchat_shard_topology_replicas_mismatch',
        help: "1 when the StatefulSet's spec.replicas differs from the configured S (someone scaled it).",
        registers: [this.registry],
      });
    }
    this.stsReplicas.set(st.statefulSetReplicas ?? -1);
    this.replicasMismatch?.set(st.replicasMismatch ? 1 : 0);
  }
}
