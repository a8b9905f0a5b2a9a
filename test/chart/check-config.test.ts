/**
 * Failing early on a bad configuration: a pre-install/pre-upgrade hook Job runs
 * `router --check-config` and `shard --check-config` on the configuration the release
 * renders (a hook ConfigMap). Its containers are run here with the real CLI (build first),
 * with their arguments and environment from the manifest: the default configuration
 * passes, configurations that values.schema.json lets through but the programs refuse
 * (a catastrophic urlPattern, an invalid one, a bad combination) fail the Job.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { k8sTools } from '../helpers/k8s-tools.js';
import { childEnv, runCli, useProcessCleanup } from '../helpers/processes.js';
import {
  byKind,
  component,
  hookEvents,
  type K8sObject,
  one,
  podSpecOf,
  type RenderOptions,
  render,
} from './chart.js';

const registry = useProcessCleanup();

beforeAll(() => {
  k8sTools();
}, 300_000);

const MOUNTED = '/etc/shardchat/shardchat.yaml';

function checkObjects(objects: K8sObject[]) {
  const mine = objects.filter((o) => component(o) === 'check-config');
  return { configMap: one(mine, 'ConfigMap'), job: one(mine, 'Job') };
}

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}

/** Runs each container of the check Job with the CLI; the exit codes and output, by container. */
async function runCheck(opts: RenderOptions): Promise<Record<string, { code: number; out: string }>> {
  const objects = await render(opts);
  const { configMap, job } = checkObjects(objects);
  const dir = await registry.tempDir('test', 'shardchat-check-');
  const file = path.join(dir, 'shardchat.yaml');
  await writeFile(file, configMap.data['shardchat.yaml']);
  const out: Record<string, { code: number; out: string }> = {};
  for (const c of podSpecOf(job).containers) {
    const env: NodeJS.ProcessEnv = {};
    for (const e of c.env as EnvVar[]) {
      if (e.value !== undefined) env[e.name] = e.value;
      else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.namespace') env[e.name] = 'shardchat';
      else throw new Error(`cannot reproduce ${e.name}`);
    }
    expect(c.envFrom).toBeUndefined(); // helm template: no live Secret, the stand-ins are used
    const args = (c.args as string[]).map((a) => (a === MOUNTED ? file : a));
    const r = await runCli(args, { env: childEnv(env) });
    out[c.name] = { code: r.code ?? -1, out: r.stdout + r.stderr };
  }
  return out;
}

describe('the check-config hook', () => {
  it('is a hook ConfigMap with the release configuration and a Job, before install and upgrade, before the reshard Job', async () => {
    const objects = await render();
    const { configMap, job } = checkObjects(objects);
    const config = one(objects, 'ConfigMap', (o) => component(o) === 'config');
    expect(configMap.data['shardchat.yaml']).toBe(config.data['shardchat.yaml']);
    expect(configMap.metadata.name).not.toBe(config.metadata.name);
    for (const o of [configMap, job]) {
      expect(hookEvents(o)).toEqual(['pre-install', 'pre-upgrade']);
      expect(o.metadata.annotations?.['helm.sh/hook-delete-policy']).toBe(
        'before-hook-creation,hook-succeeded',
      );
    }
    const weight = (o: K8sObject) => Number(o.metadata.annotations?.['helm.sh/hook-weight']);
    const shrink = one(objects, 'Job', (o) => o.metadata.name.endsWith('-reshard-shrink'));
    expect(weight(configMap)).toBeLessThan(weight(job));
    expect(weight(job)).toBeLessThan(weight(shrink));
    expect(job.spec).toMatchObject({ activeDeadlineSeconds: 300, backoffLimit: 1 });
    const spec = podSpecOf(job);
    expect(spec.restartPolicy).toBe('Never');
    expect(spec.automountServiceAccountToken).toBe(false);
    expect(spec.serviceAccountName).toBeUndefined(); // the chart's accounts do not exist before install
    expect(spec.containers.map((c: K8sObject) => c.args)).toEqual([
      ['router', '--check-config', '--config', MOUNTED],
      ['shard', '--check-config', '--config', MOUNTED],
    ]);
    expect(spec.volumes).toContainEqual({ name: 'config', configMap: { name: configMap.metadata.name } });
  });

  it('checks with the existing Secret when there is one', async () => {
    const objects = await render({ values: ['existing-secret-values.yaml'] });
    const { job } = checkObjects(objects);
    for (const c of podSpecOf(job).containers) {
      expect(c.envFrom).toEqual([{ secretRef: { name: 'shardchat-secrets' } }]);
      const names = (c.env as EnvVar[]).map((e) => e.name);
      expect(names).not.toContain('SHARDCHAT_AUTH_SECRET');
    }
  });

  it('passes the configurations the chart renders', async () => {
    for (const opts of [
      {},
      { values: ['static-values.yaml'] },
      { values: ['kubernetes-topology-values.yaml'] },
    ]) {
      const r = await runCheck(opts);
      expect(r.router?.code, r.router?.out).toBe(0);
      expect(r.shard?.code, r.shard?.out).toBe(0);
    }
  });

  it('fails on what the schema lets through and the programs refuse', async () => {
    for (const [set, message] of [
      ['shardSpec.urlPattern=^/(a+)+$', /catastrophic backtracking/],
      ['shardSpec.urlPattern=(', /not a valid JavaScript regular expression/],
      ['shard.config.delivery.pull.exitRate=50', /must be below enterRate/],
    ] as [string, RegExp][]) {
      const r = await runCheck({ set: [set] });
      for (const name of ['router', 'shard']) {
        expect(r[name]?.code, `${set}: ${name}`).not.toBe(0);
        expect(r[name]?.out).toMatch(message);
      }
    }
  });

  it('is off with checkConfig.enabled=false; the schema refuses bad values', async () => {
    const off = await render({ set: ['checkConfig.enabled=false'] });
    expect(off.filter((o) => component(o) === 'check-config')).toEqual([]);
    expect(byKind(off, 'Job')).toHaveLength(2); // the reshard Jobs stay
    for (const set of [
      'checkConfig.enabled=1',
      'checkConfig.activeDeadlineSeconds=0',
      'checkConfig.backoffLimit=-1',
      'checkConfig.other=true',
    ]) {
      await expect(render({ set: [set] }), set).rejects.toThrow(/helm template failed/);
    }
  });
});
