/**
 * The one configuration file (docs/architecture.md section 3): YAML, validated with zod so that a
 * wrong file fails at start with the path of the bad field, and overridable field by
 * field with SHARDCHAT__<path> environment variables.
 */
import { readFileSync } from 'node:fs';
import yaml from 'js-yaml';
import { z } from 'zod';
import { closest } from './did-you-mean.js';
import { checkPatternSafety } from './regex-safety.js';

const port = z.number().int().min(0).max(65535);
const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' });
const positiveMs = z.number().int().positive();
/** shard.fanout.flushMs by default (chosen by measurement: bench/RESULTS.md, "Fewer writes per delivery"). */
const FLUSH_MS_DEFAULT = 5;

/**
 * The default shard function's pattern. The unit tests prove it linear with recheck
 * (test/unit/common/config.test.ts, "urlPattern safety"); a process does not prove it
 * again at start, which cost every router, shard and Job about 0.8 s of CPU (loading
 * recheck and running it), half of a shard's start.
 */
export const DEFAULT_URL_PATTERN = '^/(?:groups|users)/([^/]+)';

const shardSpecSchema = z.strictObject({
  urlPattern: z.string().min(1).default(DEFAULT_URL_PATTERN),
  header: z
    .string()
    .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]*$/, 'must be an HTTP header name (or empty to turn the rule off)')
    .default('x-group-id'),
  onNoMatch: z.union([z.enum(['path', 'reject']), z.number().int().min(0)]).default('path'),
  assignment: z.enum(['modulo', 'jump']).default('modulo'),
});

const topologySchema = z.strictObject({
  mode: z.enum(['static', 'kubernetes']).default('static'),
  targets: z.array(httpUrl).default([]),
  adminTargets: z.array(httpUrl).default([]),
  /** S. Static mode: used with targetTemplate when targets is empty (default 3). Kubernetes mode: required. */
  shards: z.number().int().min(1).max(4096).optional(),
  targetTemplate: z
    .string()
    .default('http://shardchat-shard-{ordinal}.shardchat-shard.{namespace}.svc.cluster.local:8080'),
  adminTemplate: z
    .string()
    .default('http://shardchat-shard-{ordinal}.shardchat-shard.{namespace}.svc.cluster.local:9090'),
  namespace: z
    .string()
    .min(1)
    .default(process.env.POD_NAMESPACE || 'default'),
  probeIntervalMs: positiveMs.default(2000),
  probeTimeoutMs: positiveMs.default(1000),
  probeFailureThreshold: z.number().int().min(1).default(2),
  /** Kubernetes mode (docs/architecture.md section 2): where the shards' pods are and which ports they serve on. */
  kubernetes: z
    .strictObject({
      /** The shards' StatefulSet, in `namespace`; its pods are <statefulSet>-<ordinal>. */
      statefulSet: z
        .string()
        .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a Kubernetes object name')
        .max(253)
        .default('shardchat-shard'),
      /** The shard's public port on the pod IP. */
      port: port.default(8080),
      /** The shard's admin port on the pod IP (internal shard-to-shard calls). */
      adminPort: port.default(9090),
    })
    .prefault({}),
});

const DEFAULT_SHARDS = 3;

/** `{ordinal}` or `{ordinal+N}` in a target template (common/topology.ts expandTemplate). */
const ORDINAL_PLACEHOLDER = /\{ordinal(?:\+\d{1,9})?\}/;

/** What is wrong with the placeholders of a target or admin template, if anything. */
function templatePlaceholderProblem(template: string): string | undefined {
  for (const m of template.matchAll(/\{[^{}]*\}/g)) {
    const p = m[0];
    if (p === '{namespace}' || p === '{ordinal}') continue;
    const plus = /^\{ordinal\+(\d{1,9})\}$/.exec(p);
    if (plus) {
      if (Number(plus[1]) > 65535) return `${p}: N in {ordinal+N} is at most 65535`;
      continue;
    }
    return `unknown placeholder ${p}: use {ordinal}, {ordinal+N} (N a whole number, e.g. {ordinal+8081}) or {namespace}`;
  }
  return undefined;
}

