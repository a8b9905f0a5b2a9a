/**
 * Per-shard counters and a latency histogram kept in plain arrays on the router's hot
 * path, and handed to prom-client's registry (which formats the exposition) only
 * when /metrics is scraped. prom-client's own children re-hash their labels on every
 * call, which costs more than the rest of a request's bookkeeping together.
 */
import type { Registry } from 'prom-client';

interface MetricValue {
  metricName?: string;
  labels: Record<string, string | number>;
  value: number;
}

interface CustomMetric {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  aggregator: 'sum';
  get(): { name: string; help: string; type: string; values: MetricValue[]; aggregator: 'sum' };
}

/** A counter by shard (or "none") and status code. */
export class ShardCodeCounter implements CustomMetric {
  readonly type = 'counter' as const;
  readonly aggregator = 'sum' as const;
  /** counts[shard + 1] maps a status code to its count; index 0 is "none". */
  private readonly counts: Map<number, number>[];

  constructor(
    readonly name: string,
    readonly help: string,
    shards: number,
    registry: Registry,
  ) {
    this.counts = Array.from({ length: shards + 1 }, () => new Map<number, number>());
    registry.registerMetric(this as never);
  }

  /** Counts shards below `shards` too (the shard map grew). */
  grow(shards: number): void {
    while (this.counts.length < shards + 1) this.counts.push(new Map<number, number>());
  }

  inc(shard: number | undefined, code: number): void {
    const m = this.counts[shard === undefined ? 0 : shard + 1];
    if (m) m.set(code, (m.get(code) ?? 0) + 1);
  }

  get() {
    const values: MetricValue[] = [];
    this.counts.forEach((m, i) => {
      const shard = i === 0 ? 'none' : String(i - 1);
      for (const [code, value] of m) values.push({ labels: { shard, code: String(code) }, value });
    });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/** A histogram of seconds by shard, with fixed buckets. */
export class ShardHistogram implements CustomMetric {
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  private readonly buckets: number[];
  /** Per shard: counts per bucket (not cumulative), then the +Inf overflow. */
  private readonly counts: Float64Array[];
  private sums: Float64Array;
  private totals: Float64Array;

  constructor(
    readonly name: string,
    readonly help: string,
    buckets: number[],
    shards: number,
    registry: Registry,
  ) {
    this.buckets = [...buckets].sort((a, b) => a - b);
    this.counts = Array.from({ length: shards }, () => new Float64Array(this.buckets.length + 1));
    this.sums = new Float64Array(shards);
    this.totals = new Float64Array(shards);
    registry.registerMetric(this as never);
  }

  /** Observes shards below `shards` too (the shard map grew). */
  grow(shards: number): void {
    const old = this.counts.length;
    if (shards <= old) return;
    while (this.counts.length < shards) this.counts.push(new Float64Array(this.buckets.length + 1));
    const sums = new Float64Array(shards);
    sums.set(this.sums);
    this.sums = sums;
    const totals = new Float64Array(shards);
    totals.set(this.totals);
    this.totals = totals;
  }

  observe(shard: number, seconds: number): void {
    const c = this.counts[shard];
    if (!c) return;
    const b = this.buckets;
    let i = 0;
    while (i < b.length && seconds > (b[i] as number)) i++;
    c[i] = (c[i] as number) + 1;
    this.sums[shard] = (this.sums[shard] as number) + seconds;
    this.totals[shard] = (this.totals[shard] as number) + 1;
  }

  get() {
    const values: MetricValue[] = [];
    this.counts.forEach((c, s) => {
      const shard = String(s);
      let cumulative = 0;
      this.buckets.forEach((le, i) => {
        cumulative += c[i] as number;
        values.push({ metricName: `${this.name}_bucket`, labels: { shard, le }, value: cumulative });
      });
      values.push({
        metricName: `${this.name}_bucket`,
        labels: { shard, le: '+Inf' },
        value: this.totals[s] as number,
      });
      values.push({ metricName: `${this.name}_sum`, labels: { shard }, value: this.sums[s] as number });
      values.push({ metricName: `${this.name}_count`, labels: { shard }, value: this.totals[s] as number });
    });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}
