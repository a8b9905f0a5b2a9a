/**
 * A real Prometheus (Debian's package) scraping a local cluster (router and 3 shards on
 * loopback) the way the chart does: job shardchat-router on the router's admin port,
 * job shardchat-shard on each shard's, /metrics every second, a `pod` label per target.
 * Traffic from the client SDK (users in groups on two of the three shards, posting over
 * HTTP and over group WebSockets) must show up through Prometheus's query API: every
 * target up, open connections and stored messages per shard (none on the shard that owns
 * no group), and the router's request rate per shard. `promtool check metrics` lints the
 * router's and every shard's exposition.
 *
 * Skipped where /usr/bin/prometheus or /usr/bin/promtool is missing, unless
 * SHARDCHAT_REQUIRE_PROMETHEUS=1 (then the file fails): .ci/run installs them.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatApi } from '../../client/api.js';
import { GroupConnection, type Outgoing } from '../../client/group-connection.js';
import { initHash } from '../../common/hash.js';
import { DEFAULT_SHARD_SPEC, ShardFunction, type ShardSpec } from '../../common/shard-function.js';
import { type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  byLabel,
  HAVE_PROMETHEUS,
  type Prometheus,
  type PromSample,
  promtoolCheckMetrics,
  startPrometheus,
} from '../helpers/prometheus.js';

useProcessCleanup();

const S = 3;
const START_MS = 120_000;
/** The shards that own the test's groups; shard 2 owns none and must see no traffic. */
const BUSY = [0, 1];
const IDLE = 2;

/** The first `prefix-N` whose shard (under the cluster's shard function) is in `wanted`. */
function namesOn(fn: ShardFunction, prefix: string, wanted: number[], count: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < count && i < 10_000; i++) {
    const name = `${prefix}-${i}`;
    if (wanted.includes(fn.shardOfKey(name, S))) out.push(name);
  }
  if (out.length < count) throw new Error(`no ${count} names ${prefix}-N on shards ${wanted}`);
  return out;
}

/** Checks that every sample's `pod` target label names the shard that exported it. */
function expectPodsMatchShards(samples: PromSample[]): void {
  for (const s of samples) expect(s.metric.pod).toBe(`shardchat-shard-${s.metric.shard}`);
}

