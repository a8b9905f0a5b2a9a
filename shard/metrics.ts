/** The shard's Prometheus series (DESIGN section 8: "shard load"), labelled with the ordinal. */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../common/process-metrics.js';
import type { TopologyStatus } from '../common/topology.js';
import type { Store } from './store.js';

export class ShardMetrics {
  readonly registry = new Registry();
  readonly messages: Counter;
  readonly deliveries: Counter;
  readonly connections: Gauge;
  readonly writeDuration: Histogram;
  readonly notificationsDropped: Counter;
  readonly notificationsSent: Counter;
  readonly slowConsumers: Counter;
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
  }

  /** Kubernetes mode: what the shard sees of its StatefulSet (registered on the first call). */
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
