/**
 * The CLI's small checks (issue 15, "CLI rough edges"): option values, the version,
 * configuration warnings, the shard's secrets and process titles.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { positiveWholeNumber, required, requiredPositiveWholeNumber, UsageError } from '../../../cli/args.js';
import { captureGroups, configWarnings, withKeyGroup } from '../../../cli/config-warnings.js';
import { explain } from '../../../cli/explain.js';
import { processTitle } from '../../../cli/process-title.js';
import { shardSecretProblems } from '../../../cli/shard-secrets.js';
import { packageVersion } from '../../../cli/version.js';
import { type Config, parseConfig } from '../../../common/config.js';
import { initHash } from '../../../common/hash.js';
import { Authenticator } from '../../../shard/api/auth.js';
import { REPO_ROOT } from '../../helpers/processes.js';

let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'shardchat-cli-checks-'));
  await initHash();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
}

describe('option values', () => {
  it('a missing required option is named, with what it wants', () => {
    expect(usageError(() => requiredPositiveWholeNumber('to', undefined))).toBe(
      '--to is required (a positive whole number)',
    );
    expect(usageError(() => required('keys', undefined, 'a file of keys, one a line'))).toBe(
      '--keys is required (a file of keys, one a line)',
    );
    expect(required('keys', 'k.txt', 'a file')).toBe('k.txt');
  });

  it('a bad value is quoted', () => {
    for (const v of ['', ' ', 'x', '0', '-1', '1.5', 'NaN', 'Infinity']) {
      expect(usageError(() => positiveWholeNumber('from', v))).toBe(
        `--from wants a positive whole number, got ${JSON.stringify(v)}`,
      );
    }
    expect(usageError(() => requiredPositiveWholeNumber('to', ''))).toBe(
      '--to wants a positive whole number, got ""',
    );
    expect(positiveWholeNumber('from', '3')).toBe(3);
    expect(requiredPositiveWholeNumber('to', '4096')).toBe(4096);
  });
});

describe('packageVersion', () => {
  it("reads package.json's version", () => {
    const f = path.join(dir, 'package.json');
    writeFileSync(f, JSON.stringify({ name: 'x', version: '1.2.3-rc.1' }));
    expect(packageVersion(pathToFileURL(f))).toBe('1.2.3-rc.1');
  });

  it("by default, two directories above the file: dist/cli/ -> the package's root", () => {
    const real = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
      version: string;
    };
    const fromDist = new URL(
      '../../package.json',
      pathToFileURL(path.join(REPO_ROOT, 'dist', 'cli', 'version.js')),
    );
    expect(packageVersion(fromDist)).toBe(real.version);
    // The image: /app/dist/cli/main.js next to /app/package.json (Dockerfile runtime stage).
    expect(new URL('../../package.json', 'file:///app/dist/cli/version.js').pathname).toBe(
      '/app/package.json',
    );
  });

  it('says which file is missing or has no version', () => {
    const missing = path.join(dir, 'nope', 'package.json');
    expect(() => packageVersion(pathToFileURL(missing))).toThrow(`cannot read the version from ${missing}`);
    const f = path.join(dir, 'noversion.json');
    writeFileSync(f, '{"name":"x"}');
    expect(() => packageVersion(pathToFileURL(f))).toThrow(`${f} has no version`);
  });
});

describe('configuration warnings: a urlPattern without a capture group', () => {
  const cfgWith = (shardSpec: Record<string, unknown>): Config => parseConfig({ shardSpec });

  it('captureGroups counts plain and named groups, not (?:...) or lookarounds', () => {
    expect(captureGroups('^/groups/[^/]+')).toBe(0);
    expect(captureGroups('^/(?:groups|users)/[^/]+')).toBe(0);
    expect(captureGroups('^/(?=g)[^/]+')).toBe(0);
    expect(captureGroups('^/(?:groups|users)/([^/]+)')).toBe(1);
    expect(captureGroups('^/rooms/(?<key>[^/]+)')).toBe(1);
    expect(captureGroups('^/(a)|(b)')).toBe(2);
    expect(captureGroups('^/\\(x\\)')).toBe(0);
  });

  it('withKeyGroup makes the first segment class the group, when there is one', () => {
    expect(withKeyGroup('^/groups/[^/]+')).toBe('^/groups/([^/]+)');
    expect(withKeyGroup('^\\/users\\/[^\\/]+\\/x')).toBe('^\\/users\\/([^\\/]+)\\/x');
    expect(withKeyGroup('^/t/[^/]*')).toBe('^/t/([^/]*)');
    expect(withKeyGroup('^/healthz$')).toBeUndefined();
  });

  it('the default and patterns with a group (numbered or named, key or not) give no warning', () => {
    expect(configWarnings(parseConfig({}))).toEqual([]);
    for (const urlPattern of ['^/rooms/(?<key>[^/]+)', '^/t/([a-z]+)', '^/t/(?<tenant>[^/]+)'])
      expect(configWarnings(cfgWith({ urlPattern })), urlPattern).toEqual([]);
  });

  it('onNoMatch path: every path hashed whole, one group spread over shards; suggests a pattern with a group', () => {
    const [w, ...rest] = configWarnings(cfgWith({ urlPattern: '^/groups/[^/]+' }));
    expect(rest).toEqual([]);
    expect(w).toContain('shardSpec.urlPattern "^/groups/[^/]+" has no capture group');
    expect(w).toContain('every path is hashed whole');
    expect(w).toContain('over the shards');
    expect(w).toContain('e.g. "^/groups/([^/]+)"');
    expect(w).toContain('(?<key>');
    // Without a segment class to wrap, the default pattern is the example.
    expect(configWarnings(cfgWith({ urlPattern: '^/healthz$' }))[0]).toContain(
      'e.g. "^/(?:groups|users)/([^/]+)"',
    );
  });

  it('onNoMatch reject or a shard number: says where the requests go', () => {
    expect(configWarnings(cfgWith({ urlPattern: '^/x', onNoMatch: 'reject' }))[0]).toContain(
      'every request without the x-group-id header is refused with 404',
    );
    expect(configWarnings(cfgWith({ urlPattern: '^/x', onNoMatch: 'reject', header: '' }))[0]).toContain(
      'every request is refused with 404',
    );
    expect(configWarnings(cfgWith({ urlPattern: '^/x', onNoMatch: 2 }))[0]).toContain(
      'every request without the x-group-id header goes to shard 2',
    );
  });

  it('explain lists the warnings (only when there are some)', async () => {
    const cfg = cfgWith({ urlPattern: '^/groups/[^/]+' });
    const e = await explain(cfg, '/groups/lobby/messages', {});
    expect(e).toMatchObject({ rule: 'path', key: '/groups/lobby/messages', outcome: 'forward' });
    expect(e.warnings).toEqual(configWarnings(cfg));
    expect(e.warnings).toHaveLength(1);
    // After the other fields in the JSON.
    expect(Object.keys(JSON.parse(JSON.stringify(e))).at(-1)).toBe('warnings');
    expect('warnings' in (await explain(parseConfig({}), '/groups/lobby', {}))).toBe(false);
  });
});

describe("the shard's secrets (shard --check-config)", () => {
  const secret32 = 'x'.repeat(32);

  it('both present, the auth secret at least 32 bytes: nothing to say', () => {
    expect(shardSecretProblems({ SHARDCHAT_AUTH_SECRET: secret32, SHARDCHAT_INTERNAL_TOKEN: 't' })).toEqual(
      [],
    );
  });

  it('missing or empty: named, with the words the shard uses at start', () => {
    expect(shardSecretProblems({})).toEqual([
      'SHARDCHAT_AUTH_SECRET is not set: the shard cannot check tokens',
      'SHARDCHAT_INTERNAL_TOKEN is not set: shards cannot call each other',
    ]);
    expect(shardSecretProblems({ SHARDCHAT_AUTH_SECRET: '', SHARDCHAT_INTERNAL_TOKEN: secret32 })).toEqual([
      'SHARDCHAT_AUTH_SECRET is not set: the shard cannot check tokens',
    ]);
    expect(shardSecretProblems({ SHARDCHAT_AUTH_SECRET: secret32, SHARDCHAT_INTERNAL_TOKEN: '' })).toEqual([
      'SHARDCHAT_INTERNAL_TOKEN is not set: shards cannot call each other',
    ]);
  });

  it('an auth secret shorter than 32 bytes (bytes, not characters), exactly when the shard refuses it', () => {
    const cases = [
      'x'.repeat(31),
      'x'.repeat(32),
      'é'.repeat(15),
      'é'.repeat(16),
      '🔑'.repeat(7),
      '🔑'.repeat(8),
    ];
    for (const secret of cases) {
      const problems = shardSecretProblems({ SHARDCHAT_AUTH_SECRET: secret, SHARDCHAT_INTERNAL_TOKEN: 't' });
      let refused = false;
      try {
        new Authenticator({ secret });
      } catch {
        refused = true;
      }
      expect(problems.length > 0, secret).toBe(refused);
      expect(refused, secret).toBe(Buffer.byteLength(secret) < 32);
      if (refused)
        expect(problems).toEqual([
          `SHARDCHAT_AUTH_SECRET must be at least 32 bytes (it has ${Buffer.byteLength(secret)})`,
        ]);
    }
  });
});

describe('process titles', () => {
  it('router: shardchat router :<port>', () => {
    expect(processTitle('router', parseConfig({}), 8080)).toBe('shardchat router :8080');
  });

  it("shard: its ordinal as resolveOrdinal finds it (configuration, SHARD_ORDINAL, the hostname's -N)", () => {
    const plain = parseConfig({});
    expect(
      processTitle('shard', parseConfig({ shard: { ordinal: 2 } }), 8081, { SHARD_ORDINAL: '5' }, 'h-7'),
    ).toBe('shardchat shard-2 :8081');
    expect(processTitle('shard', plain, 8081, { SHARD_ORDINAL: '5' }, 'h-7')).toBe('shardchat shard-5 :8081');
    expect(processTitle('shard', plain, 9000, {}, 'shardchat-shard-12')).toBe('shardchat shard-12 :9000');
    // No ordinal to be found: no ordinal in the title (the shard then stops at start).
    expect(processTitle('shard', plain, 8080, {}, 'laptop')).toBe('shardchat shard :8080');
    expect(processTitle('shard', plain, 8080, { SHARD_ORDINAL: 'x' }, 'laptop')).toBe(
      'shardchat shard :8080',
    );
  });
});
