/**
 * The cluster view's data (router/cluster-view.ts) and the Prometheus text reader under it
 * (common/prom-text.ts): shard rows from the shards' /metrics texts (a fake fetch) and the
 * router's own registry, rates between two snapshots, a shard that does not answer, and a
 * migration's phase.
 */
import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { parsePromText, sumOf } from '../../../common/prom-text.js';
import type { ShardState, Topology } from '../../../common/topology.js';
import { ClusterView } from '../../../router/cluster-view.js';

describe('parsePromText', () => {
  it('reads names, labels (escapes decoded) and values; skips comments and bad lines', () => {
    const samples = parsePromText(
      [
        '# HELP x_total A counter.',
        '# TYPE x_total counter',
        'x_total{shard="0",code="200"} 5',
        'x_total{shard="0",code="503"} 2 1700000000000',
        'x_total{shard="1",code="200"} 7',
        'y{path="a\\"b\\\\c"} 1.5',
        'z NaN',
        'not a sample',
        '',
      ].join('\n'),
    );
    expect(samples).toHaveLength(5);
    expect(samples[3]).toEqual({ name: 'y', labels: { path: 'a"b\\c' }, value: 1.5 });
    expect(sumOf(samples, 'x_total')).toBe(14);
    expect(sumOf(samples, 'x_total', { shard: '0' })).toBe(7);
    expect(sumOf(samples, 'x_total', { code: (c) => c.startsWith('5') })).toBe(2);
    expect(sumOf(samples, 'z')).toBe(0);
    expect(sumOf(samples, 'missing')).toBe(0);
  });
});

function state(ordinal: number, ready = true, admin: string | null = `http://shard-${ordinal}`): ShardState {
  return {
    ordinal,
    host: '127.0.0.1',
    port: 8081 + ordinal,
    target: `http://127.0.0.1:${8081 + ordinal}`,
    admin: admin ?? undefined,
    ready,
    consecutiveFailures: 0,
    reason: ready ? undefined : 'connection refused',
    since: '',
  } as ShardState;
}

function shardMetrics(messages: number, phase?: string): string {
  return [
    'shardchat_map_version 4',
    'shardchat_shard_groups 12',
    'shardchat_shard_members 30',
    'shardchat_shard_connections 3',
    `shardchat_shard_messages_total ${messages}`,
    'shardchat_shard_db_bytes 65536',
    ...['copying', 'fenced', 'switched'].map(
      (s) => `shardchat_reshard_phase{state="${s}"} ${s === phase ? 1 : 0}`,
    ),
    'shardchat_reshard_keys_total{direction="imported"} 9',
    'shardchat_reshard_keys_total{direction="exported"} 2',
  ].join('\n');
}

describe('ClusterView', () => {
  it('rows from the shards’ metrics and the router’s series; rates between snapshots', async () => {
    const registry = new Registry();
    const requests = new Counter({
      name: 'shardchat_router_requests_total',
      help: 'h',
      labelNames: ['shard', 'code'],
      registers: [registry],
    });
    const topology = {
      mode: 'static',
      states: [state(0), state(1, false), state(2, true, null)],
    } as unknown as Topology;
    let messages = 100;
    const view = new ClusterView(
      { topology, registry, map: () => ({ version: 4, shards: 3, assignment: 'jump' }) },
      1000,
      async (url) => {
        if (url.startsWith('http://shard-1'))
          throw Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } });
        return { ok: true, status: 200, text: async () => shardMetrics(messages, 'copying') };
      },
    );
    requests.inc({ shard: '0', code: '200' }, 10);
    const first = await view.snapshot(1_000_000);
    expect(first.shards[0]).toMatchObject({
      ordinal: 0,
      ready: true,
      mapVersion: 4,
      groups: 12,
      members: 30,
      connections: 3,
      dbBytes: 65536,
      messagesPerSecond: null,
      reshardPhase: 'copying',
      keysImported: 9,
      keysExported: 2,
      error: null,
    });
    expect(first.shards[1]).toMatchObject({
      ready: false,
      reason: 'connection refused',
      groups: null,
      error: '/metrics: ECONNREFUSED',
    });
    expect(first.shards[2]?.error).toMatch(/^no admin address/);
    messages = 150;
    requests.inc({ shard: '0', code: '200' }, 20);
    requests.inc({ shard: '0', code: '503' }, 2);
    const second = await view.snapshot(1_002_000);
    expect(second.shards[0]).toMatchObject({
      messagesPerSecond: 25,
      requestsPerSecond: 11,
      errorsPerSecond: 1,
    });
    expect(second.router).toMatchObject({ requestsPerSecond: 11, errorsPerSecond: 1 });
    // A snapshot right after keeps the rates (no division by a few milliseconds).
    const third = await view.snapshot(1_002_010);
    expect(third.shards[0]?.messagesPerSecond).toBe(25);
  });
});
