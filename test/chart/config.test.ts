/**
 * The configuration file the chart renders (the ConfigMap's shardchat.yaml) is accepted
 * by the real CLI: `router --check-config` and `shard --check-config` (build first).
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { k8sTools } from '../helpers/k8s-tools.js';
import { childEnv, runCli, useProcessCleanup } from '../helpers/processes.js';
import { ciValuesFiles, configOf, configText, render } from './chart.js';

const registry = useProcessCleanup();

beforeAll(() => {
  k8sTools();
}, 300_000);

const variants: { name: string; values: string[]; set?: string[] }[] = [
  { name: 'default values', values: [] },
  {
    name: 'shards=5, jump, devTokens, issuer',
    values: [],
    set: [
      'shards=5',
      'shardSpec.assignment=jump',
      'auth.devTokens=true',
      'auth.issuer=https://id.example.com',
    ],
  },
  ...ciValuesFiles().map((f) => ({ name: `ci/${f}`, values: [f] })),
];

describe.each(variants)('the configuration rendered with $name', ({ values, set }) => {
  it('is accepted by `router --check-config` and `shard --check-config`', async () => {
    const objects = await render({ values, set });
    const dir = await registry.tempDir('test', 'shardchat-chart-');
    const file = path.join(dir, 'shardchat.yaml');
    await writeFile(file, configText(objects));
    // The environment the pods have: no SHARDCHAT__ overrides, the namespace from the downward API,
    // and the chart's Secret (`shard --check-config` refuses to pass without it).
    const env = childEnv({
      POD_NAMESPACE: 'shardchat',
      SHARD_ORDINAL: '0',
      SHARDCHAT_AUTH_SECRET: 'x'.repeat(32),
      SHARDCHAT_INTERNAL_TOKEN: 'internal-token',
    });
    for (const component of ['router', 'shard']) {
      const r = await runCli([component, '--check-config', '--config', file], { env });
      expect(r.code, `${component} --check-config: ${r.stderr}${r.stdout}`).toBe(0);
      expect(r.stdout).toContain(': ok');
    }
    const cfg = configOf(objects);
    expect(cfg.router).toMatchObject({ host: '0.0.0.0', port: 8080, adminPort: 9090 });
    expect(cfg.shard).toMatchObject({ host: '0.0.0.0', port: 8080, adminPort: 9090, dataDir: '/data' });
  });
});

it('carries values into the configuration', async () => {
  const cfg = configOf(await render({ values: ['static-values.yaml'] }));
  expect(cfg.shardSpec).toEqual({
    urlPattern: '^/(?:groups|users)/([^/]+)',
    header: 'x-group-id',
    onNoMatch: 'reject',
    assignment: 'jump',
  });
  expect(cfg.router.timeouts).toEqual({ shutdownMs: 15000 });
  expect(cfg.router.retryAfterSeconds).toBe(3);
  expect(cfg.shard.limits).toEqual({ maxMessageBytes: 4096 });
  expect(cfg.shard.commit).toEqual({ maxBatch: 500 });
  expect(cfg.auth).toEqual({ devTokens: true });
  expect(cfg.log).toEqual({ level: 'debug' });
});
