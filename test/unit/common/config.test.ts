/**
 * Configuration (docs/architecture.md section 3): defaults, validation errors that name the bad
 * field, refusal of unsafe patterns, and SHARDCHAT__ environment overrides.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  applyEnvOverrides,
  type Config,
  ConfigError,
  configFieldsAt,
  configSchema,
  DEFAULT_URL_PATTERN,
  loadConfig,
  parseConfig,
  shardCount,
} from '../../../common/config.js';
import { closest, editDistance } from '../../../common/did-you-mean.js';
import { checkPatternSafety } from '../../../common/regex-safety.js';

let dir: string;
let counter = 0;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'shardchat-config-test-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Writes a temporary configuration file and returns its path. */
function file(text: string): string {
  const f = path.join(dir, `config-${counter++}.yaml`);
  writeFileSync(f, text);
  return f;
}

/** The ConfigError thrown by `fn`, or a failure when it throws nothing or something else. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).name).toBe('ConfigError');
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

/** The message of the error parseConfig throws for `raw`. */
function invalid(raw: unknown): string {
  return configError(() => parseConfig(raw)).message;
}

describe('defaults', () => {
  const designShape = {
    shardSpec: {
      urlPattern: '^/(?:groups|users)/([^/]+)',
      header: 'x-group-id',
      onNoMatch: 'path',
      assignment: 'modulo',
    },
    topology: {
      mode: 'static',
      targets: [],
      adminTargets: [],
      shards: 3,
      targetTemplate: 'http://shardchat-shard-{ordinal}.shardchat-shard.{namespace}.svc.cluster.local:8080',
      adminTemplate: 'http://shardchat-shard-{ordinal}.shardchat-shard.{namespace}.svc.cluster.local:9090',
    },
    router: { host: '0.0.0.0', port: 8080, adminPort: 9090 },
    shard: { host: '0.0.0.0', port: 8080, adminPort: 9090, dataDir: '/data' },
    auth: { devTokens: false },
  };

  it('an empty configuration has the docs/architecture.md section 3 shape', () => {
    const cfg = parseConfig({});
    expect(cfg).toMatchObject(designShape);
    // Sections with nothing beyond the documented fields are exactly those fields.
    expect(cfg.shardSpec).toEqual(designShape.shardSpec);
    // docs/architecture.md section 3 lists the shard's base fields; limits, commit, internal and
    // notifications joined as their features landed (checked below).
    expect(cfg.shard).toMatchObject(designShape.shard);
    expect(cfg.shard.ordinal).toBeUndefined();
    expect(cfg.shard.commit.maxBatch).toBe(1000);
    expect(cfg.shard.notifications.webhookUrl).toBe('');
    expect(cfg.shard.limits.maxMessageBytes).toBe(8192);
    expect(cfg.shard.internal.attempts).toBe(5);
    expect(cfg.auth).toEqual({ devTokens: false });
    expect(cfg.auth.issuer).toBeUndefined();
    expect(cfg.auth.audience).toBeUndefined();
  });

  it('null/undefined raw input and loadConfig without a file give the same defaults', () => {
    const a = parseConfig(undefined);
    const b = parseConfig(null);
    const c = loadConfig(undefined, {});
    expect(b).toEqual(a);
    expect(c).toEqual(a);
    expect(c).toMatchObject(designShape);
  });

  it('an empty file and a file with empty sections give the defaults', () => {
    const base = parseConfig({});
    expect(loadConfig(file(''), {})).toEqual(base);
    expect(loadConfig(file('# only a comment\n'), {})).toEqual(base);
    expect(loadConfig(file('shardSpec: {}\ntopology: {}\nrouter: {}\nshard: {}\nauth: {}\n'), {})).toEqual(
      base,
    );
  });

  it('the docs/architecture.md section 3 block itself, written out as a file, is accepted and equals the defaults', () => {
    const text = `
shardSpec:
  urlPattern: '^/(?:groups|users)/([^/]+)'
  header: x-group-id
  onNoMatch: path
  assignment: modulo
topology:
  mode: static
  targets: []
  adminTargets: []
  shards: 3
  targetTemplate: 'http://shardchat-shard-{ordinal}.shardchat-shard.{namespace}.svc.cluster.local:8080'
  adminTemplate: 'http://shardchat-shard-{ordinal}.shardchat-shard.{namespace}.svc.cluster.local:9090'
router: { host: 0.0.0.0, port: 8080, adminPort: 9090 }
shard:  { host: 0.0.0.0, port: 8080, adminPort: 9090, dataDir: /data }
auth:   { devTokens: false }
`;
    expect(loadConfig(file(text), {})).toEqual(parseConfig({}));
  });

  it('router limits and timeouts have sensible defaults (8 KiB path bound)', () => {
    const cfg = parseConfig({});
    expect(cfg.router.limits.maxPathBytes).toBe(8192);
    for (const v of Object.values(cfg.router.timeouts)) expect(v).toBeGreaterThan(0);
    expect(cfg.router.retryAfterSeconds).toBeGreaterThanOrEqual(1);
  });

  it('the per-user message limit has defaults and refuses a rate of 0 or a burst below 1', () => {
    const limits = parseConfig({}).shard.limits;
    expect(limits.userMessagesPerSecond).toBe(50);
    expect(limits.userMessageBurst).toBe(200);
    expect(limits.userRateMaxUsers).toBe(100000);
    expect(invalid({ shard: { limits: { userMessagesPerSecond: 0 } } })).toMatch(
      /^\s*shard\.limits\.userMessagesPerSecond: /m,
    );
    expect(invalid({ shard: { limits: { userMessageBurst: 0 } } })).toMatch(
      /^\s*shard\.limits\.userMessageBurst: /m,
    );
    expect(invalid({ shard: { limits: { userRateMaxUsers: 1.5 } } })).toMatch(
      /^\s*shard\.limits\.userRateMaxUsers: /m,
    );
  });

  it('shardCount is S: the number of targets when given, else topology.shards', () => {
    expect(shardCount(parseConfig({}))).toBe(3);
    expect(shardCount(parseConfig({ topology: { shards: 7 } }))).toBe(7);
    expect(shardCount(parseConfig({ topology: { shards: 7, targets: ['http://a:1', 'http://b:2'] } }))).toBe(
      2,
    );
  });

  it('values given are kept', () => {
    const cfg = parseConfig({
      shardSpec: { urlPattern: '^/rooms/(?<key>[^/]+)', header: '', onNoMatch: 1, assignment: 'jump' },
      router: { host: '127.0.0.1', port: 0, adminPort: 65535 },
      auth: { devTokens: true, issuer: 'https://issuer.example', audience: 'chat' },
    });
    expect(cfg.shardSpec).toEqual({
      urlPattern: '^/rooms/(?<key>[^/]+)',
      header: '',
      onNoMatch: 1,
      assignment: 'jump',
    });
    expect(cfg.router).toMatchObject({ host: '127.0.0.1', port: 0, adminPort: 65535 });
    expect(cfg.auth).toEqual({ devTokens: true, issuer: 'https://issuer.example', audience: 'chat' });
  });
});

