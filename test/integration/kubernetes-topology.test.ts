/**
 * The kubernetes topology mode with real processes (`npm run build` first): routers and
 * shards started through the built CLI with KUBECONFIG pointing at an in-test API
 * server (test/helpers/fake-kube-api.ts; no API server runs on the CI machines). Each
 * fake pod has its own loopback IP (127.0.0.2, 127.0.0.3, ...) and every "pod" listens
 * on the same configured port there, as pods do.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api as chatApi } from '../helpers/cluster.js';
import { FakeKubeApi } from '../helpers/fake-kube-api.js';
import { echoOf, errorOf, metricValue, request } from '../helpers/http.js';
import { podIp, startKubeChat } from '../helpers/kube-pods.js';
import {
  BACKEND,
  childEnv,
  freePorts,
  type ManagedProcess,
  startProcess,
  useProcessCleanup,
  waitFor,
} from '../helpers/processes.js';
import {
  loadShardFunction,
  type RouterProcess,
  type ShardFunctionApi,
  startRouter,
} from '../helpers/shardchat.js';

const registry = useProcessCleanup();
const STS = 'shardchat-shard';
const S = 3;
const ipOf = podIp;

let sfApi: ShardFunctionApi;
beforeAll(async () => {
  sfApi = await loadShardFunction();
});

const unique = (prefix = 'g') => `${prefix}${randomBytes(5).toString('hex')}`;
const groupPath = (key: string) => `/groups/${encodeURIComponent(key)}/messages`;
function keyOn(shard: number): string {
  const sf = new sfApi.ShardFunction(sfApi.DEFAULT_SHARD_SPEC);
  const prefix = unique();
  for (let i = 0; i < 10_000; i++) {
    const key = `${prefix}-${i}`;
    if (sf.shardOfKey(key, S) === shard) return key;
  }
  throw new Error(`no key for shard ${shard}`);
}

/** A test backend standing in for pod `name`, listening on ip:port (and ip:adminPort). */
function startPodBackend(name: string, ip: string, port: number, adminPort: number): Promise<ManagedProcess> {
  return startProcess({
    name: `${name}@${ip}`,
    args: [BACKEND, String(port), name, String(adminPort)],
    env: childEnv({ BACKEND_HOST: ip }),
    waitForLine: new RegExp(`^admin listening ${adminPort}$`),
  });
}

interface Topo {
  mode: string;
  shards: number;
  statefulSetReplicas: number | null;
  members: { ordinal: number; target: string; ready: boolean; pod?: string }[];
}

