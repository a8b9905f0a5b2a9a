/**
 * Debian's Prometheus (`apt-get install prometheus`: /usr/bin/prometheus and
 * /usr/bin/promtool, never a downloaded build) for tests: a scrape configuration like
 * the chart's, a managed Prometheus process on a free loopback port, instant queries
 * through the HTTP API, and `promtool check metrics`. Suites skip where the binaries are
 * missing, and fail instead when SHARDCHAT_REQUIRE_PROMETHEUS=1, as .ci/run sets it.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import yaml from 'js-yaml';
import {
  childEnv,
  defaultRegistry,
  freePort,
  ManagedProcess,
  type ProcessRegistry,
  waitFor,
} from './processes.js';

export const PROMETHEUS = process.env.SHARDCHAT_PROMETHEUS ?? '/usr/bin/prometheus';
export const PROMTOOL = process.env.SHARDCHAT_PROMTOOL ?? '/usr/bin/promtool';
const missing = [PROMETHEUS, PROMTOOL].filter((p) => !existsSync(p));
export const HAVE_PROMETHEUS = missing.length === 0;
if (!HAVE_PROMETHEUS && process.env.SHARDCHAT_REQUIRE_PROMETHEUS === '1') {
  throw new Error(
    `SHARDCHAT_REQUIRE_PROMETHEUS=1 but ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} missing (apt-get install prometheus)`,
  );
}
if (!HAVE_PROMETHEUS) {
  process.stderr.write(
    `Prometheus tests skipped: ${missing.join(' and ')} missing (apt-get install prometheus)\n`,
  );
}

export interface ScrapeTarget {
  /** host:port of the admin listener that serves /metrics. */
  address: string;
  /** The `pod` label, as Kubernetes service discovery would set it (e.g. shardchat-shard-0). */
  pod: string;
}

export interface ScrapeJob {
  job: string;
  targets: ScrapeTarget[];
}

/**
 * A prometheus.yml scraping like the chart's: one job per component, /metrics on the
 * admin port, a `pod` label per target. Scrapes every `intervalSeconds` (the timeout
 * may not exceed the interval).
 */
export function prometheusConfig(jobs: ScrapeJob[], intervalSeconds = 1): string {
  return yaml.dump(
    {
      global: {
        scrape_interval: `${intervalSeconds}s`,
        scrape_timeout: `${intervalSeconds}s`,
        evaluation_interval: `${intervalSeconds}s`,
      },
      scrape_configs: jobs.map((j) => ({
        job_name: j.job,
        metrics_path: '/metrics',
        scheme: 'http',
        static_configs: j.targets.map((t) => ({ targets: [t.address], labels: { pod: t.pod } })),
      })),
    },
    { noRefs: true, lineWidth: -1 },
  );
}

export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

export interface Prometheus {
  url: string;
  port: number;
  proc: ManagedProcess;
  configPath: string;
  /** An instant query (now); throws on an API error or a non-vector result. */
  query(promql: string): Promise<PromSample[]>;
  /** Polls `query` until `check` holds on the result (at most `timeoutMs`), and returns that result. */
  until(
    promql: string,
    check: (samples: PromSample[]) => boolean,
    opts?: { timeoutMs?: number; what?: string },
  ): Promise<PromSample[]>;
}

/**
 * Writes the configuration to `dir` and starts Prometheus with its TSDB in `dir`, on a
 * free port of 127.0.0.1, as a managed process of `registry` (stopped with the file's
 * other processes). Resolves once /-/ready answers 200.
 */
export async function startPrometheus(
  dir: string,
  jobs: ScrapeJob[],
  opts: { registry?: ProcessRegistry; intervalSeconds?: number; timeoutMs?: number } = {},
): Promise<Prometheus> {
  const registry = opts.registry ?? defaultRegistry;
  const configPath = path.join(dir, 'prometheus.yml');
  await writeFile(configPath, prometheusConfig(jobs, opts.intervalSeconds ?? 1), 'utf8');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    PROMETHEUS,
    [
      `--config.file=${configPath}`,
      `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { cwd: dir, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const proc = new ManagedProcess(`prometheus:${port}`, child, 'file');
  registry.track(proc);
  try {
    await waitFor(
      async () => {
        if (!proc.running) throw new Error(`prometheus exited (code ${proc.exit?.code})`);
        const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) });
        return res.status === 200;
      },
      { timeoutMs: opts.timeoutMs ?? 30_000, intervalMs: 100, what: `Prometheus ready on ${url}` },
    );
  } catch (err) {
    await proc.kill().catch(() => undefined);
    throw new Error(`${(err as Error).message}\n${proc.tail()}`, { cause: err });
  }

  async function query(promql: string): Promise<PromSample[]> {
    const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: promql })}`, {
      signal: AbortSignal.timeout(5000),
    });
    const body = (await res.json()) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
    };
    if (body.status !== 'success' || !body.data) {
      throw new Error(`query ${promql}: ${res.status} ${body.error ?? JSON.stringify(body)}`);
    }
    if (body.data.resultType !== 'vector') {
      throw new Error(`query ${promql}: expected a vector, got ${body.data.resultType}`);
    }
    return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }

  return {
    url,
    port,
    proc,
    configPath,
    query,
    async until(promql, check, o = {}) {
      let last: PromSample[] = [];
      try {
        return await waitFor(
          async () => {
            last = await query(promql);
            return check(last) ? last : undefined;
          },
          { timeoutMs: o.timeoutMs ?? 20_000, intervalMs: 250, what: o.what ?? promql },
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}; last result of ${promql}: ${JSON.stringify(last)}`, {
          cause: err,
        });
      }
    },
  };
}

/** Samples keyed by the value of one label (e.g. shard → value). */
export function byLabel(samples: PromSample[], label: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) out[s.metric[label] ?? ''] = s.value;
  return out;
}

export interface PromtoolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `promtool check metrics` with `exposition` on standard input. */
export function promtoolCheckMetrics(exposition: string, timeoutMs = 20_000): Promise<PromtoolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, ['check', 'metrics'], { env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString('utf8');
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString('utf8');
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`promtool check metrics did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(exposition);
  });
}