describe('validation errors name the bad field', () => {
  it('router.port', () => {
    expect(invalid({ router: { port: 70000 } })).toMatch(/^\s*router\.port: /m);
    expect(invalid({ router: { port: 'http' } })).toMatch(/^\s*router\.port: /m);
    expect(invalid({ router: { port: 80.5 } })).toMatch(/^\s*router\.port: /m);
    expect(invalid({ router: { port: -1 } })).toMatch(/^\s*router\.port: /m);
  });

  it('topology.targets[1]', () => {
    const msg = invalid({ topology: { targets: ['http://shard-0:8080', 'ftp://shard-1:8080'] } });
    expect(msg).toMatch(/^\s*topology\.targets\[1\]: /m);
    expect(msg).not.toMatch(/targets\[0\]/);
    expect(invalid({ topology: { targets: ['http://a:1', 'not a url'] } })).toMatch(
      /^\s*topology\.targets\[1\]: /m,
    );
  });

  it('topology.adminTargets[0]', () => {
    expect(invalid({ topology: { targets: ['http://a:1'], adminTargets: ['nope'] } })).toMatch(
      /^\s*topology\.adminTargets\[0\]: /m,
    );
  });

  it('shardSpec.assignment', () => {
    expect(invalid({ shardSpec: { assignment: 'rendezvous' } })).toMatch(/^\s*shardSpec\.assignment: /m);
  });

  it('shardSpec.header must be a header name', () => {
    expect(invalid({ shardSpec: { header: 'x group id' } })).toMatch(/^\s*shardSpec\.header: /m);
    expect(invalid({ shardSpec: { header: 'x-group-id:' } })).toMatch(/^\s*shardSpec\.header: /m);
  });

  it('topology.shards and auth.devTokens types', () => {
    expect(invalid({ topology: { shards: 0 } })).toMatch(/^\s*topology\.shards: /m);
    expect(invalid({ topology: { shards: 'three' } })).toMatch(/^\s*topology\.shards: /m);
    expect(invalid({ auth: { devTokens: 'yes' } })).toMatch(/^\s*auth\.devTokens: /m);
  });

  it('nested limits: router.limits.maxPathBytes', () => {
    expect(invalid({ router: { limits: { maxPathBytes: 1 } } })).toMatch(
      /^\s*router\.limits\.maxPathBytes: /m,
    );
  });

  it('several problems are all reported, and the source is named', () => {
    const err = configError(() =>
      parseConfig({ router: { port: -1 }, shard: { adminPort: 'x' } }, 'my.yaml'),
    );
    expect(err.message).toMatch(/^my\.yaml is invalid/);
    expect(err.message).toMatch(/router\.port: /);
    expect(err.message).toMatch(/shard\.adminPort: /);
  });

  it('a section that is not a mapping is refused', () => {
    expect(invalid({ router: 8080 })).toMatch(/^\s*router: /m);
    expect(invalid({ topology: { targets: 'http://a:1' } })).toMatch(/^\s*topology\.targets: /m);
  });
});