const routerSchema = z.strictObject({
  host: z.string().min(1).default('0.0.0.0'),
  port: port.default(8080),
  adminPort: port.default(9090),
  limits: z
    .strictObject({
      maxPathBytes: z.number().int().min(16).max(65536).default(8192),
      maxHeaderBytes: z.number().int().min(1024).max(1048576).default(16384),
      maxBodyBytes: z.number().int().min(0).default(1048576),
      maxConnections: z.number().int().min(1).default(10000),
      maxSocketsPerShard: z.number().int().min(1).default(256),
      maxQueuedPerShard: z.number().int().min(0).default(4096),
      maxWebSocketsPerShard: z.number().int().min(1).default(50000),
      /**
       * Requests whose body is at most this many bytes are kept until the shard's answer
       * arrives, so that a 421 (the key moved under a newer shard map) can be sent again
       * to the new owner; a 421 to a larger request passes to the client.
       */
      retryBodyBytes: z.number().int().min(0).default(65536),
    })
    .prefault({}),
  timeouts: z
    .strictObject({
      connectMs: positiveMs.default(2000),
      upstreamMs: positiveMs.default(60000),
      idleSocketMs: positiveMs.default(4000),
      clientKeepAliveMs: positiveMs.default(5000),
      requestMs: positiveMs.default(120000),
      shutdownMs: positiveMs.default(10000),
    })
    .prefault({}),
  retryAfterSeconds: z.number().int().min(1).default(2),
  /**
   * A directory of web UI files the router serves itself (local mode): `/` and
   * `/index.html` give its index.html, `/app/<path>` its other files. Loaded into memory
   * at start; absent: no static files, every path goes to the shards.
   */
  webDir: z.string().min(1).optional(),
});

