#!/usr/bin/env node
/** The `shardchat` command line (docs/architecture.md section 3). */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../common/config.js';
import { createLogger } from '../common/logger.js';
import { startRouter } from '../router/router.js';
import { startShard } from '../shard/server.js';
import { requiredPositiveWholeNumber, UsageError } from './args.js';
import { configWarnings } from './config-warnings.js';
import { explain } from './explain.js';
import { runLocal } from './local/launch.js';
import { processTitle } from './process-title.js';
import { runReshard } from './reshard/command.js';
import { keysFromFile, reshardPlan, sampleKeys } from './reshard-plan.js';
import { shardSecretProblems } from './shard-secrets.js';
import { packageVersion } from './version.js';

const USAGE = `usage: shardchat <command> [options]

commands:
  router [--config FILE] [--check-config]     run the router
  shard [--config FILE] [--check-config]      run one chat shard (ordinal: shard.ordinal, SHARD_ORDINAL
                                              or the -N suffix of the hostname)
  local [--shards N] [--data DIR] [--port P]  router and N shards on loopback with the web UI
        [--no-demo]                           (npm start); seeds a demo conversation on first start;
                                              N (default 3) only for a new data folder: later starts
                                              keep the count in DIR/local.yaml (shardchat reshard)
  explain <path> [--header name=value]...     show {key, hash, shard, shards, target} for a request
          [--config FILE]
  reshard --to T [--assignment modulo|jump]   move the cluster FILE describes to T shards, live
          [--only grow|shrink] --config FILE  (local mode: data/local.yaml); resumable after a crash
  reshard --status | --abort --config FILE    the map and migration as JSON; roll back before the switch
  reshard-plan --from S --to T                how many keys move when S changes, under modulo and jump
          [--keys FILE | --sample N]
  version, --version, -v                      print the version
  help, --help, -h                            print this help

The configuration file may also be given as SHARDCHAT_CONFIG; any field can be
overridden with SHARDCHAT__<section>__<field>=value.`;

function fail(message: string, code = 2): never {
  process.stderr.write(`shardchat: ${message}\n`);
  process.exit(code);
}

function configFile(flag: string | undefined): string | undefined {
  return flag ?? (process.env.SHARDCHAT_CONFIG || undefined);
}

function load(file: string | undefined) {
  try {
    return loadConfig(configFile(file));
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, 1);
    throw err;
  }
}

/** Runs a long-lived process (router or shard) until SIGTERM or SIGINT, then stops it cleanly. */
async function runServer(
  component: 'router' | 'shard',
  args: string[],
  start: (
    cfg: ReturnType<typeof load>,
    log: ReturnType<typeof createLogger>,
  ) => Promise<{ port: number; stop(): Promise<void> }>,
  /** Why the process would not start, beyond its configuration (checked by --check-config). */
  preflight: () => string[] = () => [],
): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { config: { type: 'string', short: 'c' }, 'check-config': { type: 'boolean' } },
  });
  const cfg = load(values.config);
  const warnings = configWarnings(cfg);
  if (values['check-config']) {
    for (const w of warnings) process.stderr.write(`shardchat: warning: ${w}\n`);
    const problems = preflight();
    if (problems.length > 0) fail(`${component} would not start:\n  ${problems.join('\n  ')}`, 1);
    process.stdout.write(`${configFile(values.config) ?? 'default configuration'}: ok\n`);
    return;
  }
  process.title = processTitle(component, cfg, cfg[component].port);
  const log = createLogger(component, cfg.log.level);
  for (const w of warnings) log.warn(w);
  let running: { port: number; stop(): Promise<void> };
  try {
    running = await start(cfg, log);
    process.title = processTitle(component, cfg, running.port);
  } catch (err) {
    log.fatal({ err: (err as Error).message }, `${component} failed to start`);
    process.stderr.write(`shardchat ${component}: ${(err as Error).message}\n`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down: draining requests and WebSockets');
    running.stop().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (err: Error) => {
        log.error({ err: err.message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function runExplain(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      header: { type: 'string', short: 'H', multiple: true },
    },
  });
  const target = positionals[0];
  if (!target || positionals.length > 1)
    fail('explain takes exactly one path, e.g. shardchat explain /groups/lobby');
  const headers: Record<string, string> = {};
  for (const h of values.header ?? []) {
    const eq = h.indexOf('=');
    if (eq <= 0) fail(`--header wants name=value, got ${JSON.stringify(h)}`);
    headers[h.slice(0, eq)] = h.slice(eq + 1);
  }
  const cfg = load(values.config);
  process.stdout.write(`${JSON.stringify(await explain(cfg, target, headers), null, 2)}\n`);
}

/** A required option that is a positive whole number (optional ones: check for undefined first). */
function positiveInt(name: string, v: string | undefined): number {
  return requiredPositiveWholeNumber(name, v);
}

async function runReshardPlan(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      keys: { type: 'string' },
      sample: { type: 'string' },
    },
  });
  const from = positiveInt('from', values.from);
  const to = positiveInt('to', values.to);
  if (values.keys && values.sample) fail('give --keys or --sample, not both');
  let keys: string[];
  let source: string;
  if (values.keys) {
    try {
      keys = keysFromFile(values.keys);
    } catch (err) {
      fail(`cannot read ${values.keys}: ${(err as Error).message}`);
    }
    source = values.keys;
  } else {
    const n = values.sample ? positiveInt('sample', values.sample) : 100_000;
    keys = sampleKeys(n);
    source = `sample of ${n} keys group-0 .. group-${n - 1}`;
  }
  process.stdout.write(`${JSON.stringify(await reshardPlan(from, to, keys, source), null, 2)}\n`);
}

