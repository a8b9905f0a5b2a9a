/**
 * k8s/ is the chart rendered with its default values by scripts/render-k8s.mjs: it must
 * be up to date, reproducible, free of generated secrets, and `kubectl kustomize k8s/`
 * must give the same objects.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import yaml from 'js-yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { k8sTools } from '../helpers/k8s-tools.js';
import { childEnv, runNode, useProcessCleanup } from '../helpers/processes.js';
import { K8S_DIR, type K8sObject, kubectl, parseObjects, RENDER_SCRIPT, render } from './chart.js';
import { validateObject } from './validate.js';

const registry = useProcessCleanup();

beforeAll(() => {
  k8sTools();
}, 300_000);

function yamlFiles(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort())
    if (f.endsWith('.yaml')) out[f] = readFileSync(path.join(dir, f), 'utf8');
  return out;
}

function objectsIn(dir: string): K8sObject[] {
  const files = yamlFiles(dir);
  return Object.entries(files)
    .filter(([name]) => name !== 'kustomization.yaml')
    .flatMap(([, text]) => parseObjects(text));
}

const key = (o: K8sObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
const sorted = (objects: K8sObject[]) => [...objects].sort((a, b) => key(a).localeCompare(key(b)));

async function renderInto(dir: string): Promise<void> {
  const r = await runNode([RENDER_SCRIPT, '--out', dir], {
    env: childEnv({ SHARDCHAT_HELM: k8sTools().helm }),
    timeoutMs: 60_000,
  });
  expect(r.code, r.stderr + r.stdout).toBe(0);
}

describe('k8s/', () => {
  it('is up to date with the chart (run `npm run k8s` when this fails)', async () => {
    const dir = await registry.tempDir('test', 'shardchat-k8s-');
    await renderInto(dir);
    const fresh = yamlFiles(dir);
    const committed = yamlFiles(K8S_DIR);
    expect(Object.keys(committed)).toEqual(Object.keys(fresh));
    for (const [name, text] of Object.entries(fresh)) {
      expect(committed[name], `k8s/${name} is out of date: run npm run k8s`).toBe(text);
    }
  });

  it('is reproducible: two renders give identical files', async () => {
    const a = await registry.tempDir('test', 'shardchat-k8s-a-');
    const b = await registry.tempDir('test', 'shardchat-k8s-b-');
    await renderInto(a);
    await renderInto(b);
    expect(yamlFiles(b)).toEqual(yamlFiles(a));
  }, 60_000);

  it('holds the default objects of the chart, without the Secret and the Helm hooks', async () => {
    const chart = (await render()).filter(
      (o) => o.kind !== 'Secret' && !o.metadata.annotations?.['helm.sh/hook'],
    );
    const files = sorted(objectsIn(K8S_DIR));
    expect(files.map(key)).toEqual(sorted(chart).map(key));
    expect(files.filter((o) => o.kind === 'Secret')).toEqual([]);
    for (const o of files) {
      expect(() => validateObject(o)).not.toThrow();
      expect(o.metadata.namespace).toBe('shardchat');
    }
    for (const w of files.filter((o) => o.kind === 'Deployment' || o.kind === 'StatefulSet')) {
      expect(w.spec.template.spec.containers[0].envFrom).toEqual([
        { secretRef: { name: 'shardchat-secrets' } },
      ]);
    }
    const readme = readFileSync(path.join(K8S_DIR, 'README.md'), 'utf8');
    expect(readme).toContain('kubectl create secret generic shardchat-secrets');
    expect(readme).toContain('SHARDCHAT_AUTH_SECRET');
    expect(readme).toContain('SHARDCHAT_INTERNAL_TOKEN');
  });

  it('kustomization.yaml lists every file, sets the namespace and names the image; `kubectl kustomize` gives the same objects', async () => {
    const kustomization = parseObjects(
      readFileSync(path.join(K8S_DIR, 'kustomization.yaml'), 'utf8'),
    )[0] as K8sObject;
    expect(kustomization.namespace).toBe('shardchat');
    const files = Object.keys(yamlFiles(K8S_DIR)).filter((f) => f !== 'kustomization.yaml');
    expect([...kustomization.resources].sort()).toEqual(files);
    // One images: entry, the chart's image, for `kustomize edit set image`.
    expect(kustomization.images).toEqual([{ name: 'ghcr.io/shardchat/shardchat', newTag: '0.1.0' }]);
    const r = await kubectl(['kustomize', K8S_DIR]);
    expect(r.code, r.stderr).toBe(0);
    expect(sorted(parseObjects(r.stdout))).toEqual(sorted(objectsIn(K8S_DIR)));
    // An overlay's image override reaches every container.
    const overlay = await registry.tempDir('test', 'shardchat-overlay-');
    await writeFile(
      path.join(overlay, 'kustomization.yaml'),
      yaml.dump({
        apiVersion: 'kustomize.config.k8s.io/v1beta1',
        kind: 'Kustomization',
        resources: [path.relative(overlay, K8S_DIR)],
        images: [
          { name: 'ghcr.io/shardchat/shardchat', newName: 'registry.example.com/chat', newTag: '9.9.9' },
        ],
      }),
    );
    const o = await kubectl(['kustomize', '--load-restrictor', 'LoadRestrictionsNone', overlay]);
    expect(o.code, o.stderr).toBe(0);
    const images = parseObjects(o.stdout)
      .filter((x) => x.kind === 'Deployment' || x.kind === 'StatefulSet')
      .flatMap((x) => x.spec.template.spec.containers.map((c: { image: string }) => c.image));
    expect(new Set(images)).toEqual(new Set(['registry.example.com/chat:9.9.9']));
  });
});