describe('unknown fields are refused', () => {
  it('at the top level', () => {
    const msg = invalid({ routr: { port: 8080 } });
    expect(msg).toMatch(/routr/);
    expect(msg).toMatch(/^\s*routr: unknown field; did you mean router\?$/m);
  });

  it('inside a section, naming the section and the key', () => {
    const msg = invalid({ router: { prot: 8080 } });
    expect(msg).toMatch(/^\s*router\.prot: unknown field; did you mean port\?$/m);
    expect(invalid({ shardSpec: { urlpattern: '^/x/([^/]+)' } })).toMatch(
      /^\s*shardSpec\.urlpattern: unknown field; did you mean urlPattern\?$/m,
    );
    expect(invalid({ router: { limits: { maxPathByte: 100 } } })).toMatch(
      /^\s*router\.limits\.maxPathByte: unknown field; did you mean maxPathBytes\?$/m,
    );
  });

  it('from a file', () => {
    const f = file('router:\n  port: 8080\n  bogus: true\n');
    const err = configError(() => loadConfig(f, {}));
    expect(err.message).toContain(f);
    expect(err.message).toMatch(/router\.bogus: unknown field/);
  });
});

describe('unknown fields: did you mean', () => {
  it('editDistance: insertions, deletions, substitutions and adjacent transpositions cost 1', () => {
    expect(editDistance('', '')).toBe(0);
    expect(editDistance('', 'port')).toBe(4);
    expect(editDistance('port', '')).toBe(4);
    expect(editDistance('port', 'port')).toBe(0);
    expect(editDistance('urlPatern', 'urlPattern')).toBe(1);
    expect(editDistance('prot', 'port')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('ca', 'abc')).toBe(3); // optimal string alignment, not unrestricted Damerau
    expect(editDistance('urlpattern', 'urlPattern')).toBe(1); // case-sensitive itself
  });

  it('closest: at most 2 edits and under half the name, ignoring case, ties to the first candidate', () => {
    expect(closest('urlpattern', ['urlPattern', 'header'])).toBe('urlPattern');
    expect(closest('adminport', ['port', 'adminPort'])).toBe('adminPort');
    expect(closest('prot', ['host', 'port'])).toBe('port');
    expect(closest('bogus', ['host', 'port'])).toBeUndefined();
    expect(closest('xyz', ['x', 'y'])).toBeUndefined();
    expect(closest('host', ['port'])).toBeUndefined();
    expect(closest('lg', ['log'])).toBe('log');
    // Two edits at most, changing less than half of the longer name.
    expect(closest('mxaPathByts', ['maxPathBytes'])).toBe('maxPathBytes'); // a transposition and an insertion
    expect(closest('mxaPathByt', ['maxPathBytes'])).toBeUndefined(); // and one more
    expect(closest('maxPathByt', ['maxPathBytes'])).toBe('maxPathBytes');
    expect(closest('p', ['port'])).toBeUndefined();
    expect(closest('ab', ['a'])).toBeUndefined();
    expect(closest('ab', ['abc', 'abd'])).toBe('abc');
  });

  it("the allowed fields come from the schema's shape, through defaults and optional sections", () => {
    const defaults = parseConfig({});
    expect(configFieldsAt([])).toEqual(Object.keys(defaults));
    expect(configFieldsAt(['shardSpec'])).toEqual(Object.keys(defaults.shardSpec));
    expect(configFieldsAt(['router', 'limits'])).toEqual(Object.keys(defaults.router.limits));
    expect(configFieldsAt(['shard', 'delivery', 'pull'])).toEqual(Object.keys(defaults.shard.delivery.pull));
    expect(configFieldsAt(['topology', 'kubernetes'])).toEqual(['statefulSet', 'port', 'adminPort']);
    // Optional fields absent from the defaults are fields too.
    expect(configFieldsAt(['router'])).toContain('webDir');
    expect(configFieldsAt(['auth'])).toEqual(['devTokens', 'issuer', 'audience']);
    // Not objects, or not there.
    expect(configFieldsAt(['router', 'port'])).toBeUndefined();
    expect(configFieldsAt(['topology', 'targets', 0])).toBeUndefined();
    expect(configFieldsAt(['nope'])).toBeUndefined();
  });

  it('the issue of #15: shardSpec.urlPatern: unknown field; did you mean urlPattern?', () => {
    const msg = invalid({ shardSpec: { urlPatern: '^/x/([^/]+)' } });
    expect(msg).toBe(
      'configuration is invalid:\n  shardSpec.urlPatern: unknown field; did you mean urlPattern?',
    );
    expect(msg).not.toMatch(/Unrecognized/);
  });

  it('several unknown fields in one section: a line each; with no close field, the known ones are listed', () => {
    const msg = invalid({ router: { prot: 1, bogus: true } });
    expect(msg).toMatch(/^ {2}router\.prot: unknown field; did you mean port\?$/m);
    expect(msg).toMatch(
      /^ {2}router\.bogus: unknown field \(known: host, port, adminPort, limits, timeouts, retryAfterSeconds, webDir\)$/m,
    );
    expect(invalid({ shard: { delivery: { pul: {} } } })).toMatch(
      /^ {2}shard\.delivery\.pul: unknown field; did you mean pull\?$/m,
    );
  });

  it('a misspelt variable gets the corrected variable name', () => {
    const msg = configError(() =>
      loadConfig(undefined, {
        SHARDCHAT__router__prot: '8080',
        SHARDCHAT__routr__adminPort: '9090',
        SHARDCHAT__shardspec__assignment: 'jump',
      }),
    ).message;
    expect(msg).toMatch(
      /^ {2}environment variable SHARDCHAT__router__prot \(router\.prot\): unknown field; did you mean SHARDCHAT__router__port\?$/m,
    );
    expect(msg).toMatch(
      /^ {2}environment variable SHARDCHAT__routr__adminPort \(routr\): unknown field; did you mean SHARDCHAT__router__adminPort\?$/m,
    );
    expect(msg).toMatch(
      /^ {2}environment variable SHARDCHAT__shardspec__assignment \(shardspec\): unknown field; did you mean SHARDCHAT__shardSpec__assignment\?$/m,
    );
    // A misspelt field inside a mapping given as the value: the field, not a variable.
    expect(
      configError(() => loadConfig(undefined, { SHARDCHAT__router__limits: '{ maxPathByte: 100 }' })).message,
    ).toMatch(
      /environment variable SHARDCHAT__router__limits \(router\.limits\.maxPathByte\): unknown field; did you mean maxPathBytes\?/,
    );
  });
});

