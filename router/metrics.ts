/** The router's Prometheus series (docs/architecture.md section 8); the per-request ones live in fast-metrics.ts. */
import { Counter, Gauge, Registry } from 'prom-client';
import { collectProcessMetrics } from '../common/process-metrics.js';
import type { TopologyStatus } from '../common/topology.js';
import { ShardCodeCounter, ShardHistogram } from './fast-metrics.js';

export class RouterMetrics {
  readonly registry = new Registry();
  private readonly requests: ShardCodeCounter;
  private readonly duration: ShardHistogram;
  private readonly upstreamErrors: Counter<'shard' | 'reason'>;
  private readonly shardsGauge: Gauge;
  private readonly ready: Gauge<'shard'>;
  private readonly websockets: Gauge<'shard'>;
  private readonly misdirected: Counter<'shard'>;
  private readonly wsChildren: Gauge.Internal<'shard'>[] = [];
  private readonly mapVersion: Gauge;
  private readonly mapShards: Gauge;
  private readonly misdirectedRetries: Counter;
  /** Shards with series so far: S, more once the shard map grows. */
  private shards = 0;
  private readonly stsReplicas: Gauge | undefined;
  private readonly replicasMismatch: Gauge | undefined;

  constructor(shards: number, defaultLabels: Record<string, string> = {}, kubernetes = false) {
    const registers = [this.registry];
    this.registry.setDefaultLabels(defaultLabels);
    collectProcessMetrics(this.registry);
    this.requests = new ShardCodeCounter(
      'shardchat_router_requests_total',
      'Requests answered by the router, by shard ("none" when no shard was chosen) and status code (0: the client went away).',
      shards,
      this.registry,
    );
    this.duration = new ShardHistogram(
      'shardchat_router_request_duration_seconds',
      'Time from a complete request to the end of its response, by shard.',
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      shards,
      this.registry,
    );
    this.upstreamErrors = new Counter({
      name: 'shardchat_router_upstream_errors_total',
      help: 'Failed exchanges with a shard, by reason (refused, connect_timeout, unready, overloaded, reset, timeout, protocol, overflow, misdirected).',
      labelNames: ['shard', 'reason'],
      registers,
    });
    this.shardsGauge = new Gauge({
      name: 'shardchat_router_shards',
      help: 'The configured number of shards S.',
      registers,
    });
    this.ready = new Gauge({
      name: 'shardchat_router_shard_ready',
      help: '1 when the router counts the shard as ready, else 0.',
      labelNames: ['shard'],
      registers,
    });
    this.websockets = new Gauge({
      name: 'shardchat_router_websockets',
      help: 'WebSocket connections relayed to each shard now.',
      labelNames: ['shard'],
      registers,
    });
    this.misdirected = new Counter({
      name: 'shardchat_router_misdirected_total',
      help: '421 answers from shards (those sent again to the new owner included).',
      labelNames: ['shard'],
      registers,
    });
    this.misdirectedRetries = new Counter({
      name: 'shardchat_router_misdirected_retries_total',
      help: 'Requests and upgrades sent again to the owner under a newer shard map after a 421.',
      registers,
    });
    this.mapVersion = new Gauge({
      name: 'shardchat_router_map_version',
      help: 'The version of the shard map the router routes by (0: its configuration, before any shard reported a map).',
      registers,
    });
    this.mapShards = new Gauge({
      name: 'shardchat_router_map_shards',
      help: 'The number of shards of the shard map the router routes by.',
      registers,
    });
    if (kubernetes) {
      this.stsReplicas = new Gauge({
        name: 'shardchat_router_topology_statefulset_replicas',
        help: "The shards' StatefulSet spec.replicas as the router last saw it (kubernetes mode; -1 while unknown). Routing uses S, never this.",
        registers,
      });
      this.replicasMismatch = new Gauge({
        name: 'shardchat_router_topology_replicas_mismatch',
        help: "1 when the StatefulSet's spec.replicas differs from the configured S (someone scaled it): routing stays on S.",
        registers,
      });
    }
    this.shardsGauge.set(shards);
    this.mapShards.set(shards);
    this.grow(shards);
  }

  /** Series for shards below `shards` too (the shard map grew). */
  grow(shards: number): void {
    if (shards <= this.shards) return;
    this.requests.grow(shards);
    this.duration.grow(shards);
    for (let i = this.shards; i < shards; i++) {
      const s = String(i);
      this.wsChildren.push(this.websockets.labels(s));
      this.ready.labels(s).set(1);
      this.misdirected.labels(s);
    }
    this.shards = shards;
  }

  setMap(version: number, shards: number): void {
    this.mapVersion.set(version);
    this.mapShards.set(shards);
  }

  misdirectedRetry(): void {
    this.misdirectedRetries.inc();
  }

  request(shard: number | undefined, code: number, seconds: number | undefined): void {
    this.requests.inc(shard, code);
    if (shard !== undefined && seconds !== undefined) this.duration.observe(shard, seconds);
  }

  upstreamError(shard: number, reason: string): void {
    this.upstreamErrors.labels(String(shard), reason).inc();
  }

  misdirectedAnswer(shard: number): void {
    this.misdirected.labels(String(shard)).inc();
  }

  setReady(shard: number, ready: boolean): void {
    this.ready.labels(String(shard)).set(ready ? 1 : 0);
  }

  setTopologyStatus(st: TopologyStatus): void {
    this.stsReplicas?.set(st.statefulSetReplicas ?? -1);
    this.replicasMismatch?.set(st.replicasMismatch ? 1 : 0);
  }

  websocketOpened(shard: number): void {
    this.wsChildren[shard]?.inc();
  }

  websocketClosed(shard: number): void {
    this.wsChildren[shard]?.dec();
  }
}
