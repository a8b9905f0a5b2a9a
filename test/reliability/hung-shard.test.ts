/**
 * A hung shard: one shard process is SIGSTOPped (it accepts connections in the kernel
 * but never answers). With router.timeouts.upstreamMs = 1500, requests for its keys get
 * 504 upstream_timeout after about 1.5 s, or 503 once the readiness probes mark it
 * unready; the other shards' requests keep succeeding with their normal latency (no
 * head-of-line blocking), and the router's RSS stays bounded under a bounded load
 * (1000 requests at the hung shard, 100 at a time). SIGCONT always follows.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Cluster, type ShardProc, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  idsOn,
  makeGroup,
  percentile,
  postOnce,
  round1,
  rssKiB,
  shardOf,
  summary,
  timedRequest,
  users,
} from '../helpers/reliability.js';

useProcessCleanup();

const S = 3;
const HUNG = 2;
const UPSTREAM_MS = 1500;
const HUNG_REQUESTS = 1000;
const HUNG_CONCURRENCY = 100;
const WORKERS = 6;
/** Allowed growth of the router's RSS over the whole hung phase. */
const RSS_BOUND_KIB = 64 * 1024;

describe('a hung (SIGSTOPped) shard', () => {
  let c: Cluster;
  let stopped: ShardProc | undefined;
  const resume = () => {
    if (stopped?.proc.running) stopped.proc.signal('SIGCONT');
    stopped = undefined;
  };
  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: S,
      config: { router: { timeouts: { upstreamMs: UPSTREAM_MS } } },
    });
  }, 60_000);
  afterEach(resume);
  afterAll(async () => {
    resume();
    await defaultRegistry.cleanup();
  });

  it('times out its keys with 504/503 while the other shards keep their latency; router memory stays bounded', async () => {
    const of = await shardOf(S);
    const healthy = [...idsOn(of, 0, 'hung-ok', 2), ...idsOn(of, 1, 'hung-ok', 2)];
    const hungGroups = idsOn(of, HUNG, 'hung', 2);
    const people = await users(c, 'hung-user', 4);
    const owner = people[0] as (typeof people)[0];
    for (const g of [...healthy, ...hungGroups]) await makeGroup(c, g, owner, people);

    /** Healthy load for `ms`: posts and reads alternately; latencies and failures. */
    const healthyLoad = async (ms: number, tag: string) => {
      const lat: number[] = [];
      const failures: string[] = [];
      const end = performance.now() + ms;
      await Promise.all(
        Array.from({ length: WORKERS }, async (_, w) => {
          for (let n = 0; performance.now() < end; n++) {
            const g = healthy[(w + n) % healthy.length] as string;
            const u = people[w % people.length] as (typeof people)[0];
            const r =
              n % 2 === 0
                ? await postOnce(c.router.url, g, u.token, {
                    contents: `${tag} ${n}`,
                    clientMsgId: `${tag}-${w}-${n}`,
                  })
                : await timedRequest(c.router.url, 'GET', `/groups/${g}/messages?after=0&limit=10`, u.token);
            lat.push(r.ms);
            if (r.status !== 200 && r.status !== 201) failures.push(`${r.status} ${JSON.stringify(r.body)}`);
          }
        }),
      );
      return { lat, failures };
    };

    const baseline = await healthyLoad(2000, 'base');
    expect(baseline.failures).toEqual([]);

    const rssBefore = rssKiB(c.router.proc.pid);
    stopped = c.shards[HUNG] as ShardProc;
    stopped.proc.signal('SIGSTOP');
    const hungAt = performance.now();

    // Requests at the hung shard: 1000, 100 at a time.
    const hungAnswers: { status: number; code?: string; ms: number; at: number; json: boolean }[] = [];
    let next = 0;
    const hungWorker = async () => {
      while (next < HUNG_REQUESTS) {
        const n = next++;
        const g = hungGroups[n % hungGroups.length] as string;
        const r =
          n % 2 === 0
            ? await timedRequest(
                c.router.url,
                'GET',
                `/groups/${g}/messages?after=0`,
                owner.token,
                undefined,
                15_000,
              )
            : await postOnce(
                c.router.url,
                g,
                owner.token,
                { contents: 'hung', clientMsgId: `hung-${n}` },
                15_000,
              );
        hungAnswers.push({
          status: r.status,
          code: r.body?.error?.code,
          ms: r.ms,
          at: performance.now() - hungAt,
          json: typeof r.body?.error?.code === 'string' && typeof r.body?.error?.message === 'string',
        });
      }
    };
    const [during] = await Promise.all([
      healthyLoad(4000, 'during'),
      Promise.all(Array.from({ length: HUNG_CONCURRENCY }, hungWorker)),
    ]);
    const rssAfter = rssKiB(c.router.proc.pid);

    expect(during.failures).toEqual([]);
    const unexpected = hungAnswers.filter(
      (a) =>
        !(
          (a.status === 504 && a.code === 'upstream_timeout') ||
          (a.status === 503 && a.code === 'shard_unavailable')
        ) || !a.json,
    );
    expect(unexpected.slice(0, 5)).toEqual([]);
    const timeouts = hungAnswers.filter((a) => a.status === 504);
    expect(timeouts.length).toBeGreaterThan(0);
    // A 504 comes after upstreamMs, within the router's deadline resolution (a quarter of
    // the shortest timeout, at most 250 ms: router/deadlines.ts), not much later.
    for (const t of timeouts) {
      expect(t.ms).toBeGreaterThanOrEqual(UPSTREAM_MS - 300);
      expect(t.ms).toBeLessThan(UPSTREAM_MS + 2000);
    }
    // No head-of-line blocking: no healthy request waited as long as a hung one (upstreamMs),
    // and the median stays near the baseline (the bounds leave room for the other test
    // file that vitest runs on the second core at the same time).
    const baseP50 = percentile(baseline.lat, 50);
    const baseP99 = percentile(baseline.lat, 99);
    const duringP50 = percentile(during.lat, 50);
    const duringP99 = percentile(during.lat, 99);
    const slow = during.lat.filter((ms) => ms >= UPSTREAM_MS).length;
    expect(slow).toBeLessThanOrEqual(Math.floor(during.lat.length * 0.02));
    expect(duringP50).toBeLessThan(3 * baseP50 + 100);
    expect(rssAfter - rssBefore).toBeLessThan(RSS_BOUND_KIB);

    // SIGCONT: the shard answers again without a restart.
    resume();
    const resumedAt = performance.now();
    await waitFor(
      async () =>
        (await timedRequest(c.router.url, 'GET', `/groups/${hungGroups[0]}`, owner.token)).status === 200,
      { timeoutMs: 15_000, what: 'the resumed shard to serve' },
    );
    const servedAfterMs = performance.now() - resumedAt;
    const byStatus: Record<string, number> = {};
    for (const a of hungAnswers) byStatus[a.status] = (byStatus[a.status] ?? 0) + 1;
    const first503 = hungAnswers.filter((a) => a.status === 503).map((a) => a.at);
    summary('hung-shard', {
      shards: S,
      upstreamMs: UPSTREAM_MS,
      hungRequests: hungAnswers.length,
      hungConcurrency: HUNG_CONCURRENCY,
      hungAnswers: byStatus,
      timeoutMinMs: round1(Math.min(...timeouts.map((t) => t.ms))),
      timeoutMaxMs: round1(Math.max(...timeouts.map((t) => t.ms))),
      unreadyAfterMs: first503.length ? round1(Math.min(...first503)) : null,
      healthyRequestsDuring: during.lat.length,
      healthyFailedDuring: during.failures.length,
      healthyP50MsBaseline: round1(percentile(baseline.lat, 50)),
      healthyP99MsBaseline: round1(baseP99),
      healthyP50MsDuring: round1(percentile(during.lat, 50)),
      healthyP99MsDuring: round1(duringP99),
      healthyMaxMsDuring: round1(Math.max(...during.lat)),
      healthySlowerThanUpstreamMs: slow,
      routerRssBeforeKiB: rssBefore,
      routerRssAfterKiB: rssAfter,
      routerRssGrowthKiB: rssAfter - rssBefore,
      servedAfterSigcontMs: round1(servedAfterMs),
    });
  }, 90_000);
});
