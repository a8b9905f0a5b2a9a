/**
 * Resharding in the kubernetes topology mode, with real processes (`npm run build` first):
 * `shardchat shard` processes as the pods of a StatefulSet, each on its own loopback IP
 * (127.0.0.2 .. 127.0.0.5) and the same configured ports, and a `shardchat router`, all
 * listing and watching the in-test API server (test/helpers/fake-kube-api.ts) through
 * KUBECONFIG. The cluster grows from 3 to 4 pods and back:
 *
 * 1. 3 pods, content seeded through the router;
 * 2. `kubectl scale --replicas=4` and pod 3 up: reported as a mismatch, never followed
 *    (pod 3 takes the cluster's map from its peers and owns nothing; no map changes);
 * 3. `shardchat reshard --to 4`: the map has 4 shards, the router routes by it (learnt
 *    from the shards' answers) while its configuration still says 3, and pod 3 holds keys;
 * 4. `shardchat reshard --to 3`, then pod 3 gone and the StatefulSet back to 3.
 *
 * Throughout, everything written in step 1 reads back identical through the router.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api } from '../helpers/cluster.js';
import { FakeKubeApi } from '../helpers/fake-kube-api.js';
import { metricValue, request } from '../helpers/http.js';
import { type KubeChatCluster, podIp, startKubeChat } from '../helpers/kube-pods.js';
import { type ManagedProcess, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  type ChatTarget,
  type Content,
  expectContiguous,
  type MapOf,
  readContent,
  runReshard,
  seed,
  tokensFor,
} from '../helpers/reshard.js';
import { loadShardFunction, type ShardFunctionApi } from '../helpers/shardchat.js';

const registry = useProcessCleanup();
const STS = 'shardchat-shard';
const S = 3;
const LONG = 120_000;

let sfApi: ShardFunctionApi;
beforeAll(async () => {
  sfApi = await loadShardFunction();
});

// biome-ignore lint/suspicious/noExplicitAny: /readyz and /topology bodies as JSON
type Json = Record<string, any>;
const json = async (url: string): Promise<Json> => JSON.parse((await request(url)).text) as Json;
const metricsOf = async (admin: string) => (await request(`${admin}/metrics`)).text;

describe('kubernetes mode: 3 to 4 pods and back, resharded only by shardchat reshard', () => {
  let kube: FakeKubeApi;
  let c: KubeChatCluster;
  let chat: ChatTarget;
  let pod3: ManagedProcess;
  const mapAt = async (i: number) => (await json(`${c.adminOf(i)}/readyz`)).map as MapOf;
  const groupsOn = async (i: number) =>
    metricValue(await metricsOf(c.adminOf(i)), 'shardchat_shard_groups', {}) ?? Number.NaN;

  const tokens = new Map<string, string>();
  const users = Array.from({ length: 8 }, (_, i) => `u${i}`);
  let groups: string[];
  let before: Content;
  const asUser = (g: string) => `u${Number(g.slice(1)) % users.length}`;
  const content = () => readContent(chat, groups, users, tokens, asUser);

  /** Every pod's map: `shards` shards, the same version everywhere, no migration. */
  async function expectMaps(count: number, shards: number): Promise<MapOf> {
    const first = await mapAt(0);
    for (let i = 0; i < count; i++) {
      const m = await mapAt(i);
      expect(m, `shard ${i}`).toMatchObject({ shards, version: first.version });
      expect(m.migration, `shard ${i}`).toBeUndefined();
    }
    return first;
  }

  /** `shardchat reshard --to n` (the token from the environment), migrating; its summary. */
  async function reshardTo(n: number): Promise<Json> {
    const r = await runReshard(c, ['--to', String(n)]);
    expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
    const summary = JSON.parse(r.stdout) as Json;
    expect(summary).toMatchObject({ migrated: true, to: { shards: n } });
    return summary;
  }

  /** The router's /topology once it routes by a map of `shards` (learnt from answers to requests made meanwhile). */
  async function routerMap(shards: number): Promise<Json> {
    const g = groups[0] as string;
    return waitFor(
      async () => {
        await api(c.routerUrl, 'GET', `/groups/${g}`, tokens.get(asUser(g)));
        const t = await json(`${c.routerAdminUrl}/topology`);
        return t.map.shards === shards && t.map.migration === undefined ? t : undefined;
      },
      { what: `the router routing by a map of ${shards} shards`, timeoutMs: 20_000 },
    );
  }

  beforeAll(async () => {
    kube = await FakeKubeApi.start();
    c = await startKubeChat(kube, await registry.tempDir(), { shards: S, statefulSet: STS });
    chat = {
      router: { url: c.routerUrl },
      token: async (u) => (await api(c.routerUrl, 'POST', `/users/${u}/token`)).body.token as string,
    };
  }, 60_000);

  afterAll(async () => {
    await kube?.close();
  });

  it(
    '3 pods: content seeded through the router reads back whole',
    async () => {
      for (const [u, t] of await tokensFor(chat, users)) tokens.set(u, t);
      groups = await seed(chat, { groups: 12, messagesPerGroup: 3, users: users.length }, tokens);
      before = await content();
      expectContiguous(before);
      expect(Object.keys(before.groups)).toHaveLength(12);
      await expectMaps(S, S);
    },
    LONG,
  );

  it(
    "'kubectl scale --replicas=4' and pod 3 up: reported as a mismatch, nothing resharded",
    async () => {
      kube.putStatefulSet(STS, 4);
      pod3 = await c.startPod(3);
      const ready = await waitFor(
        async () => {
          const b = await json(`${c.routerAdminUrl}/readyz`);
          return b.replicasMismatch === true ? b : undefined;
        },
        { what: 'router /readyz reporting the mismatch' },
      );
      expect(ready).toMatchObject({ status: 'ready', shards: S, statefulSetReplicas: 4 });
      expect((ready.warnings as string[]).join('\n')).toMatch(
        /spec\.replicas 4 but topology\.shards \(S\) is 3/,
      );
      const metrics = await metricsOf(c.routerAdminUrl);
      expect(metricValue(metrics, 'shardchat_router_topology_replicas_mismatch', {})).toBe(1);
      expect(metricValue(metrics, 'shardchat_router_map_shards', {})).toBe(S);
      // Pod 3 asked its peers for the map (it has no data): the cluster's, not one of its own.
      expect(await pod3.waitForLine(/shard listening/)).toMatch(/"mapFrom":"peers"/);
      const map = await expectMaps(4, S);
      expect(await groupsOn(3)).toBe(0);
      expect(await content()).toEqual(before);
      // Still the same map after all those requests: the scale changed nothing.
      expect(await mapAt(3)).toEqual(map);
    },
    LONG,
  );

  it(
    "'shardchat reshard --to 4': the map grows, the router follows it against its configuration",
    async () => {
      const summary = await reshardTo(4);
      const map = await expectMaps(4, 4);
      expect(map.version).toBe(summary.version);
      const topo = await routerMap(4);
      expect(topo.map.version).toBe(summary.version);
      // The router addresses pod 3 now; its configuration still says 3 shards.
      expect(topo).toMatchObject({ shards: 4, statefulSetReplicas: 4, replicasMismatch: false });
      expect(topo.members[3]).toMatchObject({
        pod: `${STS}-3`,
        target: `http://${podIp(3)}:${c.port}`,
        ready: true,
      });
      const metrics = await metricsOf(c.routerAdminUrl);
      expect(metricValue(metrics, 'shardchat_router_shards', {})).toBe(S);
      expect(metricValue(metrics, 'shardchat_router_map_shards', {})).toBe(4);
      expect(metricValue(metrics, 'shardchat_router_map_version', {})).toBe(summary.version);
      expect(metricValue(metrics, 'shardchat_router_topology_replicas_mismatch', {})).toBe(0);
      // The shards say in so many words that their configuration differs from the map.
      for (let i = 0; i < 4; i++) {
        const ready = await json(`${c.adminOf(i)}/readyz`);
        expect((ready.warnings as string[]).join('\n'), `shard ${i}`).toMatch(
          /configuration says 3 shards .* the shard map 4/,
        );
        expect(metricValue(await metricsOf(c.adminOf(i)), 'shardchat_map_config_mismatch', {})).toBe(1);
      }
      expect(await content()).toEqual(before);
      expect(await groupsOn(3)).toBeGreaterThan(0);
      // The shards address pod 3 too: a join placing a user in a sub-conversation that
      // lives on shard 3 is an internal call to it from the parent's shard.
      const sf = new sfApi.ShardFunction(sfApi.DEFAULT_SHARD_SPEC);
      let parent = '';
      for (let i = 0; !parent && i < 10_000; i++) {
        const g = `room${i}`;
        if (sf.shardOfKey(g, 4) !== 3 && sf.shardOfKey(`${g}~1`, 4) === 3) parent = g;
      }
      const [owner, joiner] = [tokens.get('u0'), tokens.get('u1')];
      const spec = { subject: 'overflow', capacity: 1, overflow: 'shard' };
      expect((await api(c.routerUrl, 'PUT', `/groups/${parent}`, owner, spec)).status).toBe(201);
      const joined = await api(c.routerUrl, 'POST', `/groups/${parent}/members`, joiner, {
        userId: 'u1',
      });
      expect(joined.status, JSON.stringify(joined.body)).toBe(200);
      expect(joined.body.groupId).toBe(`${parent}~1`);
      expect((await api(c.routerUrl, 'GET', `/groups/${parent}~1`, joiner)).status).toBe(200);
    },
    LONG,
  );

  it(
    "'shardchat reshard --to 3', then pod 3 gone and the StatefulSet at 3: back where it started",
    async () => {
      await reshardTo(S);
      await expectMaps(4, S);
      expect(await groupsOn(3)).toBe(0);
      await routerMap(S);
      // Pod 3 is one too many now: the StatefulSet is compared with the map's 3 shards.
      const warned = await waitFor(
        async () => {
          const b = await json(`${c.routerAdminUrl}/readyz`);
          return b.replicasMismatch === true ? b : undefined;
        },
        { what: 'router /readyz reporting 4 replicas for 3 shards' },
      );
      expect((warned.warnings as string[]).join('\n')).toMatch(/spec\.replicas 4 but .* is 3/);

      expect((await pod3.stop(10_000)).code).toBe(0);
      kube.delete('pods', `${STS}-3`);
      kube.putStatefulSet(STS, S);
      const ready = await waitFor(
        async () => {
          const b = await json(`${c.routerAdminUrl}/readyz`);
          return b.statefulSetReplicas === S ? b : undefined;
        },
        { what: 'the router seeing the StatefulSet at 3' },
      );
      expect(ready).toMatchObject({ status: 'ready', replicasMismatch: false, map: { shards: S } });
      expect(await content()).toEqual(before);
      await expectMaps(S, S);
      const metrics = await metricsOf(c.routerAdminUrl);
      expect(metricValue(metrics, 'shardchat_router_map_shards', {})).toBe(S);
      expect(metricValue(metrics, 'shardchat_router_topology_replicas_mismatch', {})).toBe(0);
      for (let i = 0; i < S; i++) {
        expect(metricValue(await metricsOf(c.adminOf(i)), 'shardchat_map_config_mismatch', {})).toBe(0);
        await waitFor(
          async () => {
            const b = await json(`${c.adminOf(i)}/readyz`);
            return b.statefulSetReplicas === S && b.replicasMismatch === false && b.warnings.length === 0;
          },
          { what: `shard ${i} /readyz without warnings` },
        );
      }
    },
    LONG,
  );
});