describe('router in kubernetes mode (backends as pods)', () => {
  let kube: FakeKubeApi;
  let router: RouterProcess;
  let port: number;
  let adminPort: number;
  const topology = async (): Promise<Topo> =>
    JSON.parse((await request(`${router.adminUrl}/topology`)).text) as Topo;

  beforeAll(async () => {
    kube = await FakeKubeApi.start();
    const dir = await registry.tempDir();
    [port, adminPort] = (await freePorts(2)) as [number, number];
    await Promise.all(
      Array.from({ length: S }, (_, i) => startPodBackend(`shard-${i}`, ipOf(i), port, adminPort)),
    );
    kube.putStatefulSet(STS, S);
    for (let i = 0; i < S; i++) kube.putPod(`${STS}-${i}`, { ip: ipOf(i) });
    const kubeconfig = await kube.writeKubeconfig(dir);
    router = await startRouter(
      dir,
      {
        topology: {
          mode: 'kubernetes',
          shards: S,
          namespace: 'default',
          kubernetes: { statefulSet: STS, port, adminPort },
        },
        log: { level: 'info' },
      },
      { env: { KUBECONFIG: kubeconfig } },
    );
    await waitFor(async () => (await request(`${router.adminUrl}/readyz`)).status === 200, {
      what: 'router /readyz 200 (topology listed)',
    });
  }, 60_000);

  afterAll(async () => {
    await kube?.close();
  });

  it('keys go to the pod of their ordinal; /topology shows the kubernetes view', async () => {
    for (let i = 0; i < S; i++) {
      const res = await request(`${router.url}${groupPath(keyOn(i))}`);
      expect(res.status).toBe(200);
      const echo = echoOf(res);
      expect(echo.name).toBe(`shard-${i}`);
      expect(echo.headers['x-shardchat-shard']).toBe(`${i}/${S}`);
    }
    const t = await topology();
    expect(t).toMatchObject({ mode: 'kubernetes', shards: S, statefulSetReplicas: S });
    expect(t.members.map((m) => m.target)).toEqual(
      Array.from({ length: S }, (_, i) => `http://${ipOf(i)}:${port}`),
    );
    expect(t.members.map((m) => m.pod)).toEqual(Array.from({ length: S }, (_, i) => `${STS}-${i}`));
    expect(kube.requests.every((r) => r.authorization === 'Bearer fake-token')).toBe(true);
  });

  it('a pod that is not Ready gets 503 for its keys only, and serves again when Ready', async () => {
    kube.putPod(`${STS}-1`, { ip: ipOf(1), ready: false });
    try {
      await waitFor(async () => (await topology()).members[1]?.ready === false, {
        what: 'shard 1 not ready',
      });
      const res = await request(`${router.url}${groupPath(keyOn(1))}`);
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toBeDefined();
      expect(errorOf(res).error.code).toBe('shard_unavailable');
      for (const i of [0, 2])
        expect(echoOf(await request(`${router.url}${groupPath(keyOn(i))}`)).name).toBe(`shard-${i}`);
      const ready = JSON.parse((await request(`${router.adminUrl}/readyz`)).text) as {
        notReadyShards: number[];
      };
      expect(ready.notReadyShards).toEqual([1]);
      const metrics = (await request(`${router.adminUrl}/metrics`)).text;
      expect(metricValue(metrics, 'shardchat_router_shard_ready', { shard: '1' })).toBe(0);
    } finally {
      kube.putPod(`${STS}-1`, { ip: ipOf(1) });
    }
    await waitFor(async () => (await topology()).members[1]?.ready === true, { what: 'shard 1 ready again' });
    expect(echoOf(await request(`${router.url}${groupPath(keyOn(1))}`)).name).toBe('shard-1');
  });

  it("a 'kubectl scale' of the StatefulSet is reported in /readyz and metrics; routing stays on S", async () => {
    kube.scale(STS, 5);
    try {
      const body = await waitFor(
        async () => {
          const res = await request(`${router.adminUrl}/readyz`);
          const b = JSON.parse(res.text) as Record<string, unknown>;
          return res.status === 200 && b.replicasMismatch === true ? b : undefined;
        },
        { what: '/readyz reporting the mismatch' },
      );
      expect(body).toMatchObject({ status: 'ready', shards: S, mode: 'kubernetes', statefulSetReplicas: 5 });
      expect((body.warnings as string[]).join('\n')).toMatch(
        /spec\.replicas 5 but topology\.shards \(S\) is 3/,
      );
      const metrics = (await request(`${router.adminUrl}/metrics`)).text;
      expect(metricValue(metrics, 'shardchat_router_topology_replicas_mismatch', {})).toBe(1);
      expect(metricValue(metrics, 'shardchat_router_topology_statefulset_replicas', {})).toBe(5);
      expect(metricValue(metrics, 'shardchat_router_shards', {})).toBe(S);
      // Same keys, same shards, same S in the header.
      for (let i = 0; i < S; i++) {
        const echo = echoOf(await request(`${router.url}${groupPath(keyOn(i))}`));
        expect(echo.name).toBe(`shard-${i}`);
        expect(echo.headers['x-shardchat-shard']).toBe(`${i}/${S}`);
      }
      await router.proc.waitForLine(/differs from topology\.shards/);
    } finally {
      kube.scale(STS, S);
    }
    await waitFor(
      async () =>
        (JSON.parse((await request(`${router.adminUrl}/readyz`)).text) as Record<string, unknown>)
          .replicasMismatch === false,
      { what: 'mismatch cleared' },
    );
    const metrics = (await request(`${router.adminUrl}/metrics`)).text;
    expect(metricValue(metrics, 'shardchat_router_topology_replicas_mismatch', {})).toBe(0);
  });

  it('a pod recreated with a new IP is followed; pooled connections to the old IP are not reused', async () => {
    const key = keyOn(2);
    // Fill the pool with keep-alive connections to the old pod (parallel requests).
    const before = await Promise.all(
      Array.from({ length: 4 }, () => request(`${router.url}${groupPath(key)}`)),
    );
    for (const r of before) expect(echoOf(r).name).toBe('shard-2');
    // The old backend keeps running: a reused old socket would still be answered by it.
    const newIp = '127.0.0.9';
    await startPodBackend('shard-2-new', newIp, port, adminPort);
    kube.delete('pods', `${STS}-2`);
    kube.putPod(`${STS}-2`, { ip: newIp });
    await waitFor(async () => (await topology()).members[2]?.target === `http://${newIp}:${port}`, {
      what: 'shard 2 at its new IP',
    });
    await waitFor(async () => (await topology()).members[2]?.ready === true, { what: 'shard 2 ready' });
    for (let n = 0; n < 6; n++) {
      const echo = echoOf(await request(`${router.url}${groupPath(key)}`));
      expect(echo.name).toBe('shard-2-new');
    }
    await router.proc.waitForLine(/shard address changed/);
  });

  it('the router keeps serving through a Kubernetes API outage with the last known topology', async () => {
    await kube.goDown('refuse');
    try {
      await router.proc.waitForLine(/Kubernetes API error/);
      for (let i = 0; i < 2; i++) {
        expect((await request(`${router.url}${groupPath(keyOn(i))}`)).status).toBe(200);
      }
      const ready = await request(`${router.adminUrl}/readyz`);
      expect(ready.status).toBe(200);
      expect(ready.text).toMatch(/unreachable/);
    } finally {
      await kube.comeBack();
    }
    kube.putPod(`${STS}-0`, { ip: ipOf(0), ready: false });
    await waitFor(async () => (await topology()).members[0]?.ready === false, {
      what: 'a change after the outage seen',
      timeoutMs: 40_000,
    });
    kube.putPod(`${STS}-0`, { ip: ipOf(0) });
    await waitFor(async () => (await topology()).members[0]?.ready === true, { what: 'shard 0 ready' });
  }, 60_000);

  it('a router that cannot reach the API is not ready (syncing) and answers 503 for every key', async () => {
    const down = await FakeKubeApi.start();
    const dir = await registry.tempDir('test');
    const kubeconfig = await down.writeKubeconfig(dir);
    await down.goDown('refuse');
    const lonely = await startRouter(
      dir,
      { topology: { mode: 'kubernetes', shards: S, kubernetes: { statefulSet: STS, port, adminPort } } },
      { env: { KUBECONFIG: kubeconfig }, scope: 'test' },
    );
    const ready = await request(`${lonely.adminUrl}/readyz`);
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.text)).toMatchObject({ status: 'syncing', notReadyShards: [0, 1, 2] });
    const res = await request(`${lonely.url}${groupPath(keyOn(0))}`);
    expect(res.status).toBe(503);
    expect(errorOf(res).error.code).toBe('shard_unavailable');
    expect((await lonely.proc.stop(5000)).code).toBe(0);
  });

  it('stops cleanly on SIGTERM (the informers do not hold it)', async () => {
    const exit = await router.proc.stop(5000);
    expect(exit).toEqual({ code: 0, signal: null });
  });
});

