/**
 * Validates rendered objects against the Kubernetes OpenAPI schemas (kubernetes-models),
 * and the Prometheus Operator CRDs the models do not know structurally.
 */

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { Job } from 'kubernetes-models/batch/v1';
import { Ingress, NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { ConfigMap, Pod, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { REPO_ROOT } from '../helpers/processes.js';
import { type K8sObject, run } from './chart.js';

interface Validatable {
  validate(): void;
}

// biome-ignore lint/suspicious/noExplicitAny: the model constructors take their own typed data
const models: Record<string, new (data: any) => Validatable> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Pod': Pod,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'batch/v1/Job': Job,
  'networking.k8s.io/v1/Ingress': Ingress,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
};

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function fail(o: K8sObject, message: string): never {
  throw new Error(`${o.kind} ${o.metadata?.name}: ${message}`);
}

/** Structural checks of a monitoring.coreos.com/v1 ServiceMonitor or PodMonitor. */
function validateMonitor(o: K8sObject): void {
  const spec = o.spec;
  if (!spec || typeof spec !== 'object') fail(o, 'no spec');
  if (!spec.selector || typeof spec.selector.matchLabels !== 'object')
    fail(o, 'spec.selector.matchLabels missing');
  const endpoints = o.kind === 'ServiceMonitor' ? spec.endpoints : spec.podMetricsEndpoints;
  if (!Array.isArray(endpoints) || endpoints.length === 0) fail(o, 'no endpoints');
  for (const e of endpoints) {
    if (typeof e.port !== 'string' || e.port === '') fail(o, 'an endpoint without a named port');
    if (e.path !== undefined && !String(e.path).startsWith('/')) fail(o, `bad path ${e.path}`);
    for (const key of ['interval', 'scrapeTimeout']) {
      if (e[key] !== undefined && !/^[0-9]+(ms|s|m|h)$/.test(e[key])) fail(o, `bad ${key} ${e[key]}`);
    }
    for (const r of e.relabelings ?? []) {
      if (!Array.isArray(r.sourceLabels) || typeof r.targetLabel !== 'string') fail(o, 'bad relabeling');
      if (
        r.action !== undefined &&
        !['replace', 'keep', 'drop', 'labelmap', 'labeldrop', 'labelkeep'].includes(r.action)
      )
        fail(o, `bad relabeling action ${r.action}`);
    }
  }
  const allowed = new Set([
    'selector',
    'namespaceSelector',
    'endpoints',
    'podMetricsEndpoints',
    'jobLabel',
    'targetLabels',
    'podTargetLabels',
    'sampleLimit',
  ]);
  for (const key of Object.keys(spec)) if (!allowed.has(key)) fail(o, `unknown spec field ${key}`);
}

/** Throws when the object does not validate against its schema. */
export function validateObject(o: K8sObject): void {
  if (!o.metadata?.name || !NAME.test(o.metadata.name) || o.metadata.name.length > 253)
    fail(o, 'bad metadata.name');
  if (
    o.apiVersion === 'monitoring.coreos.com/v1' &&
    (o.kind === 'ServiceMonitor' || o.kind === 'PodMonitor')
  ) {
    validateMonitor(o);
    return;
  }
  const Model = models[`${o.apiVersion}/${o.kind}`];
  if (!Model) fail(o, `no schema known for ${o.apiVersion} ${o.kind}`);
  new Model(o).validate();
}

/** The kubernetes-models module and interface of each kind, for the strict type check. */
const interfaces: Record<string, [string, string]> = {
  'v1/ConfigMap': ['kubernetes-models/v1', 'IConfigMap'],
  'v1/Pod': ['kubernetes-models/v1', 'IPod'],
  'v1/Secret': ['kubernetes-models/v1', 'ISecret'],
  'v1/Service': ['kubernetes-models/v1', 'IService'],
  'v1/ServiceAccount': ['kubernetes-models/v1', 'IServiceAccount'],
  'apps/v1/Deployment': ['kubernetes-models/apps/v1', 'IDeployment'],
  'apps/v1/StatefulSet': ['kubernetes-models/apps/v1', 'IStatefulSet'],
  'autoscaling/v2/HorizontalPodAutoscaler': ['kubernetes-models/autoscaling/v2', 'IHorizontalPodAutoscaler'],
  'batch/v1/Job': ['kubernetes-models/batch/v1', 'IJob'],
  'networking.k8s.io/v1/Ingress': ['kubernetes-models/networking.k8s.io/v1', 'IIngress'],
  'networking.k8s.io/v1/NetworkPolicy': ['kubernetes-models/networking.k8s.io/v1', 'INetworkPolicy'],
  'policy/v1/PodDisruptionBudget': ['kubernetes-models/policy/v1', 'IPodDisruptionBudget'],
  'rbac.authorization.k8s.io/v1/Role': ['kubernetes-models/rbac.authorization.k8s.io/v1', 'IRole'],
  'rbac.authorization.k8s.io/v1/RoleBinding': [
    'kubernetes-models/rbac.authorization.k8s.io/v1',
    'IRoleBinding',
  ],
};

/**
 * The JSON schema validation above ignores fields the schema does not know (a typo such
 * as `readOnlyRootFileSystem` passes it). This check writes every object as a TypeScript
 * literal typed with its kubernetes-models interface and runs tsc: excess property checks
 * then refuse any unknown field, at any depth. Returns tsc's complaints ('' when none).
 */
export async function strictFieldCheck(objects: K8sObject[]): Promise<string> {
  const parent = path.join(REPO_ROOT, 'node_modules', '.cache', 'shardchat');
  await mkdir(parent, { recursive: true });
  const dir = await mkdtemp(path.join(parent, 'strict-'));
  try {
    const imports = new Map<string, Set<string>>();
    const lines: string[] = [];
    objects.forEach((o, i) => {
      const entry = interfaces[`${o.apiVersion}/${o.kind}`];
      if (!entry) return; // CRDs: checked structurally
      const [mod, name] = entry;
      if (!imports.has(mod)) imports.set(mod, new Set());
      imports.get(mod)?.add(name);
      lines.push(
        `// ${o.kind} ${o.metadata.name}\nexport const o${i}: ${name} = ${JSON.stringify(o, null, 2)};`,
      );
    });
    const head = [...imports].map(
      ([mod, names]) => `import type { ${[...names].join(', ')} } from '${mod}';`,
    );
    await writeFile(path.join(dir, 'objects.ts'), `${head.join('\n')}\n${lines.join('\n')}\n`);
    await writeFile(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: [],
        },
        files: ['objects.ts'],
      }),
    );
    const r = await run(process.execPath, [
      path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
      '-p',
      dir,
    ]);
    return r.code === 0 ? '' : `${r.stdout}${r.stderr}`;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
