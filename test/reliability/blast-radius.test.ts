/**
 * Blast radius: 3 shards, one of them stopped. Under concurrent load through the router,
 * the other shards' groups keep working at 100% success (writes and reads), and their
 * group WebSockets stay open; the stopped shard's keys get 503 with Retry-After and a
 * JSON error, never another shard's answer. After the shard is restarted, its clients
 * (a GroupConnection subscribed the whole time, and posters) recover with no gap.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cluster, type ShardProc, startCluster } from '../helpers/cluster.js';
import { errorOf, failedUpgrade } from '../helpers/http.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  chainProblems,
  deliveredAtLeast,
  idsOn,
  makeGroup,
  percentile,
  postOnce,
  readAll,
  round1,
  type SdkClient,
  sdkClient,
  shardOf,
  sleep,
  summary,
  timedRequest,
  users,
} from '../helpers/reliability.js';

useProcessCleanup();

const S = 3;
const DOWN = 2;
const GROUPS_PER_SHARD = 2;
const WORKERS = 12;
const LOAD_MS = 4000;

describe('blast radius: one of three shards stopped', () => {
  let c: Cluster;
  const clients: SdkClient[] = [];
  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), { shards: S });
  }, 60_000);
  afterAll(async () => {
    for (const cl of clients) cl.conn.close();
    await defaultRegistry.cleanup();
  });

  it("keeps the other shards at 100% success, answers the stopped shard's keys 503 + Retry-After, and recovers", async () => {
    const of = await shardOf(S);
    const byShard = Array.from({ length: S }, (_, s) => idsOn(of, s, 'blast', GROUPS_PER_SHARD));
    const [owner, ...rest] = await users(c, 'blast-user', 4);
    const members = [owner, ...rest] as NonNullable<typeof owner>[];
    const o = owner as NonNullable<typeof owner>;
    for (const g of byShard.flat()) await makeGroup(c, g, o, members);
    const healthy = byShard.filter((_, s) => s !== DOWN).flat();
    const downGroups = byShard[DOWN] as string[];

    // Subscribers on one healthy group and on one group of the shard that goes down.
    const healthySub = sdkClient(c.router.url, members[1] as (typeof members)[0], healthy[0] as string);
    const downSub = sdkClient(c.router.url, members[2] as (typeof members)[0], downGroups[0] as string);
    clients.push(healthySub, downSub);
    for (const cl of clients) await waitFor(() => cl.conn.state === 'open', { what: 'subscriber open' });
    // A few messages on the doomed shard before it stops.
    for (let i = 0; i < 5; i++) {
      const r = await postOnce(c.router.url, downGroups[0] as string, o.token, {
        contents: `pre ${i}`,
        clientMsgId: `pre-${i}`,
      });
      expect(r.status).toBe(201);
    }

    const shard = c.shards[DOWN] as ShardProc;
    await shard.proc.stop();
    const stoppedAt = performance.now();
    // The router notices at the first refused connection (or two failed probes).
    await waitFor(
      async () =>
        (await timedRequest(c.router.url, 'GET', `/groups/${downGroups[0]}`, o.token)).status === 503,
      { timeoutMs: 10_000, what: 'a 503 for the stopped shard' },
    );

    // Load: workers alternate posts and reads on healthy groups; one probes the stopped shard.
    const healthyStats = { ok: 0, failed: 0, latencies: [] as number[], failures: [] as string[] };
    const downStats = {
      n: 0,
      ok503: 0,
      other: [] as string[],
      retryAfter: new Set<string>(),
      codes: new Set<string>(),
    };
    const end = performance.now() + LOAD_MS;
    const worker = async (w: number) => {
      for (let n = 0; performance.now() < end; n++) {
        const g = healthy[(w + n) % healthy.length] as string;
        const u = members[w % members.length] as (typeof members)[0];
        const r =
          n % 2 === 0
            ? await postOnce(c.router.url, g, u.token, {
                contents: `load ${w} ${n}`,
                clientMsgId: `w${w}-n${n}`,
              })
            : await timedRequest(c.router.url, 'GET', `/groups/${g}/messages?after=0&limit=20`, u.token);
        healthyStats.latencies.push(r.ms);
        if (r.status === 200 || r.status === 201) healthyStats.ok++;
        else {
          healthyStats.failed++;
          if (healthyStats.failures.length < 5)
            healthyStats.failures.push(`${r.status} ${JSON.stringify(r.body)}`);
        }
      }
    };
    const prober = async () => {
      for (let n = 0; performance.now() < end; n++) {
        const g = downGroups[n % downGroups.length] as string;
        const r =
          n % 2 === 0
            ? await postOnce(c.router.url, g, o.token, { contents: 'x', clientMsgId: `down-${n}` })
            : await timedRequest(c.router.url, 'GET', `/groups/${g}/messages?after=0`, o.token);
        downStats.n++;
        if (
          r.status === 503 &&
          typeof r.body?.error?.code === 'string' &&
          typeof r.body?.error?.message === 'string'
        ) {
          downStats.ok503++;
          downStats.codes.add(r.body.error.code);
          downStats.retryAfter.add(r.headers?.get('retry-after') ?? '(none)');
        } else if (downStats.other.length < 5) downStats.other.push(`${r.status} ${JSON.stringify(r.body)}`);
        await sleep(20);
      }
    };
    await Promise.all([...Array.from({ length: WORKERS }, (_, w) => worker(w)), prober()]);
    expect(healthyStats.failures).toEqual([]);
    expect(healthyStats.failed).toBe(0);
    expect(healthyStats.ok).toBeGreaterThan(100);
    expect(downStats.other).toEqual([]);
    expect(downStats.ok503).toBe(downStats.n);
    expect([...downStats.retryAfter].every((v) => /^\d+$/.test(v) && Number(v) > 0)).toBe(true);
    // The healthy shard's subscriber never lost its connection.
    expect(healthySub.states.filter((s) => s !== 'open')).toEqual([]);
    expect(healthySub.conn.state).toBe('open');

    // Upgrades to the stopped shard are refused the same way.
    const up = await failedUpgrade(`${c.router.url}/groups/${downGroups[0]}/ws?token=${o.token}`);
    expect(up.status).toBe(503);
    expect(up.headers['retry-after']).toMatch(/^\d+$/);
    expect(errorOf(up).error.code).toBe('shard_unavailable');

    // Restart: the subscriber of the stopped shard recovers; posting works again.
    await c.restartShard(DOWN);
    const restartedAt = performance.now();
    await waitFor(
      async () =>
        (await timedRequest(c.router.url, 'GET', `/groups/${downGroups[0]}`, o.token)).status === 200,
      { timeoutMs: 15_000, what: 'the restarted shard to serve' },
    );
    const servedAfterMs = performance.now() - restartedAt;
    for (let i = 0; i < 5; i++) {
      const r = await postOnce(c.router.url, downGroups[0] as string, o.token, {
        contents: `post ${i}`,
        clientMsgId: `post-${i}`,
      });
      expect(r.status).toBe(201);
    }
    expect(await deliveredAtLeast(downSub, 10, 15_000)).toBe(true);
    const stored = await readAll(c.router.url, downGroups[0] as string, o.token);
    expect(stored.length).toBe(10);
    expect(chainProblems(downSub.messages, 'down subscriber')).toEqual([]);
    expect(downSub.messages.map((m) => m.clientMsgId)).toEqual(stored.map((m) => m.clientMsgId));
    expect(downSub.conn.state).toBe('open');

    summary('blast-radius', {
      shards: S,
      stoppedShard: DOWN,
      loadMs: LOAD_MS,
      workers: WORKERS,
      healthyRequests: healthyStats.ok + healthyStats.failed,
      healthyFailed: healthyStats.failed,
      healthyP50Ms: round1(percentile(healthyStats.latencies, 50)),
      healthyP99Ms: round1(percentile(healthyStats.latencies, 99)),
      stoppedShardRequests: downStats.n,
      stoppedShard503: downStats.ok503,
      codes: [...downStats.codes],
      retryAfter: [...downStats.retryAfter],
      healthySubscriberInterruptions: healthySub.states.filter((s) => s !== 'open').length,
      downMs: round1(restartedAt - stoppedAt),
      servedAfterRestartMs: round1(servedAfterMs),
      recoveredSubscriberDelivered: downSub.messages.length,
      recoveredSubscriberGaps: 0,
    });
  }, 90_000);
});