describe('chat shards in kubernetes mode (cross-shard calls to pod IPs)', () => {
  let kube: FakeKubeApi;
  let routerUrl: string;
  let shardAdmin: string[];

  beforeAll(async () => {
    kube = await FakeKubeApi.start();
    const c = await startKubeChat(kube, await registry.tempDir(), { shards: S, statefulSet: STS });
    routerUrl = c.routerUrl;
    shardAdmin = Array.from({ length: S }, (_, i) => c.adminOf(i));
  }, 60_000);

  afterAll(async () => {
    await kube?.close();
  });

  it('a sub-conversation on another shard is created through its pod IP admin address', async () => {
    const token = async (u: string) => {
      const r = await chatApi(routerUrl, 'POST', `/users/${u}/token`);
      expect(r.status).toBe(201);
      return r.body.token as string;
    };
    const sf = new sfApi.ShardFunction(sfApi.DEFAULT_SHARD_SPEC);
    // A parent whose ~1 lives on another shard, so that the join needs an internal call.
    let parent = '';
    for (let i = 0; i < 1000; i++) {
      const g = unique('room');
      if (sf.shardOfKey(g, S) !== sf.shardOfKey(`${g}~1`, S)) {
        parent = g;
        break;
      }
    }
    const owner = await token('owner');
    expect(
      (
        await chatApi(routerUrl, 'PUT', `/groups/${parent}`, owner, {
          subject: 'k8s',
          capacity: 1,
          overflow: 'shard',
        })
      ).status,
    ).toBe(201);
    const u2 = await token('second');
    const joined = await chatApi(routerUrl, 'POST', `/groups/${parent}/members`, u2, { userId: 'second' });
    expect(joined.status, JSON.stringify(joined.body)).toBe(200);
    expect(joined.body.groupId).toBe(`${parent}~1`);
    const sub = await chatApi(routerUrl, 'GET', `/groups/${parent}~1`, u2);
    expect(sub.status, JSON.stringify(sub.body)).toBe(200);
  });

  it("each shard's /readyz reports the StatefulSet (mismatch after a scale) and stays ready", async () => {
    kube.scale(STS, 4);
    try {
      for (const admin of shardAdmin) {
        await waitFor(
          async () => {
            const res = await request(`${admin}/readyz`);
            const b = JSON.parse(res.text) as Record<string, unknown>;
            return res.status === 200 && b.mode === 'kubernetes' && b.replicasMismatch === true;
          },
          { what: `${admin}/readyz reporting the mismatch` },
        );
        const metrics = (await request(`${admin}/metrics`)).text;
        expect(metricValue(metrics, 'shardchat_shard_topology_replicas_mismatch', {})).toBe(1);
      }
    } finally {
      kube.scale(STS, S);
    }
  });
});