const shardSchema = z.strictObject({
  host: z.string().min(1).default('0.0.0.0'),
  port: port.default(8080),
  adminPort: port.default(9090),
  dataDir: z.string().min(1).default('/data'),
  /** This shard's ordinal; default: $SHARD_ORDINAL, else the -N suffix of the hostname. */
  ordinal: z.number().int().min(0).optional(),
  limits: z
    .strictObject({
      maxBodyBytes: z.number().int().min(256).default(65536),
      maxMessageBytes: z.number().int().min(1).default(8192),
      maxProfileFieldBytes: z.number().int().min(16).default(2048),
      defaultPageSize: z.number().int().min(1).default(50),
      maxPageSize: z.number().int().min(1).default(200),
      maxMembersPageSize: z.number().int().min(1).default(1000),
      maxWaitSeconds: z.number().int().min(0).default(30),
      maxCapacity: z.number().int().min(1).default(100000),
      maxConnections: z.number().int().min(1).default(20000),
      wsMessagesPerSecond: z.number().min(0.1).default(20),
      wsBurst: z.number().int().min(1).default(40),
      wsMaxPayloadBytes: z.number().int().min(128).default(16384),
      wsSendQueueBytes: z.number().int().min(1024).default(1048576),
      /** A closing WebSocket gets this long to flush its queue and close frame before its socket is ended. */
      wsCloseGraceMs: z.number().int().min(0).default(5000),
      /**
       * Messages per user on the shard that owns the group: a token bucket per userId
       * (refilled at userMessagesPerSecond, holding at most userMessageBurst), shared by
       * HTTP posts, group WebSocket messages and posts forwarded from inbox hosts.
       */
      userMessagesPerSecond: z.number().min(0.01).default(50),
      userMessageBurst: z.number().int().min(1).default(200),
      /** Users whose bucket is kept at most (idle users' buckets are dropped first). */
      userRateMaxUsers: z.number().int().min(1).default(100000),
    })
    .prefault({}),
  commit: z
    .strictObject({
      /** Messages committed together in one transaction (one fsync) at most. */
      maxBatch: z.number().int().min(1).default(1000),
      /**
       * How often a thread of its own copies the WAL into the database file, so that
       * commits do not (chosen by measurement: bench/RESULTS.md, "Checkpoints off the
       * commit path"); 0: SQLite checkpoints inside the commits, every 1,000 pages.
       */
      checkpointEveryMs: z.number().int().min(0).max(60_000).default(100),
    })
    .prefault({}),
  /** Live resharding (docs/architecture.md section 7). */
  reshard: z
    .strictObject({
      /**
       * A write of a moving key waits at most this long for the switch while the key is
       * fenced, then is answered 503 resharding with retry-after (nothing written).
       */
      holdMs: positiveMs.default(10000),
    })
    .prefault({}),
  internal: z
    .strictObject({
      attempts: z.number().int().min(1).default(5),
      backoffMs: positiveMs.default(100),
      timeoutMs: positiveMs.default(2000),
    })
    .prefault({}),
  /** Cross-shard delivery (docs/delivery-protocol.md): batched fan-out to the session hosts. */
  fanout: z
    .strictObject({
      /** A destination's batch leaves this long after its first record waited (plus jitter). */
      batchMs: z.number().int().min(0).default(50),
      /** Random extra delay per batch, up to this. */
      jitterMs: z.number().int().min(0).default(20),
      /** Records per batch at most (a full batch leaves at once). */
      maxBatch: z.number().int().min(1).default(500),
      /** Records waiting per destination at most; past it the oldest are dropped (counted). */
      queueSize: z.number().int().min(1).default(10000),
      /**
       * Events for one WebSocket (messages, acks, presence, typing) leave in at most one
       * write per this many milliseconds while events keep coming (an idle shard writes at
       * once); 0 writes at the end of every commit, delivered batch or turn of the event
       * loop. Bounds the added delay.
       */
      flushMs: z.number().int().min(0).max(1000).default(FLUSH_MS_DEFAULT),
      /** Heads (anti-entropy) for recently active groups every this long. */
      headsMs: positiveMs.default(1000),
      retry: z
        .strictObject({
          minMs: positiveMs.default(100),
          maxMs: positiveMs.default(5000),
        })
        .prefault({}),
      /** Tests only: honoured when SHARDCHAT_TEST_FAULTS=1. */
      faults: z
        .strictObject({
          dropRatio: z.number().min(0).max(1).default(0),
          delayMs: z.number().int().min(0).default(0),
        })
        .prefault({}),
    })
    .prefault({}),
  /** Push or pull (docs/delivery-protocol.md section 7) and recent history in memory. */
  delivery: z
    .strictObject({
      /**
       * A group switches to pull mode (only `tick`s, clients read with ?after=) when it has
       * `minMembers` members and its message rate reaches `enterRate`; it switches back
       * when the rate stayed below `exitRate` (or the members below `minMembers`) for `holdMs`.
       */
      pull: z
        .strictObject({
          /** false: every group is pushed, whatever its size and rate. */
          enabled: z.boolean().default(true),
          minMembers: z.number().int().min(1).default(100),
          /** Messages per second (averaged exponentially over `windowMs`) that switch to pull. */
          enterRate: z.number().positive().default(10),
          /** Below this rate (lower than enterRate) for `holdMs`, the group goes back to push. */
          exitRate: z.number().min(0).default(5),
          /** Time constant of the rate average. */
          windowMs: positiveMs.default(10_000),
          holdMs: z.number().int().min(0).default(30_000),
          /** At most one tick per group per this long (ticks in between are coalesced). */
          tickMs: z.number().int().min(10).default(500),
        })
        .prefault({}),
      /** The last messages of each group in memory, for ?after= reads of a recent range. */
      recent: z
        .strictObject({
          /** Messages kept per group (0 turns the ring off: every read goes to SQLite). */
          messagesPerGroup: z.number().int().min(0).default(256),
          /** Bytes kept over all groups at most (default 64 MiB; the least recently written groups go first). */
          maxBytes: z.number().int().min(0).default(67_108_864),
        })
        .prefault({}),
    })
    .prefault({}),
  notifications: z
    .strictObject({
      /** Webhook for members with no live connection; empty turns notifications off. */
      webhookUrl: z.union([z.literal(''), httpUrl]).default(''),
      batchMs: positiveMs.default(1000),
      maxBatch: z.number().int().min(1).default(100),
      queueSize: z.number().int().min(1).default(10000),
      timeoutMs: positiveMs.default(5000),
    })
    .prefault({}),
});

const authSchema = z.strictObject({
  devTokens: z.boolean().default(false),
  issuer: z.string().min(1).optional(),
  audience: z.string().min(1).optional(),
});