describe('problems from the environment name the variable', () => {
  it('the issue of #15: SHARDCHAT__router__port=abc', () => {
    const err = configError(() => loadConfig(undefined, { SHARDCHAT__router__port: 'abc' }));
    expect(err.message).toBe(
      'configuration is invalid:\n  environment variable SHARDCHAT__router__port (router.port): expected a number, got "abc"',
    );
    // Not reported as a bad file.
    expect(err.message).not.toMatch(/default configuration|\.yaml/);
  });

  it('says what the field wants and what the variable held', () => {
    const msg = (env: NodeJS.ProcessEnv) => configError(() => loadConfig(undefined, env)).message;
    expect(msg({ SHARDCHAT__router__port: '8080.5' })).toMatch(
      /SHARDCHAT__router__port \(router\.port\): expected a whole number, got "8080\.5"$/m,
    );
    expect(msg({ SHARDCHAT__auth__devTokens: 'yes' })).toMatch(
      /SHARDCHAT__auth__devTokens \(auth\.devTokens\): expected true or false, got "yes"$/m,
    );
    expect(msg({ SHARDCHAT__topology__targets: 'http://a:1' })).toMatch(
      /SHARDCHAT__topology__targets \(topology\.targets\): expected a list such as \[a, b\], got "http:\/\/a:1"$/m,
    );
    // Other checks keep their own words.
    expect(msg({ SHARDCHAT__router__port: '70000' })).toMatch(
      /^ {2}environment variable SHARDCHAT__router__port \(router\.port\): .*65535/m,
    );
    expect(msg({ SHARDCHAT__shardSpec__assignment: 'ring' })).toMatch(
      /^ {2}environment variable SHARDCHAT__shardSpec__assignment \(shardSpec\.assignment\): /m,
    );
  });

  it('a problem inside a list or mapping given by a variable names the variable and the full path', () => {
    const msg = configError(() =>
      loadConfig(undefined, { SHARDCHAT__topology__targets: '[http://a:1, ftp://b:2]' }),
    ).message;
    expect(msg).toMatch(
      /^ {2}environment variable SHARDCHAT__topology__targets \(topology\.targets\[1\]\): must be an http:\/\/ or https:\/\/ URL$/m,
    );
  });

  it('file and environment both wrong: each line names its source', () => {
    const f = file('router:\n  prot: 8080\nshardSpec:\n  assignment: ring\n');
    const err = configError(() => loadConfig(f, { SHARDCHAT__router__adminPort: 'abc' }));
    const lines = err.message.split('\n');
    expect(lines[0]).toBe('configuration is invalid:');
    expect(lines).toContain(`  ${f}: router.prot: unknown field; did you mean port?`);
    expect(lines).toContain(
      '  environment variable SHARDCHAT__router__adminPort (router.adminPort): expected a number, got "abc"',
    );
    expect(lines.some((l) => l.startsWith(`  ${f}: shardSpec.assignment: `))).toBe(true);
    expect(lines).toHaveLength(4);
  });

  it('a bad file with good overrides keeps the messages of a bad file', () => {
    const f = file('router:\n  port: http\n');
    const err = configError(() => loadConfig(f, { SHARDCHAT__router__adminPort: '9999' }));
    expect(err.message).toBe(
      `${f} is invalid:\n  router.port: Invalid input: expected number, received string`,
    );
  });

  it('a variable that replaces a bad file value takes the blame only for its own value', () => {
    const f = file('router:\n  port: http\n');
    // The variable fixes the file's value: valid.
    expect(loadConfig(f, { SHARDCHAT__router__port: '8181' }).router.port).toBe(8181);
    // A field the file misspells under a section a variable also sets is still the file's.
    const g = file('router:\n  bogus: 1\n');
    const msg = configError(() => loadConfig(g, { SHARDCHAT__router__port: '8181' })).message;
    expect(msg).toMatch(new RegExp(`^${g.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is invalid:`));
    expect(msg).toMatch(/^ {2}router\.bogus: unknown field/m);
  });
});