describe.skipIf(!HAVE_PROMETHEUS)('Prometheus scraping a local cluster', () => {
  let c: Cluster;
  let prom: Prometheus;
  const conns: GroupConnection[] = [];

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), { shards: S });
    prom = await startPrometheus(await defaultRegistry.tempDir('file', 'shardchat-prometheus-'), [
      {
        job: 'shardchat-router',
        targets: [{ address: `127.0.0.1:${c.router.adminPort}`, pod: 'shardchat-router-0' }],
      },
      {
        job: 'shardchat-shard',
        targets: c.shards.map((s) => ({
          address: `127.0.0.1:${s.adminPort}`,
          pod: `shardchat-shard-${s.ordinal}`,
        })),
      },
    ]);
  }, START_MS);

  afterAll(async () => {
    for (const conn of conns) conn.close();
    await defaultRegistry.cleanup();
  });

  it('sees every target up, and connections, messages and requests per shard', async () => {
    // Every target scraped once before any traffic, so that counters start from 0 in the TSDB.
    const up = await prom.until('up', (r) => r.length === S + 1 && r.every((s) => s.value === 1), {
      what: `up == 1 for the router and ${S} shards`,
    });
    expect(up.map((s) => `${s.metric.job} ${s.metric.pod}`).sort()).toEqual([
      'shardchat-router shardchat-router-0',
      ...c.shards.map((s) => `shardchat-shard shardchat-shard-${s.ordinal}`),
    ]);

    // --- who lives where: groups and users only on the busy shards ---
    await initHash();
    const fn = new ShardFunction({ ...DEFAULT_SHARD_SPEC, ...(c.config.shardSpec as Partial<ShardSpec>) });
    const [groupA] = namesOn(fn, 'prom-group', [BUSY[0] as number], 1) as [string];
    const [groupB] = namesOn(fn, 'prom-group', [BUSY[1] as number], 1) as [string];
    const [a1, a2, b1, b2] = namesOn(fn, 'prom-user', BUSY, 4) as [string, string, string, string];
    const apis = new Map<string, ChatApi>();
    for (const u of [a1, a2, b1, b2]) {
      const api = new ChatApi({ baseUrl: c.router.url });
      api.token = await api.devToken(u);
      await api.putUser(u, { name: u });
      apis.set(u, api);
    }
    const apiOf = (u: string) => apis.get(u) as ChatApi;
    await apiOf(a1).putGroup(groupA, { subject: 'prometheus A' });
    await apiOf(b1).putGroup(groupB, { subject: 'prometheus B' });
    expect(await apiOf(a2).join(groupA, a2)).toBe(groupA);
    expect(await apiOf(b2).join(groupB, b2)).toBe(groupB);
    expect((await apiOf(a1).getGroup(groupA)).shard).toBe(BUSY[0]);
    expect((await apiOf(b1).getGroup(groupB)).shard).toBe(BUSY[1]);

    // Group WebSockets: two on groupA's shard, one on groupB's, none on the idle shard.
    const open = (u: string, groupId: string) => {
      const conn = new GroupConnection({ api: apiOf(u), groupId, WebSocket });
      conns.push(conn);
      return conn;
    };
    const connA1 = open(a1, groupA);
    const connA2 = open(a2, groupA);
    const connB1 = open(b1, groupB);
    await waitFor(() => conns.every((x) => x.state === 'open'), { what: 'three group WebSockets open' });
    const expectedConnections: Record<string, number> = { [BUSY[0] as number]: 2, [BUSY[1] as number]: 1 };
    expectedConnections[IDLE] = 0;

    // --- phase 1: one message per group; wait until Prometheus has the request series ---
    const stored: Record<string, number> = { [BUSY[0] as number]: 0, [BUSY[1] as number]: 0, [IDLE]: 0 };
    const post = async (u: string, groupId: string, shard: number, text: string) => {
      await apiOf(u).post(groupId, text, `${u}-${stored[shard]}-${Date.now()}`);
      stored[shard] = (stored[shard] ?? 0) + 1;
    };
    await post(a1, groupA, BUSY[0] as number, 'hello A');
    await post(b2, groupB, BUSY[1] as number, 'hello B');
    await prom.until(
      'count by (shard) (shardchat_router_requests_total)',
      (r) => BUSY.every((b) => r.some((s) => s.metric.shard === String(b))),
      { what: 'the router request series of the busy shards in Prometheus' },
    );

    // --- phase 2: more messages over HTTP and over the WebSockets, after that first scrape ---
    for (let i = 0; i < 3; i++) {
      await post(a2, groupA, BUSY[0] as number, `A ${i}`);
      await post(b1, groupB, BUSY[1] as number, `B ${i}`);
    }
    const outs: Outgoing[] = [connA1.send('ws A1'), connA2.send('ws A2'), connB1.send('ws B1')];
    await Promise.all(outs.map((o) => o.done));
    stored[BUSY[0] as number] = (stored[BUSY[0] as number] ?? 0) + 2;
    stored[BUSY[1] as number] = (stored[BUSY[1] as number] ?? 0) + 1;

    // --- what Prometheus says ---
    const connections = await prom.until(
      'shardchat_shard_connections',
      (r) =>
        r.length === S &&
        Object.entries(expectedConnections).every(([shard, n]) => byLabel(r, 'shard')[shard] === n),
      { what: `shard connections ${JSON.stringify(expectedConnections)}` },
    );
    expectPodsMatchShards(connections);
    for (const s of connections) expect(s.metric.job).toBe('shardchat-shard');

    const routerWs = await prom.until(
      'shardchat_router_websockets',
      // prom-client exports no series for a labelled gauge child that was never set: the
      // idle shard's may be absent, which counts as 0.
      (r) =>
        Object.entries(expectedConnections).every(([shard, n]) => (byLabel(r, 'shard')[shard] ?? 0) === n),
      { what: `router websockets ${JSON.stringify(expectedConnections)}` },
    );
    for (const s of routerWs)
      expect(s.metric).toMatchObject({ job: 'shardchat-router', pod: 'shardchat-router-0' });

    const messages = await prom.until(
      'shardchat_shard_messages_total',
      (r) => r.length === S && Object.entries(stored).every(([shard, n]) => byLabel(r, 'shard')[shard] === n),
      { what: `messages stored per shard ${JSON.stringify(stored)}` },
    );
    expectPodsMatchShards(messages);
    expect(byLabel(messages, 'shard')[IDLE]).toBe(0);

    const increase = byLabel(await prom.query('increase(shardchat_shard_messages_total[1m])'), 'shard');
    for (const b of BUSY) expect(increase[b]).toBeGreaterThan(0);
    expect(increase[IDLE]).toBe(0);

    const rates = await prom.until(
      'sum by (shard) (rate(shardchat_router_requests_total[1m]))',
      (r) => BUSY.every((b) => (byLabel(r, 'shard')[b] ?? 0) > 0),
      { what: 'a non-zero router request rate for the busy shards' },
    );
    const rateByShard = byLabel(rates, 'shard');
    for (const b of BUSY) expect(rateByShard[b]).toBeGreaterThan(0);
    // The idle shard got no request: no series, or a zero rate.
    expect(rateByShard[IDLE] ?? 0).toBe(0);
  }, 90_000);

  it('passes promtool check metrics for the router and every shard', async () => {
    const targets = [
      { name: 'router', url: `${c.router.adminUrl}/metrics`, family: 'shardchat_router_requests_total' },
      ...c.shards.map((s) => ({
        name: `shard ${s.ordinal}`,
        url: `${s.adminUrl}/metrics`,
        family: 'shardchat_shard_messages_total',
      })),
    ];
    for (const t of targets) {
      const res = await fetch(t.url);
      expect(res.status).toBe(200);
      const text = await res.text();
      // promtool accepts an empty input: make sure there is something to check.
      expect(text).toContain(`# TYPE ${t.family} counter`);
      const result = await promtoolCheckMetrics(text);
      const problems = `${result.stdout}\n${result.stderr}`
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '');
      expect(problems, `promtool check metrics on the ${t.name}'s /metrics`).toEqual([]);
      expect(result.code, `promtool exit code for the ${t.name}`).toBe(0);
      // The process metrics are there, without prom-client's misnamed `_total` gauges.
      expect(text).toContain('# TYPE nodejs_active_handles gauge');
      expect(text).not.toContain('nodejs_active_handles_total');
    }
  });
});
