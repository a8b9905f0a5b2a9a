/**
 * The chart's Helm hooks that run the migration when `shards` changes: a pre-upgrade Job
 * (`shardchat reshard --to S --only shrink`) and a post-upgrade Job (`--only grow`), their
 * annotations, command, Secret, configuration, limits, the NetworkPolicy rule that lets
 * them reach the shards' admin port, their values and NOTES.txt.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { k8sTools } from '../helpers/k8s-tools.js';
import {
  byKind,
  CHART,
  component,
  helm,
  hookEvents,
  type K8sObject,
  lint,
  one,
  podLabelsOf,
  podSpecOf,
  type RenderOptions,
  render,
  selects,
} from './chart.js';

beforeAll(() => {
  k8sTools();
}, 300_000);

const job = (objects: K8sObject[], direction: 'grow' | 'shrink') =>
  one(objects, 'Job', (o) => o.metadata.name.endsWith(`-reshard-${direction}`));

const reshardJobs = (objects: K8sObject[]) =>
  byKind(objects, 'Job').filter((o) => component(o) === 'reshard');

async function jobs(opts: RenderOptions = {}) {
  const objects = await render(opts);
  return { objects, grow: job(objects, 'grow'), shrink: job(objects, 'shrink') };
}

describe('the reshard hook Jobs', () => {
  it('are a post-upgrade Job that grows and a pre-upgrade Job that shrinks, never run at install', async () => {
    const { objects, grow, shrink } = await jobs();
    expect(reshardJobs(objects)).toHaveLength(2);
    expect(hookEvents(grow)).toEqual(['post-upgrade', 'post-rollback']);
    expect(hookEvents(shrink)).toEqual(['pre-upgrade', 'pre-rollback']);
    for (const j of [grow, shrink]) {
      expect(j.apiVersion).toBe('batch/v1');
      expect(hookEvents(j).some((e) => e.endsWith('-install'))).toBe(false);
      expect(j.metadata.annotations?.['helm.sh/hook-weight']).toBe('0');
      expect(j.metadata.annotations?.['helm.sh/hook-delete-policy']).toBe(
        'before-hook-creation,hook-succeeded',
      );
      expect(j.spec).toMatchObject({
        activeDeadlineSeconds: 3600,
        backoffLimit: 6,
        ttlSecondsAfterFinished: 86400,
      });
      expect(podSpecOf(j).restartPolicy).toBe('Never');
    }
  });

  it('run `shardchat reshard --to <shards> --only grow|shrink` on the router configuration', async () => {
    for (const [set, shards, assignment] of [
      [[], '3', 'modulo'],
      [['shards=4'], '4', 'modulo'],
      [['shards=2', 'shardSpec.assignment=jump'], '2', 'jump'],
    ] as [string[], string, string][]) {
      const { objects, grow, shrink } = await jobs({ set });
      const config = one(objects, 'ConfigMap', (o) => component(o) === 'config');
      for (const [j, direction] of [
        [grow, 'grow'],
        [shrink, 'shrink'],
      ] as const) {
        const c = podSpecOf(j).containers[0];
        expect(podSpecOf(j).containers).toHaveLength(1);
        expect(c.image).toBe('ghcr.io/shardchat/shardchat:0.1.0');
        expect(c.command).toBeUndefined(); // the image's entrypoint: node /app/dist/cli/main.js
        expect(c.args).toEqual([
          'reshard',
          '--to',
          shards,
          '--assignment',
          assignment,
          '--only',
          direction,
          '--config',
          '/etc/shardchat/shardchat.yaml',
        ]);
        expect(c.volumeMounts).toContainEqual({
          name: 'config',
          mountPath: '/etc/shardchat',
          readOnly: true,
        });
        expect(podSpecOf(j).volumes).toContainEqual({
          name: 'config',
          configMap: { name: config.metadata.name },
        });
      }
    }
  });

  it('take only the internal token from the Secret (chart-made or existing), and no API token', async () => {
    for (const [opts, secretName] of [
      [{}, 'shardchat-secrets'],
      [{ release: 'chat' }, 'chat-shardchat-secrets'],
      [{ values: ['existing-secret-values.yaml'] }, 'shardchat-secrets'],
      [{ set: ['secret.existingSecret=vault-made'] }, 'vault-made'],
    ] as [RenderOptions, string][]) {
      const { objects, grow, shrink } = await jobs(opts);
      const secrets = byKind(objects, 'Secret');
      if (secrets.length > 0) expect(secrets[0]?.metadata.name).toBe(secretName);
      for (const j of [grow, shrink]) {
        const c = podSpecOf(j).containers[0];
        expect(c.envFrom).toBeUndefined();
        expect(c.env).toContainEqual({
          name: 'SHARDCHAT_INTERNAL_TOKEN',
          valueFrom: { secretKeyRef: { name: secretName, key: 'SHARDCHAT_INTERNAL_TOKEN' } },
        });
        expect(c.env.map((e: { name: string }) => e.name)).not.toContain('SHARDCHAT_AUTH_SECRET');
        expect(podSpecOf(j).automountServiceAccountToken).toBe(false);
      }
    }
  });

  it('reach every shard by the adminTemplate of the configuration, in both topology modes', async () => {
    for (const values of [[], ['kubernetes-topology-values.yaml']]) {
      const objects = await render({ values, release: 'chat', namespace: 'team' });
      const cm = one(objects, 'ConfigMap', (o) => component(o) === 'config');
      const sts = one(objects, 'StatefulSet');
      expect(cm.data['shardchat.yaml']).toContain(
        `adminTemplate: http://${sts.metadata.name}-{ordinal}.${sts.spec.serviceName}.{namespace}.svc.cluster.local:9090`,
      );
    }
  });

  it('the shards NetworkPolicy lets the Job pods reach the admin port only', async () => {
    const { objects, grow, shrink } = await jobs();
    const shardLabels = podLabelsOf(one(objects, 'StatefulSet'));
    const policy = byKind(objects, 'NetworkPolicy').find((p) =>
      selects(p.spec.podSelector.matchLabels, shardLabels),
    ) as K8sObject;
    const peersOf = (port: string) =>
      policy.spec.ingress
        .filter((r: { ports: { port: string }[] }) => r.ports.some((p) => p.port === port))
        .flatMap((r: { from: K8sObject[] }) => r.from);
    for (const j of [grow, shrink]) {
      const labels = podLabelsOf(j);
      expect(
        peersOf('admin').some((f: K8sObject) => f.podSelector && selects(f.podSelector.matchLabels, labels)),
      ).toBe(true);
      expect(
        peersOf('http').some((f: K8sObject) => f.podSelector && selects(f.podSelector.matchLabels, labels)),
      ).toBe(false);
      // The Job pods are not routers or shards: no Service, PDB or router policy selects them.
      for (const o of objects.filter((x) => ['Service', 'PodDisruptionBudget'].includes(x.kind)))
        expect(
          selects(o.spec.selector?.matchLabels ?? o.spec.selector, labels),
          `${o.kind} ${o.metadata.name}`,
        ).toBe(false);
    }
  });

  it('follow their values: limits, resources, scheduling; off when reshard.hook.enabled=false', async () => {
    const { grow } = await jobs({
      set: [
        'reshard.hook.activeDeadlineSeconds=7200',
        'reshard.hook.backoffLimit=2',
        'reshard.hook.ttlSecondsAfterFinished=600',
        'reshard.hook.resources.requests.cpu=200m',
        'reshard.hook.nodeSelector.pool=system',
        'reshard.hook.podAnnotations.team=chat',
      ],
    });
    expect(grow.spec).toMatchObject({
      activeDeadlineSeconds: 7200,
      backoffLimit: 2,
      ttlSecondsAfterFinished: 600,
    });
    expect(podSpecOf(grow).containers[0].resources.requests.cpu).toBe('200m');
    expect(podSpecOf(grow).nodeSelector).toEqual({ pool: 'system' });
    expect(grow.spec.template.metadata.annotations).toEqual({ team: 'chat' });

    const off = await render({ set: ['reshard.hook.enabled=false'] });
    expect(reshardJobs(off)).toEqual([]);
    const policy = JSON.stringify(byKind(off, 'NetworkPolicy'));
    expect(policy).not.toContain('"reshard"');
    expect((await lint({})).code).toBe(0);
  });

  it('values.schema.json refuses bad hook values', async () => {
    for (const set of [
      'reshard.hook.enabled=yes',
      'reshard.hook.activeDeadlineSeconds=10',
      'reshard.hook.activeDeadlineSeconds=1h',
      'reshard.hook.backoffLimit=-1',
      'reshard.hook.ttlSecondsAfterFinished=-5',
      'reshard.hook.resources.requests.cpu=lots',
      'reshard.hook.unknown=1',
      'reshard.other=1',
    ]) {
      await expect(render({ set: [set] }), set).rejects.toThrow(/helm template failed/);
    }
  });

  it('NOTES.txt says how to watch the migration, or how to run it when the hooks are off', async () => {
    const notes = async (args: string[]) => {
      const r = await helm(['install', 'chat', CHART, '--dry-run=client', '--namespace', 'team', ...args]);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.slice(r.stdout.indexOf('NOTES:'));
    };
    const on = await notes([]);
    expect(on).toContain('kubectl logs --namespace team -f job/chat-shardchat-reshard-grow');
    expect(on).toContain('reshard --status --config /etc/shardchat/shardchat.yaml');
    expect(on).toContain('helm upgrade --timeout 3600s');
    const off = await notes(['--set', 'reshard.hook.enabled=false']);
    expect(off).toContain(
      'kubectl exec --namespace team deploy/chat-shardchat-router -- node /app/dist/cli/main.js reshard --to T',
    );
    expect(off).not.toContain('job/');
  });
});
