/**
 * What the rendered objects mean: one value for S, selectors that select, ports that
 * exist, NetworkPolicies and RBAC that allow only what they should, hardened pods, and
 * checksums that roll the pods when the configuration changes.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { k8sTools } from '../helpers/k8s-tools.js';
import {
  byKind,
  ciValuesFiles,
  component,
  configOf,
  type K8sObject,
  one,
  podLabelsOf,
  podSpecOf,
  render,
  selects,
  servers,
  workloads,
} from './chart.js';

beforeAll(() => {
  k8sTools();
}, 300_000);

const variants: { name: string; values: string[] }[] = [
  { name: 'default values', values: [] },
  ...ciValuesFiles().map((f) => ({ name: `ci/${f}`, values: [f] })),
];

const sts = (objects: K8sObject[]) => one(objects, 'StatefulSet');
const routerDeployment = (objects: K8sObject[]) => one(objects, 'Deployment');

function routerPodLabels(objects: K8sObject[]) {
  return podLabelsOf(routerDeployment(objects));
}

function shardPodLabels(objects: K8sObject[]) {
  return podLabelsOf(sts(objects));
}

describe('S, the number of shards', () => {
  it('is one value: the StatefulSet replicas and topology.shards both come from `shards`', async () => {
    for (const [values, set, want] of [
      [[], [], 3],
      [[], ['shards=5'], 5],
      [['static-values.yaml'], [], 4],
      [['kubernetes-topology-values.yaml'], [], 5],
      [['kubernetes-topology-values.yaml'], ['shards=7'], 7],
    ] as [string[], string[], number][]) {
      const objects = await render({ values, set });
      expect(sts(objects).spec.replicas).toBe(want);
      expect(configOf(objects).topology.shards).toBe(want);
    }
  });

  it('static mode addresses shard i through the headless Service of the StatefulSet', async () => {
    const objects = await render({ release: 'chat', namespace: 'team-a' });
    const cfg = configOf(objects);
    const s = sts(objects);
    expect(cfg.topology).toMatchObject({ mode: 'static', shards: 3, namespace: 'team-a' });
    expect(cfg.topology.targetTemplate).toBe(
      `http://${s.metadata.name}-{ordinal}.${s.spec.serviceName}.{namespace}.svc.cluster.local:8080`,
    );
    expect(cfg.topology.adminTemplate).toBe(
      `http://${s.metadata.name}-{ordinal}.${s.spec.serviceName}.{namespace}.svc.cluster.local:9090`,
    );
  });

  it('kubernetes mode names the StatefulSet and its ports', async () => {
    const objects = await render({ values: ['kubernetes-topology-values.yaml'], namespace: 'team-b' });
    const cfg = configOf(objects);
    expect(cfg.topology).toMatchObject({
      mode: 'kubernetes',
      shards: 5,
      namespace: 'team-b',
      kubernetes: { statefulSet: sts(objects).metadata.name, port: 8080, adminPort: 9090 },
    });
    expect(cfg.topology.targetTemplate).toBeUndefined();
  });
});

describe('the shard StatefulSet', () => {
  it('is governed by a headless Service that selects its pods and publishes unready ones', async () => {
    const objects = await render();
    const s = sts(objects);
    const headless = one(objects, 'Service', (o) => o.metadata.name === s.spec.serviceName);
    expect(headless.spec.clusterIP).toBe('None');
    expect(headless.spec.publishNotReadyAddresses).toBe(true);
    expect(selects(headless.spec.selector, shardPodLabels(objects))).toBe(true);
    expect(selects(headless.spec.selector, routerPodLabels(objects))).toBe(false);
    expect(headless.spec.ports.map((p: { name: string; port: number }) => [p.name, p.port])).toEqual([
      ['http', 8080],
      ['admin', 9090],
    ]);
    expect(selects(s.spec.selector.matchLabels, shardPodLabels(objects))).toBe(true);
  });

  it('runs `shard --config`, Parallel, with a data volume at /data and the ordinal from the pod', async () => {
    const objects = await render({ values: ['static-values.yaml'] });
    const s = sts(objects);
    expect(s.spec.podManagementPolicy).toBe('Parallel');
    const c = s.spec.template.spec.containers[0];
    expect(c.args).toEqual(['shard', '--config', '/etc/shardchat/shardchat.yaml']);
    expect(c.volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
    expect(c.volumeMounts).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
    expect(c.env).toContainEqual({
      name: 'SHARD_ORDINAL',
      valueFrom: { fieldRef: { fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']" } },
    });
    const [claim] = s.spec.volumeClaimTemplates;
    expect(claim.metadata.name).toBe('data');
    expect(claim.spec).toMatchObject({
      accessModes: ['ReadWriteOnce'],
      storageClassName: 'standard',
      resources: { requests: { storage: '2Gi' } },
    });
    expect(s.spec.template.spec.securityContext.fsGroup).toBe(10001);
    expect(s.spec.template.spec.topologySpreadConstraints).toEqual([
      {
        topologyKey: 'kubernetes.io/hostname',
        maxSkew: 1,
        whenUnsatisfiable: 'DoNotSchedule',
        labelSelector: { matchLabels: s.spec.selector.matchLabels },
      },
    ]);
    expect(s.spec.template.spec.terminationGracePeriodSeconds).toBe(45);
    const defaults = sts(await render());
    expect(defaults.spec.template.spec.topologySpreadConstraints[0].whenUnsatisfiable).toBe('ScheduleAnyway');
    expect(defaults.spec.template.spec.terminationGracePeriodSeconds).toBe(30);
    expect(defaults.spec.volumeClaimTemplates[0].spec.storageClassName).toBeUndefined();
  });
});

describe('the router', () => {
  it('runs `router --config` behind a Service from port 80 to 8080, 2 replicas by default', async () => {
    const objects = await render();
    const d = routerDeployment(objects);
    expect(d.spec.replicas).toBe(2);
    expect(d.spec.template.spec.containers[0].args).toEqual([
      'router',
      '--config',
      '/etc/shardchat/shardchat.yaml',
    ]);
    const svc = one(objects, 'Service', (o) => o.metadata.name === 'shardchat');
    expect(svc.spec.type).toBe('ClusterIP');
    expect(svc.spec.ports).toEqual([{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }]);
    expect(selects(svc.spec.selector, routerPodLabels(objects))).toBe(true);
    expect(selects(svc.spec.selector, shardPodLabels(objects))).toBe(false);
  });

  it('Service type follows the value', async () => {
    for (const type of ['ClusterIP', 'NodePort', 'LoadBalancer']) {
      const objects = await render({ set: [`router.service.type=${type}`] });
      expect(one(objects, 'Service', (o) => o.metadata.name === 'shardchat').spec.type).toBe(type);
    }
    const np = await render({ values: ['kubernetes-topology-values.yaml'] });
    expect(one(np, 'Service', (o) => o.metadata.name === 'shardchat').spec.ports[0].nodePort).toBe(30080);
  });

  it('Ingress and HPA target the router', async () => {
    const objects = await render({ values: ['ingress-hpa-monitor-values.yaml'] });
    const ing = one(objects, 'Ingress');
    const backend = ing.spec.rules[0].http.paths[0].backend.service;
    const svc = one(objects, 'Service', (o) => o.metadata.name === backend.name);
    expect(svc.spec.ports.map((p: { name: string }) => p.name)).toContain(backend.port.name);
    const hpa = one(objects, 'HorizontalPodAutoscaler');
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec.scaleTargetRef).toEqual({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      name: routerDeployment(objects).metadata.name,
    });
    expect(hpa.spec).toMatchObject({ minReplicas: 2, maxReplicas: 8 });
  });
});

describe.each(variants)('$name', ({ values }) => {
  it('every probe port and Service targetPort exists on its container', async () => {
    const objects = await render({ values });
    for (const w of workloads(objects)) {
      for (const c of podSpecOf(w).containers) {
        const names = new Set((c.ports ?? []).map((p: { name: string }) => p.name));
        for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
          if (w.kind === 'Pod' || w.kind === 'Job') continue;
          const p = c[probe];
          expect(p, `${w.metadata.name} ${probe}`).toBeTruthy();
          expect(p.httpGet.port).toBe('admin');
          expect(names.has(p.httpGet.port)).toBe(true);
        }
        if (w.kind !== 'Pod' && w.kind !== 'Job') {
          expect(c.startupProbe.httpGet.path).toBe('/healthz');
          expect(c.livenessProbe.httpGet.path).toBe('/healthz');
          expect(c.readinessProbe.httpGet.path).toBe('/readyz');
          expect(c.ports).toContainEqual({ name: 'admin', containerPort: 9090, protocol: 'TCP' });
          expect(c.ports).toContainEqual({ name: 'http', containerPort: 8080, protocol: 'TCP' });
        }
      }
    }
    for (const svc of byKind(objects, 'Service')) {
      const targets = workloads(objects).filter(
        (w) => w.kind !== 'Pod' && selects(svc.spec.selector, podLabelsOf(w)),
      );
      // Only the long-running pods are behind Services (not the hook Jobs).
      expect(targets.every((w) => w.kind !== 'Job')).toBe(true);
      expect(targets.length, `Service ${svc.metadata.name} selects one workload`).toBe(1);
      const container = podSpecOf(targets[0] as K8sObject).containers[0];
      for (const p of svc.spec.ports) {
        const ok = container.ports.some(
          (cp: { name: string; containerPort: number }) =>
            cp.name === p.targetPort || cp.containerPort === p.targetPort,
        );
        expect(ok, `Service ${svc.metadata.name} targetPort ${p.targetPort}`).toBe(true);
      }
    }
  });

  it('every pod and container is hardened', async () => {
    const objects = await render({ values });
    for (const w of workloads(objects)) {
      const spec = podSpecOf(w);
      const where = `${w.kind} ${w.metadata.name}`;
      expect(spec.securityContext, where).toMatchObject({
        runAsNonRoot: true,
        runAsUser: 10001,
        runAsGroup: 10001,
        fsGroup: 10001,
        seccompProfile: { type: 'RuntimeDefault' },
      });
      const volumes = spec.volumes ?? [];
      expect(volumes.find((v: { name: string }) => v.name === 'tmp')?.emptyDir, where).toBeTruthy();
      for (const c of spec.containers) {
        expect(c.securityContext, where).toMatchObject({
          readOnlyRootFilesystem: true,
          allowPrivilegeEscalation: false,
          capabilities: { drop: ['ALL'] },
        });
        expect(c.volumeMounts, where).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
        expect(c.resources?.requests, where).toBeTruthy();
      }
    }
  });

  it('NetworkPolicies select the router and shard pods, and only the intended peers', async () => {
    const objects = await render({ values });
    const policies = byKind(objects, 'NetworkPolicy');
    if (values.includes('existing-secret-values.yaml')) {
      expect(policies).toEqual([]);
      return;
    }
    const router = routerPodLabels(objects);
    const shard = shardPodLabels(objects);
    const shardPolicy = policies.find((p) => selects(p.spec.podSelector.matchLabels, shard)) as K8sObject;
    const routerPolicy = policies.find((p) => selects(p.spec.podSelector.matchLabels, router)) as K8sObject;
    expect(shardPolicy && routerPolicy).toBeTruthy();
    expect(selects(shardPolicy.spec.podSelector.matchLabels, router)).toBe(false);
    expect(selects(routerPolicy.spec.podSelector.matchLabels, shard)).toBe(false);
    const rule = (p: K8sObject, port: string) =>
      p.spec.ingress.filter((r: { ports: { port: string }[] }) => r.ports.some((x) => x.port === port));
    // Shards: http only from routers.
    const shardHttp = rule(shardPolicy, 'http');
    expect(shardHttp).toHaveLength(1);
    expect(shardHttp[0].from).toHaveLength(1);
    expect(selects(shardHttp[0].from[0].podSelector.matchLabels, router)).toBe(true);
    expect(selects(shardHttp[0].from[0].podSelector.matchLabels, shard)).toBe(false);
    // Shards: admin from shards, routers and (when set) the Prometheus namespace.
    const [shardAdmin] = rule(shardPolicy, 'admin');
    const podPeers = shardAdmin.from.filter((f: K8sObject) => f.podSelector);
    expect(podPeers.some((f: K8sObject) => selects(f.podSelector.matchLabels, shard))).toBe(true);
    expect(podPeers.some((f: K8sObject) => selects(f.podSelector.matchLabels, router))).toBe(true);
    const nsPeers = shardAdmin.from.filter((f: K8sObject) => f.namespaceSelector);
    if (values.includes('kubernetes-topology-values.yaml')) {
      expect(nsPeers).toEqual([]);
    } else {
      expect(nsPeers).toEqual([
        { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
      ]);
    }
    for (const f of shardAdmin.from) expect(Object.keys(f)).toHaveLength(1); // no accidental AND of selectors
    // Routers: http from anywhere by default, admin never from everywhere.
    const [routerHttp] = rule(routerPolicy, 'http');
    if (values.includes('ingress-hpa-monitor-values.yaml')) {
      expect(routerHttp.from).toContainEqual({
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } },
      });
    } else {
      expect(routerHttp.from).toBeUndefined();
    }
    const [routerAdmin] = rule(routerPolicy, 'admin');
    expect(routerAdmin.from.length).toBeGreaterThan(0);
    for (const f of routerAdmin.from) {
      if (f.podSelector) expect(selects(f.podSelector.matchLabels, router)).toBe(false);
    }
  });

  it('mounts a service account token only in topology mode kubernetes, with a namespaced read-only Role', async () => {
    const objects = await render({ values });
    const kubernetesMode = values.includes('kubernetes-topology-values.yaml');
    for (const w of workloads(objects)) {
      const want = kubernetesMode && w.kind !== 'Pod' && w.kind !== 'Job';
      expect(podSpecOf(w).automountServiceAccountToken, `${w.kind} ${w.metadata.name}`).toBe(want);
    }
    expect(byKind(objects, 'ClusterRole')).toEqual([]);
    expect(byKind(objects, 'ClusterRoleBinding')).toEqual([]);
    const roles = byKind(objects, 'Role');
    if (!kubernetesMode) {
      expect(roles).toEqual([]);
      return;
    }
    expect(roles).toHaveLength(1);
    const role = roles[0] as K8sObject;
    expect(role.metadata.namespace).toBe('shardchat');
    for (const r of role.rules) expect(r.verbs.sort()).toEqual(['get', 'list', 'watch']);
    expect(role.rules).toContainEqual({
      apiGroups: ['apps'],
      resources: ['statefulsets'],
      resourceNames: [sts(objects).metadata.name],
      verbs: ['get', 'list', 'watch'],
    });
    expect(role.rules).toContainEqual({
      apiGroups: [''],
      resources: ['pods'],
      verbs: ['get', 'list', 'watch'],
    });
    expect(role.rules).toHaveLength(2);
    const binding = one(objects, 'RoleBinding');
    expect(binding.roleRef).toEqual({
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'Role',
      name: role.metadata.name,
    });
    const subjects = binding.subjects.map((s: { name: string }) => s.name).sort();
    const accounts = servers(objects)
      .map((w) => podSpecOf(w).serviceAccountName)
      .sort();
    expect(subjects).toEqual(accounts);
  });

  it('PodDisruptionBudgets select the routers and the shards', async () => {
    const objects = await render({ values });
    const pdbs = byKind(objects, 'PodDisruptionBudget');
    const shardPdb = pdbs.filter((p) => selects(p.spec.selector.matchLabels, shardPodLabels(objects)));
    expect(shardPdb).toHaveLength(1);
    expect(shardPdb[0]?.spec.maxUnavailable).toBe(1);
    const routerPdb = pdbs.filter((p) => selects(p.spec.selector.matchLabels, routerPodLabels(objects)));
    expect(routerPdb).toHaveLength(values.includes('existing-secret-values.yaml') ? 0 : 1);
  });
});

describe('the Secret', () => {
  it('holds a generated auth secret of at least 32 bytes and an internal token', async () => {
    const objects = await render();
    const secret = one(objects, 'Secret');
    const auth = Buffer.from(secret.data.SHARDCHAT_AUTH_SECRET, 'base64').toString();
    const internal = Buffer.from(secret.data.SHARDCHAT_INTERNAL_TOKEN, 'base64').toString();
    expect(auth.length).toBeGreaterThanOrEqual(32);
    expect(internal.length).toBeGreaterThanOrEqual(32);
    for (const w of servers(objects)) {
      expect(podSpecOf(w).containers[0].envFrom).toEqual([{ secretRef: { name: secret.metadata.name } }]);
    }
  });

  it('takes given values', async () => {
    const objects = await render({ values: ['static-values.yaml'] });
    const secret = one(objects, 'Secret');
    expect(Buffer.from(secret.data.SHARDCHAT_AUTH_SECRET, 'base64').toString()).toBe(
      'ci-auth-secret-0123456789abcdef0123456789',
    );
  });
});

describe('checksums', () => {
  const checksum = (objects: K8sObject[], kind: string) =>
    one(objects, kind).spec.template.metadata.annotations['checksum/config'];

  it('change when a configuration value changes, and only then', async () => {
    const a = await render();
    const b = await render();
    const c = await render({ set: ['shardSpec.assignment=jump'] });
    const d = await render({ set: ['router.replicas=4'] });
    for (const kind of ['Deployment', 'StatefulSet']) {
      expect(checksum(a, kind)).toMatch(/^[0-9a-f]{64}$/);
      expect(checksum(b, kind)).toBe(checksum(a, kind));
      expect(checksum(c, kind)).not.toBe(checksum(a, kind));
      expect(checksum(d, kind)).toBe(checksum(a, kind));
    }
  });

  it('the secret checksum changes with the given secret', async () => {
    const secretSum = (objects: K8sObject[]) =>
      routerDeployment(objects).spec.template.metadata.annotations['checksum/secret'];
    const a = await render({ set: ['secret.authSecret=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'] });
    const b = await render({ set: ['secret.authSecret=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'] });
    expect(secretSum(a)).toMatch(/^[0-9a-f]{64}$/);
    expect(secretSum(a)).not.toBe(secretSum(b));
  });
});

describe('monitoring', () => {
  it('a ServiceMonitor scrapes the admin port of routers and shards and adds a pod label', async () => {
    const objects = await render({ values: ['ingress-hpa-monitor-values.yaml'] });
    const sm = one(objects, 'ServiceMonitor');
    expect(sm.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(sm.metadata.labels?.release).toBe('kube-prometheus-stack');
    const selected = byKind(objects, 'Service').filter((s) =>
      selects(sm.spec.selector.matchLabels, s.metadata.labels ?? {}),
    );
    const selectedPods = selected.map(
      (s) =>
        workloads(objects).find((w) => w.kind !== 'Pod' && selects(s.spec.selector, podLabelsOf(w)))?.kind,
    );
    expect(selectedPods.sort()).toEqual(['Deployment', 'StatefulSet']);
    for (const s of selected) expect(s.spec.ports.map((p: { name: string }) => p.name)).toContain('admin');
    const [endpoint] = sm.spec.endpoints;
    expect(endpoint).toMatchObject({ port: 'admin', path: '/metrics' });
    expect(endpoint.relabelings).toContainEqual({
      sourceLabels: ['__meta_kubernetes_pod_name'],
      targetLabel: 'pod',
      action: 'replace',
    });
  });

  it('the Grafana dashboard queries the real metric names, per shard', async () => {
    const objects = await render({ values: ['ingress-hpa-monitor-values.yaml'] });
    const cm = one(objects, 'ConfigMap', (o) => o.metadata.name.endsWith('-dashboard'));
    expect(cm.metadata.labels?.grafana_dashboard).toBe('1');
    const dashboard = JSON.parse(cm.data['shardchat.json']);
    const exprs: string[] = dashboard.panels.flatMap((p: { targets: { expr: string }[] }) =>
      p.targets.map((t) => t.expr),
    );
    const { readFileSync } = await import('node:fs');
    const { REPO_ROOT } = await import('../helpers/processes.js');
    const sources = ['shard/metrics.ts', 'router/metrics.ts']
      .map((f) => readFileSync(`${REPO_ROOT}/${f}`, 'utf8'))
      .join('\n');
    for (const expr of exprs) {
      for (const name of expr.match(/shardchat_[a-z_]+/g) ?? []) expect(sources, name).toContain(`'${name}'`);
      expect(expr).toContain('by (shard)');
    }
    const joined = exprs.join('\n');
    expect(joined).toContain('shardchat_shard_connections');
    expect(joined).toContain('rate(shardchat_shard_messages_total');
    expect(joined).toContain('rate(shardchat_shard_deliveries_total');
    expect(joined).toContain('rate(shardchat_router_requests_total');
    expect(joined).toMatch(/shardchat_router_requests_total\{[^}]*code=~"5\.\."/);
  });
});

describe('helm test', () => {
  it('a hook Pod checks the router /readyz and a JSON 401 with x-shardchat-shard through the Service', async () => {
    const objects = await render({ set: ['shards=6'] });
    const pod = one(objects, 'Pod');
    expect(pod.metadata.annotations?.['helm.sh/hook']).toBe('test');
    expect(component(pod)).toBe('test');
    const c = pod.spec.containers[0];
    expect(c.image).toBe(routerDeployment(objects).spec.template.spec.containers[0].image);
    expect(c.command).toEqual(['node', '-e']);
    const script: string = c.args[0];
    expect(script).toContain("'/readyz'");
    expect(script).toContain("'/groups/x/messages'");
    expect(script).toContain('x-shardchat-shard');
    expect(script).toContain('401');
    const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
    expect(env.SHARDS).toBe('6');
    expect(env.API_URL).toBe('http://shardchat.shardchat.svc:80');
    expect(env.ADMIN_URL).toBe('http://shardchat-router-admin.shardchat.svc:9090');
    // The script is valid JavaScript.
    expect(() => new Function(script)).not.toThrow();
  });
});