const logSchema = z.strictObject({
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** The file's shape: the fields each section allows ("did you mean" reads them from here). */
const configObject = z.strictObject({
  shardSpec: shardSpecSchema.prefault({}),
  topology: topologySchema.prefault({}),
  router: routerSchema.prefault({}),
  shard: shardSchema.prefault({}),
  auth: authSchema.prefault({}),
  log: logSchema.prefault({}),
});

export const configSchema = configObject
  .superRefine((cfg, ctx) => {
    const pattern = cfg.shardSpec.urlPattern;
    const verdict = pattern === DEFAULT_URL_PATTERN ? { ok: true } : checkPatternSafety(pattern);
    if (!verdict.ok) {
      ctx.addIssue({
        code: 'custom',
        path: ['shardSpec', 'urlPattern'],
        message: `refused: ${verdict.reason}`,
      });
    }
    const t = cfg.topology;
    if (t.mode === 'kubernetes') {
      if (t.shards === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['topology', 'shards'],
          message:
            'is required in kubernetes mode: S is a deliberate setting (the StatefulSet replicas are never used for it)',
        });
      }
      if (t.targets.length > 0 || t.adminTargets.length > 0) {
        ctx.addIssue({
          code: 'custom',
          path: ['topology', t.targets.length > 0 ? 'targets' : 'adminTargets'],
          message: 'must be empty in kubernetes mode: the addresses come from the pods of the StatefulSet',
        });
      }
    }
    if (t.adminTargets.length > 0 && t.adminTargets.length !== t.targets.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['topology', 'adminTargets'],
        message: `has ${t.adminTargets.length} entries but targets has ${t.targets.length}; give one per target, in the same order`,
      });
    }
    if (t.mode === 'static' && t.targets.length === 0 && !ORDINAL_PLACEHOLDER.test(t.targetTemplate)) {
      ctx.addIssue({
        code: 'custom',
        path: ['topology', 'targetTemplate'],
        message: 'must contain {ordinal} (or {ordinal+N}) when targets is empty',
      });
    }
    for (const field of ['targetTemplate', 'adminTemplate'] as const) {
      const bad = templatePlaceholderProblem(t[field]);
      if (bad) ctx.addIssue({ code: 'custom', path: ['topology', field], message: bad });
    }
    const pull = cfg.shard.delivery.pull;
    if (pull.exitRate >= pull.enterRate) {
      ctx.addIssue({
        code: 'custom',
        path: ['shard', 'delivery', 'pull', 'exitRate'],
        message: `must be below enterRate (${pull.enterRate}) so that a group does not flap between push and pull`,
      });
    }
    const S = t.targets.length > 0 ? t.targets.length : (t.shards ?? DEFAULT_SHARDS);
    const onNoMatch = cfg.shardSpec.onNoMatch;
    if (typeof onNoMatch === 'number' && onNoMatch >= S) {
      ctx.addIssue({
        code: 'custom',
        path: ['shardSpec', 'onNoMatch'],
        message: `shard ${onNoMatch} does not exist: there are ${S} shards (0..${S - 1})`,
      });
    }
  })
  .transform((cfg) => ({
    ...cfg,
    topology: { ...cfg.topology, shards: cfg.topology.shards ?? DEFAULT_SHARDS },
  }));

export type Config = z.infer<typeof configSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const ENV_PREFIX = 'SHARDCHAT__';

/**
 * Reads a value from the environment: numbers and booleans as YAML reads them, YAML
 * flow lists and mappings (`[a, b]`, `{k: v}`) as such, anything else as the string it is
 * (so that `::` stays an address and does not become a YAML mapping).
 */
function parseEnvValue(value: string): unknown {
  const t = value.trim();
  if (t.startsWith('[') || t.startsWith('{')) {
    try {
      return yaml.load(t);
    } catch {
      return value;
    }
  }
  try {
    const parsed = yaml.load(t);
    if (typeof parsed === 'number' || typeof parsed === 'boolean') return parsed;
  } catch {
    // not a scalar YAML knows: the raw string
  }
  return value;
}

/** One SHARDCHAT__ override: the variable, its value as given and the configuration path it sets. */
interface EnvOverride {
  name: string;
  value: string;
  path: string[];
}

