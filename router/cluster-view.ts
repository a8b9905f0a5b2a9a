/**
 * The data of the live cluster view on the router's admin port (`/cluster.json`, drawn by
 * `/cluster`): per shard, its readiness as this router sees it, and from the shard's own
 * `/metrics` (admin port) its map version, groups, members, connections, messages per
 * second, database size and the phase and progress of a running migration; from the
 * router's series, its requests, 5xx answers and WebSockets for that shard. Rates are the
 * change since the previous snapshot, taken at most every MIN_RATE_INTERVAL_MS (the page
 * asks every second; more viewers share the same rates).
 */
import type { Registry } from 'prom-client';
import type { ClusterSnapshot, ShardRow } from '../common/cluster-snapshot.js';
import { parsePromText, type Sample, sumOf } from '../common/prom-text.js';
import type { Topology } from '../common/topology.js';
import type { MapView } from './shard-map.js';

export type { ClusterSnapshot, ShardRow };

const MIN_RATE_INTERVAL_MS = 500;
const RESHARD_STATES = ['copying', 'fenced', 'switched'] as const;

export interface ClusterSources {
  readonly topology: Topology;
  readonly registry: Registry;
  map(): MapView;
}

type Fetch = (
  url: string,
  init: { signal: AbortSignal },
) => Promise<{ ok: boolean; status: number; text(): Promise<string> }>;

export class ClusterView {
  /** The last value and rate of each counter, by key. */
  private readonly counters = new Map<string, { at: number; value: number; rate: number | null }>();

  constructor(
    private readonly src: ClusterSources,
    private readonly timeoutMs = 1000,
    private readonly fetchImpl: Fetch = fetch,
  ) {}

  async snapshot(now = Date.now()): Promise<ClusterSnapshot> {
    const routerSamples = parsePromText(await this.src.registry.metrics());
    const shards = await Promise.all(
      this.src.topology.states.map((st) =>
        this.row(st.ordinal, st.target, st.ready, st.reason, st.admin, routerSamples, now),
      ),
    );
    const isError = (code: string) => code.startsWith('5');
    return {
      at: new Date(now).toISOString(),
      map: this.src.map(),
      mode: this.src.topology.mode,
      router: {
        requestsPerSecond: this.rate(
          'router:requests',
          sumOf(routerSamples, 'shardchat_router_requests_total'),
          now,
        ),
        errorsPerSecond: this.rate(
          'router:errors',
          sumOf(routerSamples, 'shardchat_router_requests_total', { code: isError }),
          now,
        ),
        websockets: sumOf(routerSamples, 'shardchat_router_websockets'),
      },
      shards,
    };
  }

  private async row(
    ordinal: number,
    address: string,
    ready: boolean,
    reason: string | undefined,
    admin: string | undefined,
    routerSamples: Sample[],
    now: number,
  ): Promise<ShardRow> {
    const shard = String(ordinal);
    const own = {
      requestsPerSecond: this.rate(
        `${shard}:requests`,
        sumOf(routerSamples, 'shardchat_router_requests_total', { shard }),
        now,
      ),
      errorsPerSecond: this.rate(
        `${shard}:errors`,
        sumOf(routerSamples, 'shardchat_router_requests_total', { shard, code: (c) => c.startsWith('5') }),
        now,
      ),
      websockets: sumOf(routerSamples, 'shardchat_router_websockets', { shard }),
    };
    const base = { ordinal, address, ready, reason: reason ?? null, ...own };
    const unknown = {
      mapVersion: null,
      groups: null,
      members: null,
      connections: null,
      messagesPerSecond: null,
      dbBytes: null,
      reshardPhase: null,
      keysImported: null,
      keysExported: null,
    };
    if (!admin)
      return { ...base, ...unknown, error: 'no admin address (topology.adminTemplate or adminTargets)' };
    let samples: Sample[];
    try {
      const res = await this.fetchImpl(`${admin}/metrics`, { signal: AbortSignal.timeout(this.timeoutMs) });
      if (!res.ok) return { ...base, ...unknown, error: `/metrics answered ${res.status}` };
      samples = parsePromText(await res.text());
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      return { ...base, ...unknown, error: `/metrics: ${e.cause?.code ?? e.name}` };
    }
    const phase = RESHARD_STATES.find((state) => sumOf(samples, 'shardchat_reshard_phase', { state }) === 1);
    return {
      ...base,
      mapVersion: sumOf(samples, 'shardchat_map_version'),
      groups: sumOf(samples, 'shardchat_shard_groups'),
      members: sumOf(samples, 'shardchat_shard_members'),
      connections: sumOf(samples, 'shardchat_shard_connections'),
      messagesPerSecond: this.rate(
        `${shard}:messages`,
        sumOf(samples, 'shardchat_shard_messages_total'),
        now,
      ),
      dbBytes: sumOf(samples, 'shardchat_shard_db_bytes'),
      reshardPhase: phase ?? null,
      keysImported: sumOf(samples, 'shardchat_reshard_keys_total', { direction: 'imported' }),
      keysExported: sumOf(samples, 'shardchat_reshard_keys_total', { direction: 'exported' }),
      error: null,
    };
  }

  /** Per second since the previous reading of `key` (null at the first; a restart counts from 0). */
  private rate(key: string, value: number, now: number): number | null {
    const prev = this.counters.get(key);
    if (!prev) {
      this.counters.set(key, { at: now, value, rate: null });
      return null;
    }
    if (now - prev.at < MIN_RATE_INTERVAL_MS) return prev.rate;
    const delta = value >= prev.value ? value - prev.value : value;
    const rate = (delta * 1000) / (now - prev.at);
    this.counters.set(key, { at: now, value, rate });
    return rate;
  }
}
