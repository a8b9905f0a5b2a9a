/**
 * The kubernetes topology (common/kubernetes-topology.ts) against an in-test API server
 * that speaks the list/watch protocol (test/helpers/fake-kube-api.ts): addresses and
 * readiness from pods, pod IP changes and deletions, a StatefulSet scaled away from S,
 * dropped watches, 410 Gone and an API outage.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../common/config.js';
import { KubernetesTopology } from '../../../common/kubernetes-topology.js';
import { FakeKubeApi } from '../../helpers/fake-kube-api.js';
import { waitFor } from '../../helpers/processes.js';

const STS = 'shardchat-shard';
const S = 3;

let api: FakeKubeApi;
let dir: string;
let topo: KubernetesTopology | undefined;
const logLines: Record<string, unknown>[] = [];
const log = pino(
  { level: 'debug' },
  { write: (line: string) => logLines.push(JSON.parse(line) as Record<string, unknown>) },
);

beforeEach(async () => {
  api = await FakeKubeApi.start();
  api.bookmarkIntervalMs = 200;
  dir = await mkdtemp(path.join(os.tmpdir(), 'shardchat-kube-'));
  logLines.length = 0;
});

afterEach(async () => {
  await topo?.stop();
  topo = undefined;
  await api.close();
  await rm(dir, { recursive: true, force: true });
});

async function startTopology(shards = S, namespace = 'default'): Promise<KubernetesTopology> {
  const kc = new KubeConfig();
  kc.loadFromFile(await api.writeKubeconfig(dir, namespace));
  const cfg = parseConfig({
    topology: {
      mode: 'kubernetes',
      shards,
      namespace,
      kubernetes: { statefulSet: STS, port: 8080, adminPort: 9090 },
    },
  });
  topo = new KubernetesTopology(cfg, log, { kubeConfig: kc, backoffMs: 50, maxBackoffMs: 400 });
  topo.start();
  return topo;
}

function cluster(n = S): void {
  api.putStatefulSet(STS, n);
  for (let i = 0; i < n; i++) api.putPod(`${STS}-${i}`, { ip: `10.0.0.${10 + i}` });
}

const until = <T>(fn: () => T, what: string, timeoutMs = 5000) =>
  waitFor(fn, { timeoutMs, intervalMs: 20, what });

describe('kubernetes topology', () => {
  it('takes addresses and readiness from the pods of the StatefulSet, selected by its labels', async () => {
    cluster();
    // A pod of another app with a similar name is not selected.
    api.putPod(`${STS}-9`, { ip: '10.9.9.9', labels: { app: 'other' } });
    const t = await startTopology();
    expect(t.status().synced).toBe(false);
    await until(() => t.status().synced && t.states.every((s) => s.ready), 'all shards ready');
    expect(t.states.map((s) => s.target)).toEqual([
      'http://10.0.0.10:8080',
      'http://10.0.0.11:8080',
      'http://10.0.0.12:8080',
    ]);
    expect(t.states.map((s) => t.adminOf(s.ordinal))).toEqual([
      'http://10.0.0.10:9090',
      'http://10.0.0.11:9090',
      'http://10.0.0.12:9090',
    ]);
    expect(t.states[1]).toMatchObject({ host: '10.0.0.11', port: 8080, pod: `${STS}-1`, phase: 'Running' });
    expect(t.status()).toMatchObject({
      mode: 'kubernetes',
      statefulSetReplicas: 3,
      replicasMismatch: false,
      warnings: [],
    });
    // One informer on the StatefulSet by name, one on its pods by its selector.
    const stsList = api.requestsOf('statefulsets', false)[0];
    expect(stsList?.query.fieldSelector).toBe(`metadata.name=${STS}`);
    expect(stsList?.authorization).toBe('Bearer fake-token');
    const podWatch = await until(() => api.requestsOf('pods', true)[0], 'a pod watch');
    expect(podWatch.query.labelSelector).toBe(`app.kubernetes.io/name=${STS}`);
    expect(podWatch.query.allowWatchBookmarks).toBe('true');
    expect(Number(podWatch.query.timeoutSeconds)).toBeGreaterThan(0);
    expect(podWatch.query.resourceVersion).toMatch(/^\d+$/);
  });

  it('a pod that is not Running, not Ready, being deleted or gone is not ready; its keys still map to it', async () => {
    cluster();
    const t = await startTopology();
    await until(() => t.states.every((s) => s.ready), 'all ready');
    const changes: [number, boolean][] = [];
    t.on('change', (s) => changes.push([s.ordinal, s.ready]));

    api.putPod(`${STS}-1`, { ip: '10.0.0.11', ready: false });
    await until(() => !t.isReady(1), 'shard 1 not ready');
    expect(t.states[1]?.reason).toBe('pod is not Ready');
    expect(t.isReady(0) && t.isReady(2)).toBe(true);

    api.putPod(`${STS}-1`, { ip: '10.0.0.11' });
    await until(() => t.isReady(1), 'shard 1 ready again');

    api.putPod(`${STS}-2`, { ip: '10.0.0.12', deleting: true });
    await until(() => !t.isReady(2), 'shard 2 terminating');
    expect(t.states[2]?.reason).toBe('pod is being deleted');
    api.delete('pods', `${STS}-2`);
    await until(() => t.states[2]?.pod === undefined, 'shard 2 without pod');
    expect(t.states[2]).toMatchObject({ ready: false, reason: 'no pod' });
    // The last known address stays until a new pod shows up.
    expect(t.states[2]?.target).toBe('http://10.0.0.12:8080');

    api.putPod(`${STS}-2`, { ip: '10.0.0.12', phase: 'Pending', ready: false });
    await until(() => t.states[2]?.phase === 'Pending', 'pending pod seen');
    expect(t.isReady(2)).toBe(false);
    expect(t.shards).toBe(3);
    expect(changes).toEqual([
      [1, false],
      [1, true],
      [2, false],
    ]);
  });

  it('follows a pod to its new IP (an address event), and an ordinal without a pod is not ready', async () => {
    api.putStatefulSet(STS, 3);
    api.putPod(`${STS}-0`, { ip: '10.0.0.10' });
    api.putPod(`${STS}-1`, { ip: '10.0.0.11' });
    const t = await startTopology();
    await until(() => t.isReady(0) && t.isReady(1), 'shards 0 and 1 ready');
    expect(t.states[2]).toMatchObject({ ready: false, target: '', admin: undefined });
    const moved: string[] = [];
    t.on('address', (s) => moved.push(`${s.ordinal}:${s.target}`));
    api.delete('pods', `${STS}-1`);
    api.putPod(`${STS}-1`, { ip: '10.0.0.99', ready: false });
    await until(() => t.states[1]?.podIP === '10.0.0.99', 'new IP seen');
    expect(t.states[1]).toMatchObject({
      target: 'http://10.0.0.99:8080',
      admin: 'http://10.0.0.99:9090',
      ready: false,
    });
    api.putPod(`${STS}-1`, { ip: '10.0.0.99' });
    await until(() => t.isReady(1), 'shard 1 ready at its new IP');
    api.putPod(`${STS}-2`, { ip: '10.0.0.12' });
    await until(() => t.isReady(2), 'shard 2 appears');
    expect(moved).toEqual(['1:http://10.0.0.99:8080', '2:http://10.0.0.12:8080']);
  });

  it('a StatefulSet scaled away from S is reported (status, log) and never changes S or the routing', async () => {
    cluster();
    const t = await startTopology();
    await until(() => t.states.every((s) => s.ready), 'all ready');
    const statuses: boolean[] = [];
    t.on('status', (st) => statuses.push(st.replicasMismatch === true));

    api.scale(STS, 5);
    api.putPod(`${STS}-3`, { ip: '10.0.0.13' });
    api.putPod(`${STS}-4`, { ip: '10.0.0.14' });
    await until(() => t.status().replicasMismatch && t.snapshot().ignoredPods, 'mismatch reported');
    await until(() => (t.snapshot().ignoredPods as string[]).length === 2, 'pods 3 and 4 ignored');
    expect(t.shards).toBe(3);
    expect(t.states).toHaveLength(3);
    expect(t.status().statefulSetReplicas).toBe(5);
    expect(t.status().warnings.join('\n')).toMatch(
      /spec\.replicas 5 but topology\.shards \(S\) is 3: routing stays on 3/,
    );
    expect(t.status().warnings.join('\n')).toMatch(/shardchat-shard-3, shardchat-shard-4/);
    expect(logLines.some((l) => l.level === 40 && /differs from topology\.shards/.test(String(l.msg)))).toBe(
      true,
    );
    expect(logLines.some((l) => /ordinal >= S are ignored/.test(String(l.msg)))).toBe(true);

    // Scaled down below S: the missing ordinal is not ready, S stays 3.
    api.scale(STS, 2);
    api.delete('pods', `${STS}-4`);
    api.delete('pods', `${STS}-3`);
    api.delete('pods', `${STS}-2`);
    await until(() => !t.isReady(2) && t.status().statefulSetReplicas === 2, 'scaled down to 2');
    expect(t.status().replicasMismatch).toBe(true);
    expect(t.shards).toBe(3);

    api.scale(STS, 3);
    await until(() => t.status().replicasMismatch === false, 'mismatch gone');
    expect(t.status().warnings).toEqual([]);
    expect(statuses).toContain(true);
    expect(statuses[statuses.length - 1]).toBe(false);
  });

  it('a dropped watch is restarted from its resourceVersion (no relist) and sees later changes', async () => {
    cluster();
    const t = await startTopology();
    await until(() => t.states.every((s) => s.ready) && api.openWatches === 2, 'synced, two watches');
    const lists = api.requests.filter((r) => !r.watch).length;
    const watches = api.requests.filter((r) => r.watch).length;
    api.dropWatches();
    api.putPod(`${STS}-0`, { ip: '10.0.0.10', ready: false });
    await until(() => !t.isReady(0), 'change after the drop seen');
    await until(() => api.openWatches === 2, 'watches open again');
    expect(api.requests.filter((r) => r.watch).length).toBeGreaterThanOrEqual(watches + 2);
    expect(api.requests.filter((r) => !r.watch).length).toBe(lists);
    const again = api.requestsOf('pods', true).at(-1);
    expect(Number(again?.query.resourceVersion)).toBeGreaterThan(0);
  });

  it('410 Gone on a watch makes the informer list again and converge', async () => {
    cluster();
    const t = await startTopology();
    await until(() => t.states.every((s) => s.ready) && api.openWatches === 2, 'synced');
    const podLists = api.requestsOf('pods', false).length;
    // While no watch is open, pod 1 moves and pod 2 goes away; then history is compacted.
    api.bookmarkIntervalMs = 60_000;
    await api.goDown('refuse');
    await api.comeBack();
    api.putPod(`${STS}-1`, { ip: '10.0.1.11' });
    api.delete('pods', `${STS}-2`);
    api.compact();
    await until(
      () => t.states[1]?.target === 'http://10.0.1.11:8080' && !t.isReady(2),
      'converged after relist',
      10_000,
    );
    expect(api.expiredAnswers).toBeGreaterThan(0);
    expect(api.requestsOf('pods', false).length).toBeGreaterThan(podLists);
    expect(t.isReady(0) && t.isReady(1)).toBe(true);
  });

  it('while the API is down the last known topology is kept; it recovers with backoff', async () => {
    cluster();
    const t = await startTopology();
    await until(() => t.states.every((s) => s.ready) && api.openWatches === 2, 'synced');
    const before = t.states.map((s) => ({ target: s.target, ready: s.ready }));
    await api.goDown('refuse');
    await until(
      () => !t.snapshot().api || (t.snapshot().api as { connected: boolean }).connected === false,
      'outage seen',
    );
    await until(() => /unreachable/.test(t.status().warnings.join()), 'outage reported');
    const tries = api.requests.length;
    await new Promise((r) => setTimeout(r, 800));
    expect(t.states.map((s) => ({ target: s.target, ready: s.ready }))).toEqual(before);
    expect(t.status().synced).toBe(true);

    // 503s are an outage too.
    await api.comeBack();
    await api.goDown('503');
    await new Promise((r) => setTimeout(r, 800));
    expect(api.requests.length).toBeGreaterThan(tries);
    expect(t.states.map((s) => ({ target: s.target, ready: s.ready }))).toEqual(before);
    // Backoff: retries are spaced (capped at 400 ms here), not a busy loop.
    const failedTries = api.requests.filter((r) => r.at > Date.now() - 800).length;
    expect(failedTries).toBeLessThan(20);

    api.putPod(`${STS}-0`, { ip: '10.0.0.50', ready: false });
    await api.comeBack();
    await until(() => t.states[0]?.target === 'http://10.0.0.50:8080' && !t.isReady(0), 'recovered', 10_000);
    await until(() => (t.snapshot().api as { connected: boolean }).connected, 'connected again');
    expect(t.status().warnings).toEqual([]);
  });

  it('refresh() (after a 421) lists again, at most once per interval, and keeps the topology', async () => {
    cluster();
    const t = await startTopology();
    await until(() => t.states.every((s) => s.ready) && api.openWatches === 2, 'synced');
    const lists = api.requests.filter((r) => !r.watch).length;
    t.refresh();
    t.refresh();
    await until(() => api.requests.filter((r) => !r.watch).length === lists + 2, 'one more list of each');
    await until(() => api.openWatches === 2, 'old watches replaced');
    expect(t.states.every((s) => s.ready)).toBe(true);
    api.putPod(`${STS}-1`, { ip: '10.0.0.11', ready: false });
    await until(() => !t.isReady(1), 'the new informers follow changes');
    expect(api.requests.filter((r) => !r.watch).length).toBe(lists + 2);
  });

  it('no StatefulSet: synced, nothing ready, warned; it appears later', async () => {
    const t = await startTopology();
    await until(() => t.status().synced, 'synced');
    expect(t.states.every((s) => !s.ready)).toBe(true);
    expect(t.status().warnings.join()).toMatch(/not found/);
    cluster();
    await until(() => t.states.every((s) => s.ready), 'all ready once created');
  });
  it('resize() (a shard map with more shards) tracks the pods of the new ordinals, already listed or later', async () => {
    api.putStatefulSet(STS, 5);
    for (let i = 0; i < 4; i++) api.putPod(`${STS}-${i}`, { ip: `10.0.0.${10 + i}` });
    const t = await startTopology();
    await until(() => (t.snapshot().ignoredPods as string[]).length === 1, 'pod 3 ignored');
    const grown: number[] = [];
    const addresses: number[] = [];
    t.on('grown', (n) => grown.push(n));
    t.on('address', (s) => addresses.push(s.ordinal));
    expect(t.resize(5)).toBe(5);
    expect(grown).toEqual([5]);
    expect(t.shards).toBe(5);
    // Pod 3 was listed already: addressable and ready at once; no pod 4 yet.
    expect(t.states[3]).toMatchObject({ target: 'http://10.0.0.13:8080', ready: true, pod: `${STS}-3` });
    expect(addresses).toEqual([3]);
    expect(t.states[4]).toMatchObject({ ready: false, target: '' });
    expect(t.snapshot().ignoredPods).toEqual([]);
    expect(t.status().replicasMismatch).toBe(false);
    api.putPod(`${STS}-4`, { ip: '10.0.0.14' });
    await until(() => t.isReady(4), 'shard 4 ready');
    expect(t.adminOf(4)).toBe('http://10.0.0.14:9090');
    // Never shrinks.
    expect(t.resize(2)).toBe(5);
  });
});