async function runReshardCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      to: { type: 'string' },
      assignment: { type: 'string' },
      status: { type: 'boolean' },
      abort: { type: 'boolean' },
      only: { type: 'string' },
      config: { type: 'string', short: 'c' },
    },
  });
  const assignment = values.assignment;
  if (assignment !== undefined && assignment !== 'modulo' && assignment !== 'jump')
    fail(`--assignment wants modulo or jump, got ${JSON.stringify(assignment)}`);
  const only = values.only;
  if (only !== undefined && only !== 'grow' && only !== 'shrink')
    fail(`--only wants grow or shrink, got ${JSON.stringify(only)}`);
  const file = configFile(values.config);
  if (!file) fail('--config is required (the router configuration; in local mode data/local.yaml)');
  const cfg = load(file);
  try {
    process.exitCode = await runReshard(cfg, {
      to: values.to === undefined ? undefined : positiveInt('to', values.to),
      assignment,
      status: values.status === true,
      abort: values.abort === true,
      only,
      configFile: file,
    });
  } catch (err) {
    if (err instanceof UsageError) throw err;
    fail((err as Error).message, 1);
  }
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'router':
      return runServer('router', rest, startRouter);
    case 'shard':
      return runServer(
        'shard',
        rest,
        (cfg, log) =>
          startShard(cfg, log, {
            authSecret: process.env.SHARDCHAT_AUTH_SECRET,
            internalToken: process.env.SHARDCHAT_INTERNAL_TOKEN,
          }),
        () => shardSecretProblems(process.env),
      );
    case 'local': {
      const { values } = parseArgs({
        args: rest,
        options: {
          shards: { type: 'string' },
          data: { type: 'string' },
          port: { type: 'string' },
          'no-demo': { type: 'boolean' },
        },
      });
      return runLocal({
        // Without --shards: the count local.yaml records, or 3 for a new data folder.
        shards: values.shards ? positiveInt('shards', values.shards) : undefined,
        dataDir: values.data ?? 'data',
        port: values.port ? positiveInt('port', values.port) : 8080,
        demo: !values['no-demo'],
      });
    }
    case 'explain':
      return runExplain(rest);
    case 'reshard-plan':
      return runReshardPlan(rest);
    case 'reshard':
      return runReshardCommand(rest);
    case undefined:
      // No command is a usage error: the usage on stderr, exit 2.
      process.stderr.write(`${USAGE}\n`);
      return process.exit(2);
    case 'version':
    case '--version':
    case '-v':
      process.stdout.write(`${packageVersion()}\n`);
      return;
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return;
    default:
      fail(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).catch((err: Error) => {
  if (err instanceof ConfigError) fail(err.message, 1);
  if (err instanceof UsageError) fail(err.message);
  // parseArgs: unknown options, missing option values, unexpected arguments.
  if (String((err as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS_')) fail(err.message);
  process.stderr.write(`shardchat: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
