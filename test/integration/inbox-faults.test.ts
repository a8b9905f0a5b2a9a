/**
 * Fan-out under injected faults (docs/delivery-protocol.md section 5): with
 * SHARDCHAT_TEST_FAULTS=1, 30 % of the batches between shards are lost and every batch
 * is delayed by up to 50 ms. Users on inboxes across the shards still converge on every
 * group's history, in order, with no loss and no duplicate: the session hosts repair
 * gaps from the groups' shards, and heads repair the tails.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import { Inbox, idOn, makeGroup, metricSum, postMany, shardOfFn } from './inbox-helpers.js';

useProcessCleanup();

const S = 3;

describe('fan-out with lost and delayed batches (3 shards)', () => {
  let c: Cluster;
  const inboxes = new Map<string, Inbox>();

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: S,
      env: { SHARDCHAT_TEST_FAULTS: '1' },
      config: { shard: { fanout: { faults: { dropRatio: 0.3, delayMs: 50 } } } },
    });
  }, 60_000);
  afterAll(async () => {
    for (const b of inboxes.values()) await b.close();
    await defaultRegistry.cleanup();
  });

  it('every connected user converges on every group, in order, no loss, no duplicate', async () => {
    const shardOf = await shardOfFn(S);
    // Two users per session host, groups on every shard, everyone a member of every group.
    const users = [0, 1, 2].flatMap((s) => [idOn(shardOf, `fa${s}a`, s), idOn(shardOf, `fa${s}b`, s)]);
    const groups = [0, 1, 2].map((s) => idOn(shardOf, 'faulty', s));
    const owner = users[0] as string;
    for (const g of groups) await makeGroup(c, g, owner, users.slice(1));
    const posters = await Promise.all(
      users.map(async (userId) => ({ userId, token: await c.token(userId) })),
    );
    for (const p of posters) {
      const box = await Inbox.open(c, p.userId, p.token);
      inboxes.set(p.userId, box);
      await box.until((e) => e.some((x) => x.type === 'hello'), 10_000, 'hello');
    }
    // Warm-up: a host starts delivering a group from the first record it gets (what came
    // before is the SDK's catch-up), so post until every inbox got each group once.
    for (let round = 0; round < 50; round++) {
      const missing = groups.filter((g) => [...inboxes.values()].some((b) => b.messages(g).length === 0));
      if (missing.length === 0) break;
      await postMany(c, missing, posters.slice(0, 1), 1, `warm${round}`, 1);
      await new Promise((r) => setTimeout(r, 300));
    }
    const first = new Map<string, number>();
    for (const [u, b] of inboxes)
      for (const g of groups) {
        const m = b.messages(g)[0];
        expect(m, `${u} got nothing of ${g} during the warm-up`).toBeDefined();
        first.set(`${u} ${g}`, m?.msgId as number);
      }

    const N = 100;
    const started = Date.now();
    await postMany(c, groups, posters, N, 'f', 24);
    const lastOf = new Map<string, number>();
    for (const g of groups) {
      const info = await api(c.router.url, 'GET', `/groups/${g}`, posters[0]?.token);
      lastOf.set(g, info.body.lastMsgId as number);
    }
    for (const [u, b] of inboxes) {
      await b.until(
        () => groups.every((g) => b.messages(g).some((m) => m.msgId === lastOf.get(g))),
        30_000,
        `${u}: the last message of every group`,
      );
    }
    const convergedMs = Date.now() - started;
    // Let late duplicates (if any) arrive before checking for them.
    await new Promise((r) => setTimeout(r, 1500));
    for (const [u, b] of inboxes)
      for (const g of groups) {
        const from = first.get(`${u} ${g}`) as number;
        const to = lastOf.get(g) as number;
        const ids = b.messages(g).map((m) => m.msgId as number);
        expect(ids, `${u} in ${g}`).toEqual(Array.from({ length: to - from + 1 }, (_, i) => from + i));
      }
    const repairs = await metricSum(c, 'shardchat_shard_gap_repairs_total');
    const dropped = await metricSum(c, 'shardchat_shard_fanout_dropped_total');
    console.log(
      `faults: ${groups.length}x${N} messages to ${inboxes.size} inboxes converged in ${convergedMs} ms; ` +
        `records lost (fault) per shard ${dropped.join('/')}, gap repairs per shard ${repairs.join('/')}`,
    );
    expect(dropped.some((n) => n > 0)).toBe(true);
    expect(repairs.some((n) => n > 0)).toBe(true);
  }, 120_000);
});
