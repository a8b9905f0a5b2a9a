/**
 * helm lint and helm template of charts/shardchat with the default values and each
 * ci/ values file, values.schema.json refusals, and schema validation of every object.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { k8sTools } from '../helpers/k8s-tools.js';
import { CHART, CI_DIR, ciValuesFiles, helm, lint, render } from './chart.js';
import { strictFieldCheck, validateObject } from './validate.js';

const variants: { name: string; values: string[] }[] = [
  { name: 'default values', values: [] },
  ...ciValuesFiles().map((f) => ({ name: `ci/${f}`, values: [f] })),
];

beforeAll(() => {
  k8sTools(); // fetched once (npm pack) and cached; the first run takes a while
}, 300_000);

describe('the chart', () => {
  it('has the four ci values files', () => {
    expect(ciValuesFiles()).toEqual([
      'existing-secret-values.yaml',
      'ingress-hpa-monitor-values.yaml',
      'kubernetes-topology-values.yaml',
      'static-values.yaml',
    ]);
  });

  it('is rendered by Helm v4', async () => {
    const r = await helm(['version', '--short']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^v4\./);
  });

  for (const v of variants) {
    describe(v.name, () => {
      it('passes helm lint --strict', async () => {
        const r = await lint({ values: v.values });
        expect(r.code, r.stdout + r.stderr).toBe(0);
        expect(r.stdout).toContain('0 chart(s) failed');
      });

      it('renders objects that validate against the Kubernetes schemas', async () => {
        const objects = await render({ values: v.values });
        expect(objects.length).toBeGreaterThan(5);
        for (const o of objects) {
          expect(() => validateObject(o), `${o.kind} ${o.metadata.name}`).not.toThrow();
        }
        // Every object carries the standard labels.
        for (const o of objects) {
          const labels = o.metadata.labels ?? {};
          for (const key of [
            'app.kubernetes.io/name',
            'app.kubernetes.io/instance',
            'app.kubernetes.io/version',
            'app.kubernetes.io/component',
            'app.kubernetes.io/managed-by',
            'app.kubernetes.io/part-of',
            'helm.sh/chart',
          ]) {
            expect(labels[key], `${o.kind} ${o.metadata.name} label ${key}`).toBeTruthy();
          }
        }
        // Names are unique per kind.
        const keys = objects.map((o) => `${o.kind}/${o.metadata.name}`);
        expect(new Set(keys).size).toBe(keys.length);
      });
    });
  }

  it('renders no field the Kubernetes API does not know (tsc excess property checks)', async () => {
    const all = [];
    for (const v of variants) all.push(...(await render({ values: v.values })));
    const typo = await render({ set: [] });
    const dep = typo.find((o) => o.kind === 'Deployment');
    if (dep) dep.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem = true;
    const [clean, broken] = await Promise.all([strictFieldCheck(all), strictFieldCheck(typo)]);
    expect(clean).toBe('');
    expect(broken).toContain('readOnlyRootFileSystem'); // the check does catch a typo
  }, 120_000);

  it('renders what the ci files turn on', async () => {
    const monitor = await render({ values: ['ingress-hpa-monitor-values.yaml'] });
    const kinds = new Set(monitor.map((o) => o.kind));
    for (const k of ['Ingress', 'HorizontalPodAutoscaler', 'ServiceMonitor']) expect(kinds).toContain(k);
    const dash = monitor.find((o) => o.kind === 'ConfigMap' && o.metadata.name.endsWith('-dashboard'));
    expect(dash?.metadata.labels?.grafana_dashboard).toBe('1');
    // With an HPA the Deployment leaves replicas to it.
    const dep = monitor.find((o) => o.kind === 'Deployment');
    expect(dep?.spec.replicas).toBeUndefined();

    const existing = await render({ values: ['existing-secret-values.yaml'] });
    expect(existing.filter((o) => o.kind === 'Secret')).toEqual([]);
    for (const w of existing.filter((o) => o.kind === 'Deployment' || o.kind === 'StatefulSet')) {
      expect(w.spec.template.spec.containers[0].envFrom).toEqual([
        { secretRef: { name: 'shardchat-secrets' } },
      ]);
    }

    const defaults = await render();
    const off = new Set(defaults.map((o) => o.kind));
    for (const k of ['Ingress', 'HorizontalPodAutoscaler', 'ServiceMonitor', 'Role', 'RoleBinding'])
      expect(off).not.toContain(k);
  });

  it('NOTES.txt says how to reach the service per Service type, and mentions dev tokens only when on', async () => {
    const notes = async (args: string[]) => {
      const r = await helm([
        'install',
        'shardchat',
        CHART,
        '--dry-run=client',
        '--namespace',
        'shardchat',
        ...args,
      ]);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.slice(r.stdout.indexOf('NOTES:'));
    };
    const clusterIp = await notes([]);
    expect(clusterIp).toContain('http://shardchat.shardchat.svc.cluster.local:80');
    expect(clusterIp).toContain('kubectl port-forward --namespace shardchat svc/shardchat 8080:80');
    expect(clusterIp).not.toContain('/token');
    expect(await notes(['--set', 'router.service.type=LoadBalancer'])).toContain(
      'status.loadBalancer.ingress',
    );
    expect(await notes(['--set', 'router.service.type=NodePort'])).toContain('NODE_PORT');
    expect(await notes(['--set', 'auth.devTokens=true'])).toContain('/users/alice/token');
    expect(await notes(['-f', path.join(CI_DIR, 'ingress-hpa-monitor-values.yaml')])).toContain(
      'https://chat.example.com/',
    );
  });

  it('values.schema.json describes every value of values.yaml, and refuses unknown keys', () => {
    const values = yaml.load(readFileSync(path.join(CHART, 'values.yaml'), 'utf8'));
    const schema = JSON.parse(readFileSync(path.join(CHART, 'values.schema.json'), 'utf8'));
    const missing: string[] = [];
    // biome-ignore lint/suspicious/noExplicitAny: walking JSON schema and YAML together
    const walk = (v: any, s: any, at: string) => {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return;
      if (!s.properties) return; // a free map (labels, annotations, nodeSelector, affinity)
      if (at === 'global') return; // shared with parent charts: their globals are not ours to refuse
      if (s.additionalProperties !== false)
        missing.push(`${at || '(root)'}: additionalProperties is not false`);
      for (const [k, child] of Object.entries(v)) {
        const sub = s.properties[k];
        if (!sub) missing.push(`${at}${at ? '.' : ''}${k}`);
        else walk(child, sub, `${at}${at ? '.' : ''}${k}`);
      }
    };
    walk(values, schema, '');
    expect(missing).toEqual([]);
  });

  it('keeps a generated Secret across upgrades with lookup (test/chart/secrets.test.ts renders it)', () => {
    const template = readFileSync(path.join(CHART, 'templates', '_helpers.tpl'), 'utf8');
    expect(template).toMatch(/lookup "v1" "Secret" \.Release\.Namespace/);
    expect(template).toContain('randAlphaNum');
  });

  it('refuses values outside values.schema.json', async () => {
    for (const set of [
      'shards=0',
      'shards=two',
      'router.replicas=-1',
      'router.service.type=ExternalName',
      'topology.mode=dns',
      'shardSpec.assignment=random',
      'secret.authSecret=too-short',
      'router.unknownValue=1',
      'shard.persistence.accessModes={ReadWriteSometimes}',
      'shard.topologySpread.whenUnsatisfiable=Never',
    ]) {
      await expect(render({ set: [set] }), set).rejects.toThrow(/helm template failed/);
    }
  });

  it('refuses a grace period not above the drain time, and onNoMatch outside 0..S-1', async () => {
    await expect(render({ set: ['router.config.timeouts.shutdownMs=40000'] })).rejects.toThrow(
      /terminationGracePeriodSeconds/,
    );
    await expect(render({ set: ['shardSpec.onNoMatch=3'] })).rejects.toThrow(/onNoMatch/);
    await expect(render({ set: ['shardSpec.onNoMatch=2'] })).resolves.toBeTruthy();
  });
});
