// Bundles the browser chat (web/ and the client SDK it uses) into dist/web/, which the
// router serves in local mode: index.html at /, the rest under /app/; and the cluster
// view (web/cluster/) into dist/web/cluster/, which the router's admin port serves. Everything comes
// from this repository and npm; nothing is loaded from a CDN.
import { copyFile, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(here, '../dist/web');

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: [path.join(here, 'main.ts')],
  outfile: path.join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022', 'chrome109', 'firefox115', 'safari16'],
  minify: true,
  sourcemap: 'linked',
  legalComments: 'none',
  logLevel: 'warning',
});
await copyFile(path.join(here, 'index.html'), path.join(out, 'index.html'));
// The live cluster view, served by the router's admin port at /cluster.
await mkdir(path.join(out, 'cluster'), { recursive: true });
await build({
  entryPoints: [path.join(here, 'cluster', 'app.ts')],
  outfile: path.join(out, 'cluster', 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022', 'chrome109', 'firefox115', 'safari16'],
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
});
for (const f of ['index.html', 'styles.css'])
  await copyFile(path.join(here, 'cluster', f), path.join(out, 'cluster', f));
for (const f of ['styles.css', 'favicon.svg']) await copyFile(path.join(here, f), path.join(out, f));