describe('urlPattern safety', () => {
  it('refuses a catastrophic (exponential) pattern, naming shardSpec.urlPattern', () => {
    const msg = invalid({ shardSpec: { urlPattern: '^(a+)+$' } });
    expect(msg).toMatch(/^\s*shardSpec\.urlPattern: refused: /m);
    expect(msg).toMatch(/catastrophic backtracking/);
    expect(checkPatternSafety('^(a+)+$').ok).toBe(false);
  });

  it('refuses a polynomial pattern, naming shardSpec.urlPattern', () => {
    const msg = invalid({ shardSpec: { urlPattern: '^/(.*)/(.*)/x$' } });
    expect(msg).toMatch(/^\s*shardSpec\.urlPattern: refused: /m);
    expect(checkPatternSafety('^/(.*)/(.*)/x$').ok).toBe(false);
  });

  it('refuses an invalid regular expression', () => {
    const msg = invalid({ shardSpec: { urlPattern: '^/groups/([^/]+' } });
    expect(msg).toMatch(/^\s*shardSpec\.urlPattern: /m);
    expect(msg).toMatch(/not a valid JavaScript regular expression/);
    expect(invalid({ shardSpec: { urlPattern: '^/(?<key>[^/]+)(?<key>x)' } })).toMatch(
      /shardSpec\.urlPattern: /,
    );
    const verdict = checkPatternSafety('(');
    expect(verdict.ok).toBe(false);
    expect(verdict.reason).toMatch(/not a valid JavaScript regular expression/);
  });

  it('refuses an empty pattern', () => {
    expect(invalid({ shardSpec: { urlPattern: '' } })).toMatch(/^\s*shardSpec\.urlPattern: /m);
  });

  it('accepts the default and other linear patterns', () => {
    // The processes take the default as proven (they skip recheck for it): proven here.
    for (const p of [DEFAULT_URL_PATTERN, '^/rooms/(?<key>[^/]+)', '^/t/([a-z0-9-]{1,64})(?:/|$)']) {
      expect(checkPatternSafety(p), p).toEqual({ ok: true });
      expect(parseConfig({ shardSpec: { urlPattern: p } }).shardSpec.urlPattern).toBe(p);
    }
  });

  it('refuses unsafe patterns arriving through the environment too', () => {
    const err = configError(() => loadConfig(undefined, { SHARDCHAT__shardSpec__urlPattern: '^(a+)+$' }));
    expect(err.message).toMatch(
      /environment variable SHARDCHAT__shardSpec__urlPattern \(shardSpec\.urlPattern\): refused/,
    );
  });
});

