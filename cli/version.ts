/** `shardchat --version`: the version in package.json, read when asked. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The package's version. package.json is two directories above the built file: dist/cli/
 * in a checkout, /app/dist/cli/ next to /app/package.json in the container image (see the
 * Dockerfile's runtime stage).
 */
export function packageVersion(file: URL = new URL('../../package.json', import.meta.url)): string {
  let pkg: { version?: unknown };
  try {
    pkg = JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown };
  } catch (err) {
    throw new Error(`cannot read the version from ${fileURLToPath(file)}: ${(err as Error).message}`);
  }
  if (typeof pkg.version !== 'string' || pkg.version === '')
    throw new Error(`${fileURLToPath(file)} has no version`);
  return pkg.version;
}
