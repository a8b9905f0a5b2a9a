/**
 * The conventions of the bitnami, ingress-nginx and prometheus-community charts:
 * security contexts as values, priorityClassName, extraEnv, extraVolumes/extraVolumeMounts,
 * sidecars, global.imageRegistry, Chart.yaml metadata, and an Ingress without hosts.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { k8sTools } from '../helpers/k8s-tools.js';
import { CHART, component, type K8sObject, lint, one, podSpecOf, render, workloads } from './chart.js';
import { strictFieldCheck, validateObject } from './validate.js';

beforeAll(() => {
  k8sTools();
}, 300_000);

const router = (objects: K8sObject[]) => one(objects, 'Deployment');
const shard = (objects: K8sObject[]) => one(objects, 'StatefulSet');
const images = (objects: K8sObject[]) =>
  workloads(objects).flatMap((w) => podSpecOf(w).containers.map((c: { image: string }) => c.image));

describe('chart conventions', () => {
  it('podSecurityContext and containerSecurityContext are values, applied to every pod and container', async () => {
    const objects = await render({
      set: [
        'podSecurityContext.runAsUser=20002',
        'podSecurityContext.runAsGroup=20002',
        'podSecurityContext.fsGroup=20002',
        'containerSecurityContext.runAsUser=20002',
        'containerSecurityContext.runAsGroup=20002',
      ],
    });
    const all = workloads(objects);
    expect(all.map((w) => w.kind).sort()).toEqual(['Deployment', 'Job', 'Job', 'Job', 'Pod', 'StatefulSet']);
    for (const w of all) {
      const spec = podSpecOf(w);
      expect(spec.securityContext, w.metadata.name).toMatchObject({
        runAsUser: 20002,
        fsGroup: 20002,
        runAsNonRoot: true,
      });
      for (const c of spec.containers)
        expect(c.securityContext, `${w.metadata.name} ${c.name}`).toMatchObject({
          runAsUser: 20002,
          readOnlyRootFilesystem: true,
        });
    }
    // The defaults: uid 10001, as the image's USER.
    for (const w of workloads(await render())) expect(podSpecOf(w).securityContext.runAsUser).toBe(10001);
  });

  it('priorityClassName, extraEnv, extraVolumes, extraVolumeMounts and sidecars, per component', async () => {
    const set = (c: string) => [
      `${c}.priorityClassName=${c}-critical`,
      `${c}.extraEnv[0].name=SHARDCHAT__log__level`,
      `${c}.extraEnv[0].value=debug`,
      `${c}.extraVolumes[0].name=certs`,
      `${c}.extraVolumes[0].secret.secretName=${c}-certs`,
      `${c}.extraVolumeMounts[0].name=certs`,
      `${c}.extraVolumeMounts[0].mountPath=/etc/certs`,
      `${c}.extraVolumeMounts[0].readOnly=true`,
      `${c}.sidecars[0].name=shipper`,
      `${c}.sidecars[0].image=fluent/fluent-bit:3.2`,
    ];
    const objects = await render({
      set: [...set('router'), ...set('shard'), 'reshard.hook.priorityClassName=ops'],
    });
    for (const [w, c] of [
      [router(objects), 'router'],
      [shard(objects), 'shard'],
    ] as const) {
      const spec = podSpecOf(w);
      expect(spec.priorityClassName).toBe(`${c}-critical`);
      expect(spec.volumes).toContainEqual({ name: 'certs', secret: { secretName: `${c}-certs` } });
      expect(spec.volumes).toContainEqual({ name: 'tmp', emptyDir: { sizeLimit: '64Mi' } });
      const [main, sidecar] = spec.containers;
      expect(main.name).toBe(c);
      expect(main.env).toContainEqual({ name: 'SHARDCHAT__log__level', value: 'debug' });
      expect(main.env).toContainEqual({
        name: 'POD_NAMESPACE',
        valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } },
      });
      expect(main.volumeMounts).toContainEqual({ name: 'certs', mountPath: '/etc/certs', readOnly: true });
      expect(main.volumeMounts).toContainEqual({
        name: 'config',
        mountPath: '/etc/shardchat',
        readOnly: true,
      });
      expect(sidecar).toEqual({ name: 'shipper', image: 'fluent/fluent-bit:3.2' });
      expect(() => validateObject(w)).not.toThrow();
    }
    for (const j of objects.filter((o) => component(o) === 'reshard'))
      expect(podSpecOf(j).priorityClassName).toBe('ops');
    expect(await strictFieldCheck(objects)).toBe('');
    // Unset: none of them is rendered.
    const plain = await render();
    for (const w of [router(plain), shard(plain)]) {
      expect(podSpecOf(w).priorityClassName).toBeUndefined();
      expect(podSpecOf(w).containers).toHaveLength(1);
    }
  }, 60_000);

  it('global.imageRegistry (else image.registry) replaces the registry of every image', async () => {
    expect(new Set(images(await render()))).toEqual(new Set(['ghcr.io/shardchat/shardchat:0.1.0']));
    expect(new Set(images(await render({ set: ['global.imageRegistry=mirror.example.com:5000'] })))).toEqual(
      new Set(['mirror.example.com:5000/shardchat/shardchat:0.1.0']),
    );
    expect(
      new Set(
        images(await render({ set: ['image.registry=a.example.com', 'global.imageRegistry=b.example.com'] })),
      ),
    ).toEqual(new Set(['b.example.com/shardchat/shardchat:0.1.0']));
    // A repository without a registry part gets the registry in front.
    expect(
      new Set(
        images(
          await render({
            set: ['image.repository=team/chat', 'image.registry=registry.local', 'image.tag=1.2.3'],
          }),
        ),
      ),
    ).toEqual(new Set(['registry.local/team/chat:1.2.3']));
    await expect(render({ set: ['global.imageRegistry=not a registry'] })).rejects.toThrow(
      /helm template failed/,
    );
  });

  it('Chart.yaml has icon, sources and maintainers, and helm lint has nothing to say', async () => {
    const chart = yaml.load(readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
    expect(chart.icon).toMatch(/^https:\/\/.+\.svg$/);
    expect(chart.sources).toEqual(expect.arrayContaining(['https://github.com/shardchat/shardchat']));
    expect((chart.maintainers as { name: string }[])[0]?.name).toBeTruthy();
    const r = await lint();
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).not.toContain('[INFO]');
  });

  it('an Ingress with empty or null hosts has one rule for every host; hosts without host are valid too', async () => {
    for (const json of ['router.ingress.hosts=null', 'router.ingress.hosts=[]']) {
      const objects = await render({ set: ['router.ingress.enabled=true'], extra: ['--set-json', json] });
      const ing = one(objects, 'Ingress');
      expect(() => validateObject(ing)).not.toThrow();
      expect(ing.spec.rules).toEqual([
        {
          http: {
            paths: [
              {
                path: '/',
                pathType: 'Prefix',
                backend: { service: { name: 'shardchat', port: { name: 'http' } } },
              },
            ],
          },
        },
      ]);
    }
    const hostless = await render({
      set: [
        'router.ingress.enabled=true',
        'router.ingress.hosts[0].paths[0].path=/chat',
        'router.ingress.hosts[0].paths[0].pathType=Prefix',
      ],
    });
    expect(one(hostless, 'Ingress').spec.rules[0].host).toBeUndefined();
    await expect(
      render({ set: ['router.ingress.enabled=true', 'router.ingress.hosts[0].host=x.example.com'] }),
    ).rejects.toThrow(/paths/); // a host without paths: the schema says which field
  });

  it('values.yaml documents the WebSocket timeouts of ingress-nginx', () => {
    const values = readFileSync(path.join(CHART, 'values.yaml'), 'utf8');
    expect(values).toContain('nginx.ingress.kubernetes.io/proxy-read-timeout');
    expect(values).toContain('nginx.ingress.kubernetes.io/proxy-send-timeout');
  });

  it('the schema refuses malformed extras', async () => {
    for (const set of [
      'router.extraEnv[0].value=x',
      'shard.extraVolumeMounts[0].name=x',
      'shard.extraVolumeMounts[0].mountPath=relative',
      'router.sidecars[0].name=x',
      'router.priorityClassName=1',
      'podSecurityContext=strict',
    ]) {
      await expect(render({ set: [set] }), set).rejects.toThrow(/helm template failed/);
    }
  });
});
