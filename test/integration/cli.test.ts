/**
 * The built `shardchat` command's rough edges (issue 15, item 4), as a user meets them:
 * `node dist/cli/main.js ...` with its exit code, stdout and stderr (`npm run build` first).
 */
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { startCluster } from '../helpers/cluster.js';
import {
  childEnv,
  REPO_ROOT,
  runCli,
  runNode,
  useProcessCleanup,
  writeYamlConfig,
} from '../helpers/processes.js';

const registry = useProcessCleanup();

const VERSION = (
  JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }
).version;

/** Secrets a shard accepts. */
const SECRETS = { SHARDCHAT_AUTH_SECRET: 'a'.repeat(32), SHARDCHAT_INTERNAL_TOKEN: 'internal-token' };

let dir: string;

beforeAll(async () => {
  dir = await registry.tempDir('file', 'shardchat-cli-test-');
});

describe('version and usage', () => {
  it('--version, -v and version print the version in package.json and exit 0', async () => {
    for (const arg of ['--version', '-v', 'version']) {
      const run = await runCli([arg]);
      expect(run.code, `${arg}: ${run.stderr}`).toBe(0);
      expect(run.stdout, arg).toBe(`${VERSION}\n`);
      expect(run.stderr, arg).toBe('');
    }
  });

  it('reads package.json relative to the built file, in the image layout (/app/package.json, /app/dist)', async () => {
    // The Dockerfile's runtime stage: package.json, dist/ and node_modules side by side.
    const app = path.join(dir, 'app');
    mkdirSync(app);
    cpSync(path.join(REPO_ROOT, 'dist'), path.join(app, 'dist'), { recursive: true });
    symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(app, 'node_modules'), 'dir');
    writeFileSync(
      path.join(app, 'package.json'),
      JSON.stringify({ name: 'shardchat', version: '9.8.7-image' }),
    );
    // From another working directory: the file's place counts, not the cwd.
    const run = await runNode([path.join(app, 'dist', 'cli', 'main.js'), '--version'], { cwd: '/' });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('9.8.7-image\n');
  });

  it('no command: the usage on stderr, exit 2', async () => {
    const run = await runCli([]);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^usage: shardchat <command>/);
    expect(run.stderr).toContain('reshard-plan --from S --to T');
    expect(run.stderr).toContain('--version');
  });

  it('help, --help and -h: the usage on stdout, exit 0', async () => {
    for (const arg of ['help', '--help', '-h']) {
      const run = await runCli([arg]);
      expect(run.code, arg).toBe(0);
      expect(run.stdout, arg).toMatch(/^usage: shardchat <command>/);
      expect(run.stderr, arg).toBe('');
    }
  });

  it('an unknown command: named, the usage on stderr, exit 2', async () => {
    const run = await runCli(['rooter']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^shardchat: unknown command "rooter"/);
    expect(run.stderr).toContain('usage: shardchat <command>');
  });
});

