/**
 * `shardchat reshard --to T [--assignment modulo|jump] --config FILE`, `--status`,
 * `--abort` (docs/architecture.md section 7, README "Growing and shrinking a cluster"):
 * the shards' admin addresses come from FILE (the router's configuration; in local
 * mode `<data>/local.yaml`), the internal token from $SHARDCHAT_INTERNAL_TOKEN or the
 * `secrets.json` beside FILE. Progress on stderr, the result as JSON on stdout.
 */
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import type { Assignment } from '../../common/assignment.js';
import type { Config } from '../../common/config.js';
import { expandTemplate } from '../../common/topology.js';
import { UsageError } from '../args.js';
import { Coordinator, type Phase } from './coordinator.js';
import { ProgressBar } from './progress.js';
import { ShardCalls } from './shard-calls.js';

export interface ReshardArgs {
  to?: number;
  assignment?: Assignment;
  status: boolean;
  abort: boolean;
  /** Only when it grows (or shrinks) the cluster; otherwise nothing changes. */
  only?: 'grow' | 'shrink';
  configFile: string | undefined;
}

/** A shard's admin address from the configuration, for any ordinal a migration may need. */
export function adminAddresses(cfg: Config): (ordinal: number) => string | undefined {
  const t = cfg.topology;
  if (t.targets.length > 0) return (o) => t.adminTargets[o];
  if (t.adminTemplate) {
    const template = t.adminTemplate;
    return (o) => new URL(expandTemplate(template, o, t.namespace)).origin;
  }
  return () => undefined;
}

/** The internal token: $SHARDCHAT_INTERNAL_TOKEN, else `secrets.json` beside the configuration (local mode). */
export function internalToken(configFile: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (env.SHARDCHAT_INTERNAL_TOKEN) return env.SHARDCHAT_INTERNAL_TOKEN;
  if (configFile) {
    const file = path.join(path.dirname(configFile), 'secrets.json');
    if (existsSync(file)) {
      const s = JSON.parse(readFileSync(file, 'utf8')) as { internalToken?: string };
      if (s.internalToken) return s.internalToken;
    }
  }
  throw new UsageError(
    'the shards need the internal token: set SHARDCHAT_INTERNAL_TOKEN (in local mode it is read from secrets.json beside --config)',
  );
}

/** How long `--status` waits for a shard that does not answer. */
const STATUS_WAIT_MS = 3000;

const PHASES: Phase[] = ['start', 'copy', 'catch-up', 'fence', 'tail', 'switch', 'cleanup', 'done'];

function testHooks(env: NodeJS.ProcessEnv): {
  stopAt?: Phase;
  slowMs?: number;
  holdAt?: Phase;
  released?(): Promise<void>;
} {
  const stop = env.SHARDCHAT_TEST_RESHARD_STOP_AT as Phase | undefined;
  const slow = Number(env.SHARDCHAT_TEST_RESHARD_SLOW_MS ?? 0);
  // Held at a phase until the file SHARDCHAT_TEST_RESHARD_RELEASE_FILE exists.
  const hold = env.SHARDCHAT_TEST_RESHARD_HOLD_AT as Phase | undefined;
  const releaseFile = env.SHARDCHAT_TEST_RESHARD_RELEASE_FILE;
  return {
    ...(stop && PHASES.includes(stop) ? { stopAt: stop } : {}),
    ...(slow > 0 ? { slowMs: slow } : {}),
    ...(hold && PHASES.includes(hold) && releaseFile
      ? {
          holdAt: hold,
          released: async () => {
            while (!existsSync(releaseFile)) await new Promise((r) => setTimeout(r, 50));
          },
        }
      : {}),
  };
}

/** A holder `host:pid` of this machine whose process has ended. */
export function goneHere(holder: string): boolean {
  const m = /^(.*):(\d+)$/.exec(holder);
  if (!m || m[1] !== hostname()) return false;
  try {
    process.kill(Number(m[2]), 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

export async function runReshard(cfg: Config, a: ReshardArgs): Promise<number> {
  const modes = [a.to !== undefined, a.status, a.abort].filter(Boolean).length;
  if (modes !== 1) throw new UsageError('give one of --to T, --status or --abort');
  const err = process.stderr;
  const bar = new ProgressBar(err);
  const calls = new ShardCalls({
    adminOf: adminAddresses(cfg),
    token: internalToken(a.configFile),
    waiting: (shard, why) => bar.note(`waiting for shard ${shard} (${why})`),
  });
  const coordinator = new Coordinator({
    calls,
    holder: `${hostname()}:${process.pid}`,
    progress: (p) => bar.update(p),
    log: (m) => bar.note(m),
    gone: (holder) => goneHere(holder),
    ...testHooks(process.env),
  });
  let out: unknown;
  // --status reports what answers now: a shard that is down is listed with its error.
  if (a.status) out = await coordinator.status({ waitMs: STATUS_WAIT_MS });
  else if (a.abort) out = await coordinator.abort();
  else {
    const to = { shards: a.to as number, assignment: a.assignment ?? cfg.shardSpec.assignment };
    out = await coordinator.run(to, a.only);
  }
  bar.done();
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  return 0;
}
