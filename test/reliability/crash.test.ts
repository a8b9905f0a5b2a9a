/**
 * Crash safety: 20 clients post concurrently through the router to groups of one shard
 * while that shard is SIGKILLed at random points (3 rounds) and restarted on the same
 * data. Every failed post is retried with the same clientMsgId. Afterwards every
 * acknowledged message is stored exactly once under the msgId its acknowledgement gave,
 * msgIds are contiguous, nothing unacknowledged was stored, and GroupConnection
 * subscribers (one per group, connected the whole time) were delivered every message
 * once, in order, with no gap.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Message } from '../../client/types.js';
import { type Cluster, type ShardProc, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  chainProblems,
  deliveredAtLeast,
  idsOn,
  makeGroup,
  postOnce,
  rand,
  readAll,
  round1,
  type SdkClient,
  sdkClient,
  shardOf,
  sleep,
  summary,
  users,
} from '../helpers/reliability.js';

useProcessCleanup();

const S = 3;
const TARGET = 1;
const GROUPS = 4;
const POSTERS = 20;
const ROUNDS = 3;
/** A message must be acknowledged within this, retries included. */
const ACK_DEADLINE_MS = 45_000;

interface Ack {
  groupId: string;
  userId: string;
  clientMsgId: string;
  contents: string;
  msgId: number;
}

describe('crash safety: SIGKILL of a shard under concurrent posting', () => {
  let c: Cluster;
  const clients: SdkClient[] = [];
  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), { shards: S });
  }, 60_000);
  afterAll(async () => {
    for (const cl of clients) cl.conn.close();
    await defaultRegistry.cleanup();
  });

  it('keeps every acknowledged message exactly once with its msgId through 3 kills; subscribers see no gap', async () => {
    const of = await shardOf(S);
    const groups = idsOn(of, TARGET, 'crash', GROUPS);
    const posters = await users(c, 'poster', POSTERS);
    const readers = await users(c, 'reader', GROUPS);
    for (const [i, g] of groups.entries()) {
      await makeGroup(c, g, posters[0] as (typeof posters)[0], [
        ...posters,
        readers[i] as (typeof readers)[0],
      ]);
    }
    // One subscriber per group, through the router, for the whole test.
    for (const [i, g] of groups.entries())
      clients.push(sdkClient(c.router.url, readers[i] as (typeof readers)[0], g));
    for (const cl of clients) await waitFor(() => cl.conn.state === 'open', { what: 'subscriber open' });

    const acks: Ack[] = [];
    const failures: string[] = [];
    let attempts = 0;
    let retries = 0;
    let stop = false;
    const poster = async (p: number) => {
      const u = posters[p] as (typeof posters)[0];
      for (let n = 0; !stop && n < 5000; n++) {
        const groupId = groups[(p + n) % GROUPS] as string;
        const clientMsgId = `p${p}-n${n}`;
        const contents = `poster ${p} message ${n}`;
        const deadline = Date.now() + ACK_DEADLINE_MS;
        for (;;) {
          attempts++;
          const r = await postOnce(c.router.url, groupId, u.token, { contents, clientMsgId });
          if ((r.status === 201 || r.status === 200) && typeof r.body?.msgId === 'number') {
            acks.push({ groupId, userId: u.id, clientMsgId, contents, msgId: r.body.msgId });
            break;
          }
          if (r.status !== 0 && r.status < 500) {
            failures.push(`${clientMsgId}: unexpected ${r.status} ${JSON.stringify(r.body)}`);
            return;
          }
          if (Date.now() > deadline) {
            failures.push(`${clientMsgId}: not acknowledged within ${ACK_DEADLINE_MS} ms`);
            return;
          }
          retries++;
          await sleep(rand(20, 100));
        }
      }
    };
    const acksAtLeast = async (n: number, ms: number) => {
      const deadline = Date.now() + ms;
      while (acks.length < n && Date.now() < deadline && failures.length === 0) await sleep(20);
      expect(failures).toEqual([]);
      expect(acks.length).toBeGreaterThanOrEqual(n);
    };

    const running = posters.map((_, p) => poster(p));
    const downMs: number[] = [];
    const killedAtAcks: number[] = [];
    try {
      await acksAtLeast(POSTERS, 20_000);
      for (let round = 0; round < ROUNDS; round++) {
        await sleep(rand(200, 1200));
        const shard = c.shards[TARGET] as ShardProc;
        killedAtAcks.push(acks.length);
        const killedAt = performance.now();
        shard.proc.child.kill('SIGKILL');
        expect((await shard.proc.waitExit(5000))?.signal).toBe('SIGKILL');
        await c.restartShard(TARGET);
        const before = acks.length;
        // Posting resumes through the router on the restarted shard.
        await acksAtLeast(before + POSTERS, 30_000);
        downMs.push(round1(performance.now() - killedAt));
      }
    } finally {
      stop = true;
      await Promise.all(running);
    }
    expect(failures).toEqual([]);

    // Every acknowledged message is stored once, where its ack said; nothing else is stored.
    const owner = posters[0] as (typeof posters)[0];
    let stored = 0;
    let lost = 0;
    let duplicated = 0;
    let subscriberProblems: string[] = [];
    for (const [i, g] of groups.entries()) {
      const all = await readAll(c.router.url, g, owner.token);
      stored += all.length;
      expect(chainProblems(all, `stored ${g}`)).toEqual([]);
      const byMsgId = new Map(all.map((m) => [m.msgId, m]));
      const seen = new Set<string>();
      for (const m of all) {
        const k = `${m.userId}/${m.clientMsgId}`;
        if (seen.has(k)) duplicated++;
        seen.add(k);
      }
      const groupAcks = acks.filter((a) => a.groupId === g);
      for (const a of groupAcks) {
        const m = byMsgId.get(a.msgId);
        if (!m || m.clientMsgId !== a.clientMsgId || m.userId !== a.userId || m.contents !== a.contents)
          lost++;
      }
      expect(all.length).toBe(groupAcks.length);
      // The subscriber of the group was delivered the same history, once, in order.
      const cl = clients[i] as SdkClient;
      await deliveredAtLeast(cl, all.length, 20_000);
      subscriberProblems = subscriberProblems.concat(chainProblems(cl.messages, `subscriber of ${g}`));
      expect(cl.messages.length).toBe(all.length);
      expect(cl.messages.map((m: Message) => m.clientMsgId)).toEqual(all.map((m) => m.clientMsgId));
      expect(cl.resets).toBe(0);
    }
    expect(lost).toBe(0);
    expect(duplicated).toBe(0);
    expect(subscriberProblems).toEqual([]);
    expect(stored).toBe(acks.length);
    summary('crash', {
      shards: S,
      posters: POSTERS,
      groups: GROUPS,
      kills: ROUNDS,
      acknowledged: acks.length,
      stored,
      lost,
      duplicated,
      postAttempts: attempts,
      retries,
      killedAtAcks,
      killToPostingResumedMs: downMs,
      subscribers: clients.length,
      subscriberGaps: subscriberProblems.length,
      subscriberDelivered: clients.reduce((n, cl) => n + cl.messages.length, 0),
    });
  }, 150_000);
});