/** Applies SHARDCHAT__ overrides to a copy of `raw`; also says which variable set which path. */
function withEnvOverrides(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): { merged: Record<string, unknown>; overrides: EnvOverride[] } {
  const out = structuredClone(raw);
  const overrides: EnvOverride[] = [];
  const names = Object.keys(env)
    .filter((n) => n.startsWith(ENV_PREFIX))
    .sort();
  for (const name of names) {
    const path = name.slice(ENV_PREFIX.length).split('__');
    if (path.some((p) => p === '' || p === '__proto__' || p === 'constructor' || p === 'prototype')) {
      throw new ConfigError(`environment variable ${name}: not a configuration path`);
    }
    let node: Record<string, unknown> = out;
    for (const seg of path.slice(0, -1)) {
      const next = node[seg];
      if (next === undefined || next === null) {
        const created: Record<string, unknown> = {};
        node[seg] = created;
        node = created;
      } else if (typeof next === 'object' && !Array.isArray(next)) {
        node = next as Record<string, unknown>;
      } else {
        throw new ConfigError(`environment variable ${name}: ${seg} is not a section`);
      }
    }
    const value = env[name] ?? '';
    node[path[path.length - 1] as string] = parseEnvValue(value);
    overrides.push({ name, value, path });
  }
  return { merged: out, overrides };
}