describe('missing and bad options', () => {
  it('reshard-plan --from 3: --to is required (a positive whole number), exit 2', async () => {
    const run = await runCli(['reshard-plan', '--from', '3']);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe('shardchat: --to is required (a positive whole number)\n');
  });

  it('reshard-plan --to 4: --from is required; a bad value is quoted', async () => {
    const noFrom = await runCli(['reshard-plan', '--to', '4']);
    expect(noFrom.code).toBe(2);
    expect(noFrom.stderr).toBe('shardchat: --from is required (a positive whole number)\n');
    const bad = await runCli(['reshard-plan', '--from', '3', '--to', 'four']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('shardchat: --to wants a positive whole number, got "four"\n');
    expect(noFrom.stderr + bad.stderr).not.toContain('undefined');
  });

  it('an option without its value, or a stray argument: a usage error (exit 2) without a stack trace', async () => {
    const noValue = await runCli(['router', '--config']);
    expect(noValue.code).toBe(2);
    expect(noValue.stderr).toMatch(/^shardchat: .*--config/);
    const stray = await runCli(['router', 'extra']);
    expect(stray.code).toBe(2);
    expect(stray.stderr).toMatch(/^shardchat: .*'extra'/);
    for (const run of [noValue, stray]) expect(run.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('configuration errors', () => {
  it('a misspelt field: did you mean', async () => {
    const file = await writeYamlConfig(dir, { shardSpec: { urlPatern: '^/rooms/([^/]+)' } }, 'typo.yaml');
    const run = await runCli(['router', '--config', file, '--check-config']);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      `shardchat: ${file} is invalid:\n  shardSpec.urlPatern: unknown field; did you mean urlPattern?\n`,
    );
  });

  it('a bad SHARDCHAT__ variable is named, not reported as a bad file', async () => {
    const file = await writeYamlConfig(dir, { router: { port: 8080 } }, 'good.yaml');
    const run = await runCli(['router', '--config', file, '--check-config'], {
      env: childEnv({ SHARDCHAT__router__port: 'abc' }),
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      'shardchat: configuration is invalid:\n' +
        '  environment variable SHARDCHAT__router__port (router.port): expected a number, got "abc"\n',
    );
  });

  it('file and variable both wrong: each line names its source', async () => {
    const file = await writeYamlConfig(dir, { router: { prot: 8080 } }, 'both.yaml');
    const run = await runCli(['router', '--config', file, '--check-config'], {
      env: childEnv({ SHARDCHAT__router__adminPort: 'abc' }),
    });
    expect(run.code).toBe(1);
    const lines = run.stderr.trimEnd().split('\n');
    expect(lines[0]).toBe('shardchat: configuration is invalid:');
    expect(lines).toContain(`  ${file}: router.prot: unknown field; did you mean port?`);
    expect(lines).toContain(
      '  environment variable SHARDCHAT__router__adminPort (router.adminPort): expected a number, got "abc"',
    );
  });
});

describe('a urlPattern without a capture group', () => {
  let file: string;
  beforeAll(async () => {
    file = await writeYamlConfig(dir, { shardSpec: { urlPattern: '^/groups/[^/]+' } }, 'no-group.yaml');
  });

  it('--check-config warns on stderr and still exits 0', async () => {
    for (const component of ['router', 'shard']) {
      const run = await runCli([component, '--config', file, '--check-config'], { env: childEnv(SECRETS) });
      expect(run.code, `${component}: ${run.stderr}`).toBe(0);
      expect(run.stdout).toBe(`${file}: ok\n`);
      expect(run.stderr).toMatch(
        /^shardchat: warning: shardSpec\.urlPattern "\^\/groups\/\[\^\/\]\+" has no capture group/,
      );
      expect(run.stderr).toContain('every path is hashed whole');
      expect(run.stderr).toContain('e.g. "^/groups/([^/]+)"');
      expect(run.stderr.trimEnd().split('\n')).toHaveLength(1);
    }
  });

  it('explain shows the same warning in a warnings array', async () => {
    const run = await runCli(['explain', '/groups/lobby/messages', '--config', file]);
    expect(run.code, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as { rule: string; key: string; warnings: string[] };
    expect(out).toMatchObject({ rule: 'path', key: '/groups/lobby/messages' });
    const check = await runCli(['router', '--config', file, '--check-config']);
    expect(out.warnings).toEqual([check.stderr.trimEnd().replace(/^shardchat: warning: /, '')]);
  });

  it('a pattern with a group: no warning, no warnings field', async () => {
    const good = await writeYamlConfig(dir, { shardSpec: { urlPattern: '^/groups/([^/]+)' } }, 'group.yaml');
    const check = await runCli(['router', '--config', good, '--check-config']);
    expect(check.code).toBe(0);
    expect(check.stderr).toBe('');
    const run = await runCli(['explain', '/groups/lobby', '--config', good]);
    expect(JSON.parse(run.stdout)).not.toHaveProperty('warnings');
  });
});

describe("shard --check-config checks the shard's secrets", () => {
  let file: string;
  beforeAll(async () => {
    file = await writeYamlConfig(
      dir,
      {
        topology: { targets: ['http://127.0.0.1:1'] },
        shard: { host: '127.0.0.1', port: 0, adminPort: 0, ordinal: 0, dataDir: path.join(dir, 'data') },
        log: { level: 'fatal' },
      },
      'shard.yaml',
    );
  });

  const cases: { name: string; env: NodeJS.ProcessEnv; reason: string }[] = [
    {
      name: 'no SHARDCHAT_AUTH_SECRET',
      env: { SHARDCHAT_INTERNAL_TOKEN: SECRETS.SHARDCHAT_INTERNAL_TOKEN },
      reason: 'SHARDCHAT_AUTH_SECRET is not set',
    },
    {
      name: 'no SHARDCHAT_INTERNAL_TOKEN',
      env: { SHARDCHAT_AUTH_SECRET: SECRETS.SHARDCHAT_AUTH_SECRET },
      reason: 'SHARDCHAT_INTERNAL_TOKEN is not set',
    },
    {
      name: 'an auth secret of 31 bytes',
      env: { ...SECRETS, SHARDCHAT_AUTH_SECRET: 'a'.repeat(31) },
      reason: 'SHARDCHAT_AUTH_SECRET must be at least 32 bytes',
    },
  ];

  it.each(cases)('$name: --check-config fails, as the shard does at start', async ({ env, reason }) => {
    const check = await runCli(['shard', '--config', file, '--check-config'], { env: childEnv(env) });
    expect(check.code).toBe(1);
    expect(check.stdout).toBe('');
    expect(check.stderr).toMatch(/^shardchat: shard would not start:\n {2}/);
    expect(check.stderr).toContain(reason);
    // The same environment stops the shard itself, for the same reason.
    const start = await runCli(['shard', '--config', file], { env: childEnv(env) });
    expect(start.code).not.toBe(0);
    expect(start.stderr).toContain(reason);
  });

  it('both secrets missing: both named', async () => {
    const check = await runCli(['shard', '--config', file, '--check-config']);
    expect(check.code).toBe(1);
    expect(check.stderr).toContain('SHARDCHAT_AUTH_SECRET is not set');
    expect(check.stderr).toContain('SHARDCHAT_INTERNAL_TOKEN is not set');
  });

  it('with both secrets the shard passes; the router never needs them', async () => {
    const shard = await runCli(['shard', '--config', file, '--check-config'], { env: childEnv(SECRETS) });
    expect(shard.code, shard.stderr).toBe(0);
    expect(shard.stdout).toBe(`${file}: ok\n`);
    const router = await runCli(['router', '--config', file, '--check-config']);
    expect(router.code, router.stderr).toBe(0);
  });
});

describe.skipIf(process.platform !== 'linux')('process titles (/proc/<pid>/cmdline)', () => {
  const cmdline = (pid: number | undefined) =>
    readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').replaceAll('\0', ' ');

  it('shardchat router :<port> and shardchat shard-<ordinal> :<port>', async () => {
    const cluster = await startCluster(await registry.tempDir('file', 'shardchat-cli-title-'), { shards: 2 });
    const procs = [cluster.router.proc, ...cluster.shards.map((s) => s.proc)];
    try {
      expect(cmdline(cluster.router.proc.pid)).toBe(`shardchat router :${cluster.router.port}`);
      for (const s of cluster.shards)
        expect(cmdline(s.proc.pid)).toBe(`shardchat shard-${s.ordinal} :${s.port}`);
    } finally {
      await Promise.all(procs.map((p) => p.stop()));
    }
  });
});
