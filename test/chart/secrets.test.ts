/**
 * Stable secrets: the chart's Secret is computed once per render (routers and shards get
 * the same checksum/secret), kept across upgrades through `lookup` of the live Secret, and
 * with secret.existingSecret (GitOps: Argo CD renders with `helm template`, which cannot
 * look anything up) nothing random is rendered at all.
 *
 * The lookup is exercised for real: `helm template --dry-run=server` against an in-test
 * API server that answers discovery and holds the Secret a previous install made.
 */
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { k8sTools } from '../helpers/k8s-tools.js';
import { useProcessCleanup } from '../helpers/processes.js';
import { byKind, component, type K8sObject, one, podSpecOf, type RenderOptions, render } from './chart.js';

const registry = useProcessCleanup();

beforeAll(() => {
  k8sTools();
}, 300_000);

const secretSums = (objects: K8sObject[]) =>
  ['Deployment', 'StatefulSet'].map(
    (kind) => one(objects, kind).spec.template.metadata.annotations['checksum/secret'],
  );

const decoded = (objects: K8sObject[]) => {
  const s = one(objects, 'Secret');
  return Object.fromEntries(
    Object.entries(s.data as Record<string, string>).map(([k, v]) => [
      k,
      Buffer.from(v, 'base64').toString(),
    ]),
  );
};

/** The kinds the chart renders, by group/version: the discovery helm needs to map them. */
const KINDS: Record<string, string[]> = {
  v1: ['ConfigMap', 'Secret', 'Service', 'ServiceAccount', 'Pod'],
  'apps/v1': ['Deployment', 'StatefulSet'],
  'batch/v1': ['Job'],
  'networking.k8s.io/v1': ['NetworkPolicy', 'Ingress'],
  'policy/v1': ['PodDisruptionBudget'],
  'autoscaling/v2': ['HorizontalPodAutoscaler'],
  'rbac.authorization.k8s.io/v1': ['Role', 'RoleBinding'],
};

const plural = (kind: string) => `${kind.toLowerCase()}s`.replace(/ys$/, 'ies');

/** An API server with discovery and one namespace's Secrets, for `helm template --dry-run=server`. */
async function fakeApi(
  secrets: K8sObject[],
): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const resources = (gv: string) => ({
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: gv,
    resources: (KINDS[gv] ?? []).map((kind) => ({
      name: plural(kind),
      singularName: kind.toLowerCase(),
      namespaced: true,
      kind,
      verbs: ['get', 'list', 'create'],
    })),
  });
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const p = url.pathname;
    requests.push(`${req.method} ${p}`);
    const json = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (p === '/version')
      return json(200, { major: '1', minor: '33', gitVersion: 'v1.33.0', platform: 'linux/amd64' });
    if (p === '/api')
      return json(200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] });
    if (p === '/apis')
      return json(200, {
        kind: 'APIGroupList',
        apiVersion: 'v1',
        groups: Object.keys(KINDS)
          .filter((gv) => gv !== 'v1')
          .map((gv) => {
            const [name, version] = gv.split('/');
            return {
              name,
              versions: [{ groupVersion: gv, version }],
              preferredVersion: { groupVersion: gv, version },
            };
          }),
      });
    if (p === '/api/v1') return json(200, resources('v1'));
    const group = /^\/apis\/([^/]+\/[^/]+)$/.exec(p);
    if (group?.[1] && KINDS[group[1]]) return json(200, resources(group[1]));
    const secret = /^\/api\/v1\/namespaces\/([^/]+)\/secrets\/([^/]+)$/.exec(p);
    const found =
      secret && secrets.find((s) => s.metadata.namespace === secret[1] && s.metadata.name === secret[2]);
    if (found) return json(200, found);
    json(404, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404 });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function kubeconfig(server: string): Promise<string> {
  // Kept for the whole describe block ('test' directories go after each test, 'file' ones after the file).
  const dir = await registry.tempDir('file', 'shardchat-kubeconfig-');
  const file = path.join(dir, 'kubeconfig.yaml');
  await writeFile(
    file,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster: { server } }],
      users: [{ name: 'fake', user: { token: 'fake' } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake', namespace: 'shardchat' } }],
      'current-context': 'fake',
    }),
  );
  return file;
}

