/**
 * The chart's reshard hook Jobs, run for real: the container's arguments and environment
 * are taken from the Job objects `helm template` renders, and run (with the image's
 * entrypoint, `node dist/cli/main.js`) against a local cluster of processes. Only the
 * configuration path (the mounted ConfigMap) and the Secret's internal token are
 * rewritten to the local ones. The order is Helm's: the pre-upgrade Job (shrink), the
 * StatefulSet change, the post-upgrade Job (grow). Grows 3 to 4, shrinks back to 3, and
 * a `helm upgrade` that leaves `shards` alone changes nothing; everything written before
 * reads back identical. Growing and shrinking run under load (posters, joiners, SDK
 * subscribers through the router), checked as `shardchat reshard` is: nothing
 * acknowledged lost or doubled, every subscriber complete and in order, no 5xx.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type K8sObject, one, podSpecOf, render } from '../chart/chart.js';
import { type Cluster, startCluster } from '../helpers/cluster.js';
import { k8sTools } from '../helpers/k8s-tools.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import {
  type CliResult,
  expectContiguous,
  mapOf,
  readContent,
  runCli,
  seed,
  tokensFor,
} from '../helpers/reshard.js';
import { ReshardLoad } from '../helpers/reshard-load.js';

useProcessCleanup();
afterAll(() => defaultRegistry.cleanup());
beforeAll(() => {
  k8sTools();
}, 300_000);

const MOUNTED_CONFIG = '/etc/shardchat/shardchat.yaml';

interface JobRun {
  args: string[];
  env: NodeJS.ProcessEnv;
}

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath: string };
    secretKeyRef?: { name: string; key: string };
  };
}

/** The Job's container as a local command: its args and env, config path and token rewritten. */
function jobRun(objects: K8sObject[], direction: 'grow' | 'shrink', c: Cluster): JobRun {
  const job = one(objects, 'Job', (o) => o.metadata.name.endsWith(`-reshard-${direction}`));
  const secretName = one(objects, 'Secret').metadata.name;
  const [container] = podSpecOf(job).containers;
  expect(container.command).toBeUndefined(); // the image's ENTRYPOINT: node /app/dist/cli/main.js
  const args = (container.args as string[]).map((a) => (a === MOUNTED_CONFIG ? c.configPath : a));
  expect(args).toContain(c.configPath);
  const env: NodeJS.ProcessEnv = {};
  for (const e of container.env as EnvVar[]) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.namespace') env[e.name] = 'shardchat';
    else if (e.valueFrom?.secretKeyRef) {
      expect(e.valueFrom.secretKeyRef.name).toBe(secretName);
      env[e.name] = c.env[e.valueFrom.secretKeyRef.key];
      expect(env[e.name], e.valueFrom.secretKeyRef.key).toBeTruthy();
    } else throw new Error(`the Job has an environment variable this test cannot reproduce: ${e.name}`);
  }
  return { args, env };
}

/** Runs a Job's command to its end, in the Job's environment only (plus what node needs). */
function runJob(run: JobRun, extraEnv: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return runCli(run.args, { ...run.env, ...extraEnv });
}

async function expectMaps(c: Cluster, count: number, want: { shards: number; version?: number }) {
  for (let i = 0; i < count; i++) {
    const m = await mapOf(c, i);
    expect(m, `shard ${i}`).toMatchObject(want);
    expect(m.migration, `shard ${i}`).toBeUndefined();
  }
}

describe('the chart reshard hook Jobs on a local cluster', () => {
  let c: Cluster;
  const tokens = new Map<string, string>();
  const users = Array.from({ length: 6 }, (_, i) => `u${i}`);
  let groups: string[];
  let before: Awaited<ReturnType<typeof readContent>>;
  const asUser = (g: string) => `u${Number(g.slice(1)) % users.length}`;
  const read = () => readContent(c, groups, users, tokens, asUser);
  let load: ReshardLoad | undefined;
  afterAll(() => load?.close());

  it('an upgrade that keeps shards=3 runs both Jobs and changes nothing', async () => {
    c = await startCluster(await defaultRegistry.tempDir(), { shards: 3, maxShards: 4 });
    for (const [u, t] of await tokensFor(c, users)) tokens.set(u, t);
    groups = await seed(c, { groups: 12, messagesPerGroup: 3, users: users.length }, tokens);
    before = await read();
    expectContiguous(before);
    const { version } = await mapOf(c, 0);

    const objects = await render({ set: ['shards=3'] });
    for (const direction of ['shrink', 'grow'] as const) {
      const r = await runJob(jobRun(objects, direction, c));
      expect(r.code, `${direction}: ${r.stderr}\n${r.stdout}`).toBe(0);
      expect(JSON.parse(r.stdout).migrated).toBeFalsy();
    }
    await expectMaps(c, 3, { shards: 3, version });
    expect(await read()).toEqual(before);
  }, 180_000);

  it('helm upgrade --set shards=4: the pre-upgrade Job does nothing, the post-upgrade Job grows 3 to 4', async () => {
    const objects = await render({ set: ['shards=4'] });
    const shrink = await runJob(jobRun(objects, 'shrink', c));
    expect(shrink.code, shrink.stderr).toBe(0);
    expect(JSON.parse(shrink.stdout).migrated).toBeFalsy();
    await expectMaps(c, 3, { shards: 3 });

    // Load through the router from here to the end of the shrink.
    load = new ReshardLoad(c, 'helm');
    await load.setup();
    // Posts until the shrink is over (the bound: 100,000 posts or 5 minutes).
    load.start(20_000);
    // The StatefulSet gets its fourth pod: empty, it takes the stored map from its peers.
    await c.startShard(3);
    const grow = jobRun(objects, 'grow', c);
    // A Job pod killed mid-copy (a node drain): the retried pod resumes the migration.
    const killed = await runJob(grow, { SHARDCHAT_TEST_RESHARD_STOP_AT: 'copy' });
    expect(killed.signal).toBe('SIGKILL');
    const r = await runJob(grow);
    expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary).toMatchObject({ to: { shards: 4, assignment: 'modulo' } });
    await expectMaps(c, 4, { shards: 4, version: summary.version });
    expect(await read()).toEqual(before);
  }, 180_000);

  it('helm upgrade --set shards=3: the pre-upgrade Job shrinks 4 to 3 before the pod goes, the post-upgrade Job does nothing', async () => {
    const objects = await render({ set: ['shards=3'] });
    const ackedBefore = (load as ReshardLoad).ackedSoFar;
    const r = await runJob(jobRun(objects, 'shrink', c));
    expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
    // The load went on during the shrink.
    expect((load as ReshardLoad).ackedSoFar).toBeGreaterThan(ackedBefore);
    (load as ReshardLoad).stop();
    const summary = JSON.parse(r.stdout);
    expect(summary).toMatchObject({ migrated: true, to: { shards: 3, assignment: 'modulo' } });
    await expectMaps(c, 4, { shards: 3, version: summary.version });

    // The StatefulSet removes shard 3, which holds nothing any more.
    await c.shards[3]?.proc.kill();
    const grow = await runJob(jobRun(objects, 'grow', c));
    expect(grow.code, grow.stderr).toBe(0);
    expect(JSON.parse(grow.stdout).migrated).toBeFalsy();
    await expectMaps(c, 3, { shards: 3, version: summary.version });
    expect(await read()).toEqual(before);
    const loaded = await (load as ReshardLoad).finish();
    expect(loaded.fiveHundreds).toEqual([]);
    expect(loaded.acked).toBeGreaterThan(0);
    await (load as ReshardLoad).verify();
  }, 180_000);
});
