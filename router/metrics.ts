/** The router's Prometheus series (DESIGN section 8), with per-shard children cached for the hot path. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export class RouterMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'shard' | 'code'>;
  private readonly duration: Histogram<'shard'>;
  private readonly upstreamErrors: Counter<'shard' | 'reason'>;
  private readonly shardsGauge: Gauge;
  private readonly ready: Gauge<'shard'>;
  private readonly websockets: Gauge<'shard'>;
  private readonly misdirected: Counter<'shard'>;
  private readonly requestChildren = new Map<string, Counter.Internal>();
  private readonly durationChildren: Histogram.Internal<'shard'>[] = [];
  private readonly wsChildren: Gauge.Internal<'shard'>[] = [];

  constructor(shards: number, defaultLabels: Record<string, string> = {}) {
    const registers = [this.registry];
    this.registry.setDefaultLabels(defaultLabels);
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: 'shardchat_router_requests_total',
      help: 'Requests answered by the router, by shard ("none" when no shard was chosen) and status code.',
      labelNames: ['shard', 'code'],
      registers,
    });
    this.duration = new Histogram({
      name: 'shardchat_router_request_duration_seconds',
      help: 'Time from request to the end of the response, by shard.',
      labelNames: ['shard'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.upstreamErrors = new Counter({
      name: 'shardchat_router_upstream_errors_total',
      help: 'Failed exchanges with a shard, by reason (refused, unready, overloaded, reset, timeout, protocol, misdirected).',
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
      help: '421 answers from shards: router and shard configurations disagree about the topology.',
      labelNames: ['shard'],
      registers,
    });
    this.shardsGauge.set(shards);
    for (let i = 0; i < shards; i++) {
      const s = String(i);
      this.durationChildren.push(this.duration.labels(s));
      this.wsChildren.push(this.websockets.labels(s));
      this.ready.labels(s).set(1);
      this.misdirected.labels(s);
    }
  }

  request(shard: number | undefined, code: number, seconds: number | undefined): void {
    const key = shard === undefined ? `none:${code}` : `${shard}:${code}`;
    let child = this.requestChildren.get(key);
    if (!child) {
      child = this.requests.labels(shard === undefined ? 'none' : String(shard), String(code));
      this.requestChildren.set(key, child);
    }
    child.inc();
    if (shard !== undefined && seconds !== undefined) this.durationChildren[shard]?.observe(seconds);
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

  websocketOpened(shard: number): void {
    this.wsChildren[shard]?.inc();
  }

  websocketClosed(shard: number): void {
    this.wsChildren[shard]?.dec();
  }
}