describe('cross-field rules', () => {
  it('onNoMatch as a shard number must be < S (topology.shards)', () => {
    const msg = invalid({ shardSpec: { onNoMatch: 3 }, topology: { shards: 3 } });
    expect(msg).toMatch(/^\s*shardSpec\.onNoMatch: /m);
    expect(msg).toMatch(/3 shards/);
    expect(parseConfig({ shardSpec: { onNoMatch: 2 }, topology: { shards: 3 } }).shardSpec.onNoMatch).toBe(2);
    expect(parseConfig({ shardSpec: { onNoMatch: 0 } }).shardSpec.onNoMatch).toBe(0);
    expect(invalid({ shardSpec: { onNoMatch: 100 } })).toMatch(/shardSpec\.onNoMatch: /);
  });

  it('onNoMatch as a shard number must be < S (number of targets)', () => {
    const targets = ['http://a:1', 'http://b:2'];
    expect(invalid({ shardSpec: { onNoMatch: 2 }, topology: { targets, shards: 5 } })).toMatch(
      /^\s*shardSpec\.onNoMatch: /m,
    );
    expect(parseConfig({ shardSpec: { onNoMatch: 1 }, topology: { targets } }).shardSpec.onNoMatch).toBe(1);
  });

  it('onNoMatch must be path, reject or a non-negative integer', () => {
    for (const bad of [-1, 1.5, 'pathh', true, null]) {
      expect(invalid({ shardSpec: { onNoMatch: bad } }), String(bad)).toMatch(/^\s*shardSpec\.onNoMatch: /m);
    }
    expect(parseConfig({ shardSpec: { onNoMatch: 'reject' } }).shardSpec.onNoMatch).toBe('reject');
  });

  it('adminTargets must have one entry per target', () => {
    const msg = invalid({
      topology: {
        targets: ['http://a:1', 'http://b:2', 'http://c:3'],
        adminTargets: ['http://a:9', 'http://b:9'],
      },
    });
    expect(msg).toMatch(/^\s*topology\.adminTargets: /m);
    expect(msg).toMatch(/2 entries/);
    expect(invalid({ topology: { adminTargets: ['http://a:9'] } })).toMatch(/^\s*topology\.adminTargets: /m);
    const ok = parseConfig({
      topology: { targets: ['http://a:1', 'http://b:2'], adminTargets: ['http://a:9', 'http://b:9'] },
    });
    expect(ok.topology.adminTargets).toEqual(['http://a:9', 'http://b:9']);
    // No adminTargets at all is fine.
    expect(parseConfig({ topology: { targets: ['http://a:1'] } }).topology.adminTargets).toEqual([]);
  });

  it('targetTemplate must contain {ordinal} when targets is empty', () => {
    expect(invalid({ topology: { targetTemplate: 'http://shard:8080' } })).toMatch(
      /^\s*topology\.targetTemplate: /m,
    );
    expect(
      parseConfig({ topology: { targetTemplate: 'http://shard:8080', targets: ['http://a:1'] } }).topology
        .targets,
    ).toEqual(['http://a:1']);
  });
});

