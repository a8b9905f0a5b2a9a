/**
 * A chat cluster in the kubernetes topology mode on one machine: the shards are the pods
 * of a StatefulSet, pod n a `shardchat shard` process on its own loopback IP
 * (127.0.0.{n+2}), every pod on the same configured ports, with what a pod's environment
 * gives it (its ordinal, the namespace, the secrets); a `shardchat router` in front; all
 * of them with KUBECONFIG pointing at the in-test API server (test/helpers/fake-kube-api.ts).
 */
import { randomBytes } from 'node:crypto';
import type { FakeKubeApi } from './fake-kube-api.js';
import { request } from './http.js';
import {
  CLI,
  childEnv,
  freePorts,
  type ManagedProcess,
  startProcess,
  waitFor,
  writeYamlConfig,
} from './processes.js';

/** The IP of pod n. */
export const podIp = (ordinal: number) => `127.0.0.${2 + ordinal}`;

export interface KubeChatCluster {
  /** The one configuration file of the shards, the router and `shardchat reshard`. */
  configPath: string;
  /** The environment of every process: KUBECONFIG, POD_NAMESPACE, the secrets. */
  env: NodeJS.ProcessEnv;
  /** The shards' public and admin ports, the same on every pod IP. */
  port: number;
  adminPort: number;
  routerUrl: string;
  routerAdminUrl: string;
  /** Pod n's admin base URL. */
  adminOf(ordinal: number): string;
  /** Pod n: its shard process (ordinal from SHARD_ORDINAL, as the chart sets it), then its Ready pod in the API. */
  startPod(ordinal: number): Promise<ManagedProcess>;
}

/**
 * The StatefulSet with `shards` replicas and its Ready pods in `kube`, their shard
 * processes, and a router, all in kubernetes mode with S = `shards`; resolves once the
 * router is ready. The configuration also has an `adminTemplate` naming the pods' admin
 * addresses: the shards and the router take those from the API, `shardchat reshard`
 * from the template (as in the chart, where it names the pods behind the headless Service).
 */
export async function startKubeChat(
  kube: FakeKubeApi,
  dir: string,
  opts: { shards: number; statefulSet: string },
): Promise<KubeChatCluster> {
  const [port, adminPort, routerPort, routerAdminPort] = (await freePorts(4)) as [
    number,
    number,
    number,
    number,
  ];
  const config = {
    topology: {
      mode: 'kubernetes',
      shards: opts.shards,
      kubernetes: { statefulSet: opts.statefulSet, port, adminPort },
      // podIp(n) as a template: for `shardchat reshard` (see above).
      adminTemplate: `http://127.0.0.{ordinal+2}:${adminPort}`,
    },
    router: { host: '127.0.0.1', port: routerPort, adminPort: routerAdminPort },
    shard: { dataDir: `${dir}/data`, port, adminPort },
    auth: { devTokens: true },
    log: { level: 'info' },
  };
  const configPath = await writeYamlConfig(dir, config, 'cluster.yaml');
  const env = {
    KUBECONFIG: await kube.writeKubeconfig(dir),
    POD_NAMESPACE: 'default',
    SHARDCHAT_AUTH_SECRET: randomBytes(32).toString('base64'),
    SHARDCHAT_INTERNAL_TOKEN: randomBytes(16).toString('hex'),
  };
  const startPod = async (ordinal: number) => {
    const ip = podIp(ordinal);
    const proc = await startProcess({
      name: `shard-${ordinal}@${ip}`,
      args: [CLI, 'shard', '--config', configPath],
      env: childEnv({ ...env, SHARD_ORDINAL: String(ordinal), SHARDCHAT__shard__host: ip }),
      waitForLine: /shard listening/,
    });
    kube.putPod(`${opts.statefulSet}-${ordinal}`, { ip });
    return proc;
  };
  kube.putStatefulSet(opts.statefulSet, opts.shards);
  await Promise.all(Array.from({ length: opts.shards }, (_, i) => startPod(i)));
  await startProcess({
    name: 'router',
    args: [CLI, 'router', '--config', configPath],
    env: childEnv(env),
    waitForPorts: [routerPort, routerAdminPort],
  });
  const routerAdminUrl = `http://127.0.0.1:${routerAdminPort}`;
  await waitFor(async () => (await request(`${routerAdminUrl}/readyz`)).status === 200, {
    what: 'router ready',
  });
  return {
    configPath,
    env,
    port,
    adminPort,
    routerUrl: `http://127.0.0.1:${routerPort}`,
    routerAdminUrl,
    adminOf: (ordinal) => `http://${podIp(ordinal)}:${adminPort}`,
    startPod,
  };
}