/** Applies SHARDCHAT__a__b=value overrides to a raw configuration object. */
export function applyEnvOverrides(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Record<string, unknown> {
  return withEnvOverrides(raw, env).merged;
}

function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${String(p)}` : String(p);
  return s || '(root)';
}

/**
 * The fields the schema allows in the object at `path` (through defaults, optionals,
 * pipes and array elements); undefined when there is no object there.
 */
export function configFieldsAt(path: ReadonlyArray<PropertyKey>): string[] | undefined {
  let s: z.ZodType = configObject;
  let i = 0;
  for (;;) {
    if (s instanceof z.ZodPipe) s = s.in as z.ZodType;
    else if (
      s instanceof z.ZodDefault ||
      s instanceof z.ZodPrefault ||
      s instanceof z.ZodOptional ||
      s instanceof z.ZodNullable
    )
      s = s.unwrap() as z.ZodType;
    else if (i === path.length) return s instanceof z.ZodObject ? Object.keys(s.shape) : undefined;
    else if (s instanceof z.ZodObject) {
      const next = (s.shape as Record<string, z.ZodType | undefined>)[String(path[i++])];
      if (!next) return undefined;
      s = next;
    } else if (s instanceof z.ZodArray && typeof path[i] === 'number') {
      s = s.element as z.ZodType;
      i++;
    } else return undefined;
  }
}

/** One thing wrong with a configuration, at one path. */
interface Problem {
  path: PropertyKey[];
  message: string;
  /** A value of the wrong type: zod's name of the type wanted. */
  expected?: string;
  /** An unknown field: the allowed field it is closest to, if any is close. */
  suggestion?: string;
}

/** zod's issues as problems: an unknown field each, named by its own path, with a "did you mean". */
function problemsOf(issues: readonly z.core.$ZodIssue[]): Problem[] {
  const out: Problem[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = configFieldsAt(issue.path) ?? [];
      for (const key of issue.keys) {
        const suggestion = closest(key, known);
        out.push({
          path: [...issue.path, key],
          message: suggestion
            ? `unknown field; did you mean ${suggestion}?`
            : `unknown field${known.length ? ` (known: ${known.join(', ')})` : ''}`,
          ...(suggestion ? { suggestion } : {}),
        });
      }
    } else {
      out.push({
        path: [...issue.path],
        message: issue.message,
        ...(issue.code === 'invalid_type' ? { expected: issue.expected } : {}),
      });
    }
  }
  return out;
}

function startsWith(path: ReadonlyArray<PropertyKey>, prefix: ReadonlyArray<PropertyKey>): boolean {
  return prefix.length <= path.length && prefix.every((p, i) => String(p) === String(path[i]));
}

function hasPath(raw: unknown, path: ReadonlyArray<PropertyKey>): boolean {
  let node = raw;
  for (const seg of path) {
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, seg)) return false;
    node = (node as Record<PropertyKey, unknown>)[seg];
  }
  return true;
}

/**
 * The override a problem comes from: the one that set the value at the problem's path or
 * around it (the longest such path), else one that created the section or field the
 * problem is about (SHARDCHAT__routr__port creates `routr`) when the file does not have it.
 */
function overrideOf(p: Problem, overrides: readonly EnvOverride[], file: unknown): EnvOverride | undefined {
  let best: EnvOverride | undefined;
  for (const o of overrides) {
    if (startsWith(p.path, o.path) && (!best || o.path.length > best.path.length)) best = o;
  }
  if (best || hasPath(file, p.path)) return best;
  return overrides.find((o) => startsWith(o.path, p.path));
}

const TYPE_NAMES: Record<string, string> = {
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  string: 'a string',
  array: 'a list such as [a, b]',
  object: 'a mapping such as {key: value}',
};

/** A problem an environment variable caused, said in terms of that variable. */
function envLine(p: Problem, o: EnvOverride): string {
  let message = p.message;
  if (p.expected && p.path.length === o.path.length) {
    message = `expected ${TYPE_NAMES[p.expected] ?? p.expected}, got ${JSON.stringify(o.value)}`;
  } else if (p.suggestion && p.path.length <= o.path.length) {
    // The unknown field is part of the variable's name: suggest the variable.
    const fixed = [...o.path];
    fixed[p.path.length - 1] = p.suggestion;
    message = `unknown field; did you mean ${ENV_PREFIX}${fixed.join('__')}?`;
  }
  return `environment variable ${o.name} (${formatPath(p.path)}): ${message}`;
}

/**
 * Validates a raw object (already merged with the environment) into a Config. `overrides`
 * and `file` (the raw object before them) let each problem name its source.
 */
function validate(
  raw: unknown,
  source: string,
  overrides: readonly EnvOverride[] = [],
  file: unknown = raw,
): Config {
  const result = configSchema.safeParse(raw ?? {});
  if (result.success) return result.data;
  const lines: { env: boolean; text: string }[] = [];
  for (const p of problemsOf(result.error.issues)) {
    const o = overrideOf(p, overrides, file);
    lines.push(
      o ? { env: true, text: envLine(p, o) } : { env: false, text: `${formatPath(p.path)}: ${p.message}` },
    );
  }
  if (!lines.some((l) => l.env)) {
    throw new ConfigError(`${source} is invalid:\n${lines.map((l) => `  ${l.text}`).join('\n')}`);
  }
  // Both may contribute: every line names its source.
  const named = lines.map((l) => `  ${l.env ? '' : `${source}: `}${l.text}`);
  throw new ConfigError(`configuration is invalid:\n${named.join('\n')}`);
}

/** Validates a raw object (already merged with the environment) into a Config. */
export function parseConfig(raw: unknown, source = 'configuration'): Config {
  return validate(raw, source);
}

/** Loads the file (if any), applies SHARDCHAT__ overrides and validates. */
export function loadConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Config {
  let raw: unknown = {};
  const source = file ?? 'the default configuration';
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read configuration file ${file}: ${(err as Error).message}`);
    }
    try {
      raw = yaml.load(text, { filename: file }) ?? {};
    } catch (err) {
      throw new ConfigError(`configuration file ${file} is not valid YAML: ${(err as Error).message}`);
    }
    if (typeof raw !== 'object' || Array.isArray(raw)) {
      throw new ConfigError(`configuration file ${file} must hold a mapping at the top level`);
    }
  }
  const { merged, overrides } = withEnvOverrides(raw as Record<string, unknown>, env);
  return validate(merged, source, overrides, raw);
}

/** The number of shards S, always from configuration (docs/architecture.md section 2). */
export function shardCount(cfg: Config): number {
  if (cfg.topology.mode === 'kubernetes') return cfg.topology.shards;
  return cfg.topology.targets.length > 0 ? cfg.topology.targets.length : cfg.topology.shards;
}

/**
 * Bytes of headroom between the router's limit on a client's request head
 * (router.limits.maxHeaderBytes) and the shard's: the router adds headers to every head
 * it forwards (x-forwarded-for, -proto, -host, x-request-id, x-shardchat-shard, a Host
 * for HTTP/1.0; about 190 bytes for a typical request) and refuses with 431 a head that
 * would reach the shard larger than maxHeaderBytes plus this.
 */
export const FORWARDED_HEAD_HEADROOM = 8192;

/** The largest request head the router forwards and the shard accepts (its http maxHeaderSize). */
export function forwardedHeadLimit(cfg: Config): number {
  return cfg.router.limits.maxHeaderBytes + FORWARDED_HEAD_HEADROOM;
}
