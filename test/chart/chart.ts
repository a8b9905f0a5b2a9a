/**
 * Rendering charts/shardchat with the real helm binary (test/helpers/k8s-tools.ts) and
 * looking at the objects it produces.
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import yaml from 'js-yaml';
import { k8sTools } from '../helpers/k8s-tools.js';
import { REPO_ROOT } from '../helpers/processes.js';

const execFileAsync = promisify(execFile);

export const CHART = path.join(REPO_ROOT, 'charts', 'shardchat');
export const CI_DIR = path.join(CHART, 'ci');
export const K8S_DIR = path.join(REPO_ROOT, 'k8s');
export const RENDER_SCRIPT = path.join(REPO_ROOT, 'scripts', 'render-k8s.mjs');

/** The ci/ values files, by name. */
export function ciValuesFiles(): string[] {
  return readdirSync(CI_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .sort();
}

// biome-ignore lint/suspicious/noExplicitAny: rendered objects are checked field by field
export type K8sObject = Record<string, any> & {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
};

export interface RenderOptions {
  /** A ci/ file name or an absolute path of a values file. */
  values?: string[];
  set?: string[];
  release?: string;
  namespace?: string;
  extra?: string[];
}

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a binary with arguments; never throws on a non-zero exit. */
export async function run(bin: string, args: string[], cwd = REPO_ROOT): Promise<Run> {
  try {
    const { stdout, stderr } = await execFileAsync(bin, args, { cwd, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

export function helm(args: string[]): Promise<Run> {
  return run(k8sTools().helm, args);
}

export function kubectl(args: string[]): Promise<Run> {
  return run(k8sTools().kubectl, args);
}

function valuesArgs(opts: RenderOptions): string[] {
  const out: string[] = [];
  for (const v of opts.values ?? []) out.push('-f', path.isAbsolute(v) ? v : path.join(CI_DIR, v));
  for (const s of opts.set ?? []) out.push('--set', s);
  return out;
}

export function parseObjects(text: string): K8sObject[] {
  return (yaml.loadAll(text) as unknown[]).filter(
    (d): d is K8sObject => d !== null && typeof d === 'object' && 'kind' in (d as object),
  );
}

/** `helm template` of the chart; throws with helm's message when it fails. */
export async function render(opts: RenderOptions = {}): Promise<K8sObject[]> {
  const r = await helm([
    'template',
    opts.release ?? 'shardchat',
    CHART,
    '--namespace',
    opts.namespace ?? 'shardchat',
    ...valuesArgs(opts),
    ...(opts.extra ?? []),
  ]);
  if (r.code !== 0) throw new Error(`helm template failed:\n${r.stderr}`);
  return parseObjects(r.stdout);
}

export function lint(opts: RenderOptions = {}): Promise<Run> {
  return helm(['lint', CHART, '--strict', '--namespace', opts.namespace ?? 'shardchat', ...valuesArgs(opts)]);
}

export function byKind(objects: K8sObject[], kind: string): K8sObject[] {
  return objects.filter((o) => o.kind === kind);
}

export function one(objects: K8sObject[], kind: string, predicate: (o: K8sObject) => boolean = () => true) {
  const found = objects.filter((o) => o.kind === kind && predicate(o));
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`);
  return found[0] as K8sObject;
}

export function component(o: K8sObject): string | undefined {
  return o.metadata.labels?.['app.kubernetes.io/component'];
}

/** The pod template of a workload (Deployment, StatefulSet, Job) or the spec of a Pod. */
export function podSpecOf(o: K8sObject): K8sObject['spec'] {
  return o.kind === 'Pod' ? o.spec : o.spec.template.spec;
}

export function podLabelsOf(o: K8sObject): Record<string, string> {
  return o.kind === 'Pod' ? (o.metadata.labels ?? {}) : (o.spec.template.metadata.labels ?? {});
}

/** The workloads that run pods: Deployments, StatefulSets, (hook) Jobs and (helm test) Pods. */
export function workloads(objects: K8sObject[]): K8sObject[] {
  return objects.filter((o) => ['Deployment', 'StatefulSet', 'Job', 'Pod'].includes(o.kind));
}

/** The long-running workloads: the router Deployment and the shard StatefulSet. */
export function servers(objects: K8sObject[]): K8sObject[] {
  return objects.filter((o) => ['Deployment', 'StatefulSet'].includes(o.kind));
}

/** Helm hooks: objects with a helm.sh/hook annotation. */
export function hooks(objects: K8sObject[]): K8sObject[] {
  return objects.filter((o) => o.metadata.annotations?.['helm.sh/hook']);
}

/** The object's hook events (helm.sh/hook), empty when it is not a hook. */
export function hookEvents(o: K8sObject): string[] {
  return (o.metadata.annotations?.['helm.sh/hook'] ?? '').split(',').filter(Boolean);
}

/** Whether a matchLabels selector selects a set of labels. */
export function selects(
  matchLabels: Record<string, string> | undefined,
  labels: Record<string, string>,
): boolean {
  if (!matchLabels || Object.keys(matchLabels).length === 0) return true;
  return Object.entries(matchLabels).every(([k, v]) => labels[k] === v);
}

/** The rendered configuration file (shardchat.yaml of the config ConfigMap). */
export function configText(objects: K8sObject[]): string {
  const cm = one(objects, 'ConfigMap', (o) => component(o) === 'config');
  return cm.data['shardchat.yaml'] as string;
}

// biome-ignore lint/suspicious/noExplicitAny: a parsed YAML configuration
export function configOf(objects: K8sObject[]): Record<string, any> {
  // biome-ignore lint/suspicious/noExplicitAny: a parsed YAML configuration
  return yaml.load(configText(objects)) as Record<string, any>;
}