describe('environment overrides (SHARDCHAT__a__b)', () => {
  it('override file values and parse numbers, booleans, strings and YAML lists', () => {
    const f = file('router:\n  port: 8000\nshardSpec:\n  assignment: modulo\n');
    const cfg = loadConfig(f, {
      SHARDCHAT__router__port: '8181',
      SHARDCHAT__auth__devTokens: 'true',
      SHARDCHAT__shardSpec__assignment: 'jump',
      SHARDCHAT__topology__targets: '[http://a:8080, http://b:8080]',
      SHARDCHAT__shard__dataDir: '/var/lib/shardchat',
    });
    expect(cfg.router.port).toBe(8181);
    expect(cfg.auth.devTokens).toBe(true);
    expect(cfg.shardSpec.assignment).toBe('jump');
    expect(cfg.topology.targets).toEqual(['http://a:8080', 'http://b:8080']);
    expect(cfg.shard.dataDir).toBe('/var/lib/shardchat');
    expect(shardCount(cfg)).toBe(2);
  });

  it('reach nested sections, creating them when the file lacks them', () => {
    const cfg = loadConfig(undefined, {
      SHARDCHAT__router__limits__maxPathBytes: '4096',
      SHARDCHAT__router__timeouts__connectMs: '250',
    });
    expect(cfg.router.limits.maxPathBytes).toBe(4096);
    expect(cfg.router.timeouts.connectMs).toBe(250);
    // Other defaults in the same sections survive.
    expect(cfg.router.port).toBe(8080);
    expect(cfg.router.limits.maxHeaderBytes).toBe(parseConfig({}).router.limits.maxHeaderBytes);
  });

  it('keep strings that YAML would not parse, and the pattern default round-trips', () => {
    const cfg = loadConfig(undefined, {
      SHARDCHAT__shardSpec__urlPattern: '^/(?:groups|users)/([^/]+)',
      SHARDCHAT__topology__targetTemplate: 'http://shard-{ordinal}.svc:8080',
      SHARDCHAT__router__host: '0.0.0.0',
    });
    expect(cfg.shardSpec.urlPattern).toBe('^/(?:groups|users)/([^/]+)');
    expect(cfg.topology.targetTemplate).toBe('http://shard-{ordinal}.svc:8080');
    expect(cfg.router.host).toBe('0.0.0.0');
    expect(applyEnvOverrides({}, { SHARDCHAT__shardSpec__urlPattern: '[^/]+' })).toEqual({
      shardSpec: { urlPattern: '[^/]+' },
    });
  });

  it('an empty value is the empty string (turns the header rule off)', () => {
    expect(loadConfig(undefined, { SHARDCHAT__shardSpec__header: '' }).shardSpec.header).toBe('');
  });

  it('an onNoMatch shard number arrives as a number', () => {
    expect(loadConfig(undefined, { SHARDCHAT__shardSpec__onNoMatch: '2' }).shardSpec.onNoMatch).toBe(2);
    expect(loadConfig(undefined, { SHARDCHAT__shardSpec__onNoMatch: 'reject' }).shardSpec.onNoMatch).toBe(
      'reject',
    );
  });

  it('ignore variables that are not SHARDCHAT__ paths', () => {
    const cfg = loadConfig(undefined, {
      SHARDCHAT_CONFIG: '/nonexistent.yaml',
      SHARDCHAT_AUTH_SECRET: 'secret',
      SHARDCHAT_INTERNAL_TOKEN: 'token',
      PATH: '/usr/bin',
      shardchat__router__port: '1',
    });
    expect(cfg).toEqual(parseConfig({}));
  });

  it('a bad value from the environment names the field', () => {
    expect(configError(() => loadConfig(undefined, { SHARDCHAT__router__port: 'eighty' })).message).toMatch(
      /environment variable SHARDCHAT__router__port \(router\.port\): expected a number, got "eighty"/,
    );
    expect(configError(() => loadConfig(undefined, { SHARDCHAT__router__nope: '1' })).message).toMatch(
      /environment variable SHARDCHAT__router__nope \(router\.nope\): unknown field/,
    );
  });

  it('applyEnvOverrides does not modify its input', () => {
    const raw = { router: { port: 1 } };
    const out = applyEnvOverrides(raw, { SHARDCHAT__router__port: '2', SHARDCHAT__auth__devTokens: 'false' });
    expect(raw).toEqual({ router: { port: 1 } });
    expect(out).toEqual({ router: { port: 2 }, auth: { devTokens: false } });
  });

  it('applies deeper paths after their parent section (sorted), so a section value can be refined', () => {
    const out = applyEnvOverrides(
      {},
      {
        SHARDCHAT__router__limits__maxPathBytes: '100',
        SHARDCHAT__router__limits: '{ maxHeaderBytes: 2048 }',
      },
    );
    expect(out).toEqual({ router: { limits: { maxHeaderBytes: 2048, maxPathBytes: 100 } } });
  });

  it('refuses __proto__, constructor, prototype and empty segments without polluting prototypes', () => {
    for (const name of [
      'SHARDCHAT____proto____polluted',
      'SHARDCHAT__router____proto____polluted',
      'SHARDCHAT__constructor__prototype__polluted',
      'SHARDCHAT__router__prototype',
      'SHARDCHAT__router____port',
      'SHARDCHAT__router__',
      'SHARDCHAT__',
    ]) {
      const err = configError(() => applyEnvOverrides({}, { [name]: 'yes' }));
      expect(err.message).toContain(name);
      expect(err.message).toMatch(/not a configuration path/);
      expect(() => loadConfig(undefined, { [name]: 'yes' })).toThrow(ConfigError);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((Object.prototype as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('refuses descending into a value that is not a section', () => {
    const err = configError(() =>
      applyEnvOverrides({ router: { port: 8080 } }, { SHARDCHAT__router__port__x: '1' }),
    );
    expect(err.message).toMatch(/SHARDCHAT__router__port__x/);
    expect(err.message).toMatch(/port is not a section/);
    expect(() =>
      applyEnvOverrides({ topology: { targets: [] } }, { SHARDCHAT__topology__targets__0: 'http://a:1' }),
    ).toThrow(ConfigError);
  });

  // Regression: `::` (the IPv6 "any" address) is a YAML mapping; it must reach the config as a string.
  it('SHARDCHAT__router__host=:: binds the IPv6 any address', () => {
    expect(loadConfig(undefined, { SHARDCHAT__router__host: '::' }).router.host).toBe('::');
  });

  it('IPv6 hosts that YAML reads as strings pass through', () => {
    expect(loadConfig(undefined, { SHARDCHAT__router__host: '::1' }).router.host).toBe('::1');
  });
});

describe('configuration files', () => {
  it('a file that is not YAML gives a ConfigError naming the file', () => {
    const f = file('router:\n  port: [8080\n');
    const err = configError(() => loadConfig(f, {}));
    expect(err.message).toContain(f);
    expect(err.message).toMatch(/not valid YAML/);
    const tabs = file('router:\n\tport: 8080\n');
    expect(configError(() => loadConfig(tabs, {})).message).toMatch(/not valid YAML/);
  });

  it('a file that is not a mapping gives a ConfigError', () => {
    for (const text of ['- router\n- shard\n', 'just a string\n', '42\n', 'true\n']) {
      const f = file(text);
      const err = configError(() => loadConfig(f, {}));
      expect(err.message, text).toMatch(/must hold a mapping at the top level|is invalid/);
      expect(err.message).toContain(f);
    }
    expect(configError(() => loadConfig(file('- a\n'), {})).message).toMatch(/mapping/);
  });

  it('a missing file gives a ConfigError', () => {
    const missing = path.join(dir, 'does-not-exist.yaml');
    const err = configError(() => loadConfig(missing, {}));
    expect(err.message).toMatch(/cannot read configuration file/);
    expect(err.message).toContain(missing);
  });

  it('a good file is read and validated', () => {
    const f = file(
      [
        'shardSpec:',
        '  assignment: jump',
        '  onNoMatch: reject',
        'topology:',
        '  targets:',
        '    - http://127.0.0.1:8081',
        '    - http://127.0.0.1:8082',
        '  adminTargets: [http://127.0.0.1:9091, http://127.0.0.1:9092]',
        'router: { host: 127.0.0.1, port: 18080, adminPort: 19090 }',
        'log: { level: warn }',
        '',
      ].join('\n'),
    );
    const cfg: Config = loadConfig(f, {});
    expect(cfg.shardSpec).toMatchObject({ assignment: 'jump', onNoMatch: 'reject' });
    expect(cfg.topology.targets).toEqual(['http://127.0.0.1:8081', 'http://127.0.0.1:8082']);
    expect(cfg.topology.adminTargets).toEqual(['http://127.0.0.1:9091', 'http://127.0.0.1:9092']);
    expect(cfg.router).toMatchObject({ host: '127.0.0.1', port: 18080, adminPort: 19090 });
    expect(cfg.log.level).toBe('warn');
    expect(shardCount(cfg)).toBe(2);
  });

  it('router.webDir is optional: absent by default, a non-empty string when given', () => {
    expect(parseConfig({}).router.webDir).toBeUndefined();
    expect(loadConfig(file('router: { webDir: ./web }\n'), {}).router.webDir).toBe('./web');
    expect(loadConfig(undefined, { SHARDCHAT__router__webDir: '/srv/web' }).router.webDir).toBe('/srv/web');
    expect(invalid({ router: { webDir: '' } })).toContain('router.webDir');
    expect(invalid({ router: { webDir: 3 } })).toContain('router.webDir');
  });

  it('the schema is usable directly and agrees with parseConfig', () => {
    expect(configSchema.parse({})).toEqual(parseConfig({}));
    expect(configSchema.safeParse({ router: { port: 'x' } }).success).toBe(false);
  });
});