describe('the Secret and its checksum', () => {
  it('one render: the Secret and the checksum of routers and shards come from the same values', async () => {
    const objects = await render();
    const [router, shard] = secretSums(objects);
    expect(router).toMatch(/^[0-9a-f]{64}$/);
    expect(shard).toBe(router);
    const secret = decoded(objects);
    expect(secret.SHARDCHAT_AUTH_SECRET?.length).toBe(48);
    expect(secret.SHARDCHAT_INTERNAL_TOKEN?.length).toBe(48);
  });

  it('without a cluster (plain helm template) generated values differ per render: why GitOps wants existingSecret', async () => {
    const [a, b] = [await render(), await render()];
    expect(decoded(a)).not.toEqual(decoded(b));
    expect(secretSums(a)[0]).not.toBe(secretSums(b)[0]);
  });

  it('secret.existingSecret: no Secret rendered, nothing random, the same checksums at every render', async () => {
    const renders: K8sObject[][] = [];
    for (let i = 0; i < 2; i++) renders.push(await render({ set: ['secret.existingSecret=chat-secrets'] }));
    const [a, b] = renders as [K8sObject[], K8sObject[]];
    expect(byKind(a, 'Secret')).toEqual([]);
    expect(secretSums(a)[0]).toBe(secretSums(a)[1]);
    expect(secretSums(b)).toEqual(secretSums(a));
    // Every object is identical across renders (what Argo CD compares).
    expect(JSON.stringify(b)).toBe(JSON.stringify(a));
    for (const w of [one(a, 'Deployment'), one(a, 'StatefulSet')])
      expect(podSpecOf(w).containers[0].envFrom).toEqual([{ secretRef: { name: 'chat-secrets' } }]);
    const other = await render({ set: ['secret.existingSecret=other-secrets'] });
    expect(secretSums(other)[0]).not.toBe(secretSums(a)[0]);
  });

  it('given values: the same Secret and checksums at every render', async () => {
    const opts: RenderOptions = {
      set: [
        'secret.authSecret=0123456789abcdef0123456789abcdef',
        'secret.internalToken=internal-token-0123456789',
      ],
    };
    const [a, b] = [await render(opts), await render(opts)];
    expect(decoded(a)).toEqual({
      SHARDCHAT_AUTH_SECRET: '0123456789abcdef0123456789abcdef',
      SHARDCHAT_INTERNAL_TOKEN: 'internal-token-0123456789',
    });
    expect(secretSums(b)).toEqual(secretSums(a));
  });

  describe('with a live Secret (an upgrade; helm template --dry-run=server)', () => {
    const live = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: 'shardchat-secrets',
        namespace: 'shardchat',
        labels: { 'app.kubernetes.io/managed-by': 'Helm' },
        annotations: {
          'meta.helm.sh/release-name': 'shardchat',
          'meta.helm.sh/release-namespace': 'shardchat',
        },
      },
      type: 'Opaque',
      data: {
        SHARDCHAT_AUTH_SECRET: Buffer.from('L'.repeat(48)).toString('base64'),
        SHARDCHAT_INTERNAL_TOKEN: Buffer.from('T'.repeat(48)).toString('base64'),
      },
    } as K8sObject;
    let api: Awaited<ReturnType<typeof fakeApi>>;
    let extra: string[];

    beforeAll(async () => {
      api = await fakeApi([live]);
      extra = ['--dry-run=server', '--disable-openapi-validation', '--kubeconfig', await kubeconfig(api.url)];
    });
    afterAll(() => api?.close());

    it('keeps the live values, renders after render: the checksums do not change', async () => {
      const a = await render({ extra });
      const b = await render({ extra, set: ['router.replicas=3'] });
      expect(api.requests).toContain('GET /api/v1/namespaces/shardchat/secrets/shardchat-secrets');
      expect(decoded(a)).toEqual({
        SHARDCHAT_AUTH_SECRET: 'L'.repeat(48),
        SHARDCHAT_INTERNAL_TOKEN: 'T'.repeat(48),
      });
      expect(decoded(b)).toEqual(decoded(a));
      expect(secretSums(a)[1]).toBe(secretSums(a)[0]);
      expect(secretSums(b)).toEqual(secretSums(a));
      // The check-config hook finds the Secret and checks with it.
      const check = one(a, 'Job', (o) => component(o) === 'check-config');
      for (const c of podSpecOf(check).containers)
        expect(c.envFrom).toEqual([{ secretRef: { name: 'shardchat-secrets' } }]);
    });

    it('a value given later replaces the live one (and rolls the pods)', async () => {
      const a = await render({ extra });
      const b = await render({ extra, set: ['secret.internalToken=rotated-token-0123456789'] });
      expect(decoded(b).SHARDCHAT_INTERNAL_TOKEN).toBe('rotated-token-0123456789');
      expect(decoded(b).SHARDCHAT_AUTH_SECRET).toBe('L'.repeat(48));
      expect(secretSums(b)[0]).not.toBe(secretSums(a)[0]);
    });
  });
});
