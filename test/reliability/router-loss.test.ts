/**
 * Router loss: two router processes over the same shards (the cluster's router and a
 * second one started with the same configuration file and secrets on new ports), and a
 * TCP front standing in for a load balancer (each connection goes to the first router
 * that accepts it). SDK clients talk to the front: GroupConnections that send over the
 * group WebSocket, and posters over HTTP. The first router is SIGKILLed mid-traffic;
 * clients reconnect through the second and catch up: every send acknowledged, every
 * message delivered to every client once, in order, with no gap.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  chainProblems,
  deliveredAtLeast,
  type ExtraRouter,
  FailoverFront,
  makeGroup,
  postOnce,
  rand,
  readAll,
  round1,
  type SdkClient,
  sdkClient,
  sleep,
  startSecondRouter,
  summary,
  uid,
  users,
} from '../helpers/reliability.js';

useProcessCleanup();

const CLIENTS = 4;
const POSTERS = 4;
const GROUPS = 2;

describe('router loss: two routers, one killed', () => {
  let c: Cluster;
  let r2: ExtraRouter;
  let front: FailoverFront;
  const clients: SdkClient[] = [];
  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), { shards: 3 });
    r2 = await startSecondRouter(c);
    front = new FailoverFront([c.router.port, r2.port]);
    await front.listen();
  }, 60_000);
  afterAll(async () => {
    for (const cl of clients) cl.conn.close();
    await front?.close();
    await defaultRegistry.cleanup();
  });

  it('clients fail over to the second router and catch up with no gap', async () => {
    const groups = Array.from({ length: GROUPS }, () => uid('rl'));
    const people = await users(c, 'rl-user', CLIENTS + POSTERS);
    const owner = people[0] as (typeof people)[0];
    for (const g of groups) await makeGroup(c, g, owner, people);
    // Both routers serve the same data.
    const viaR2 = await postOnce(r2.url, groups[0] as string, owner.token, {
      contents: 'via r2',
      clientMsgId: 'r2-0',
    });
    expect(viaR2.status).toBe(201);

    for (let i = 0; i < CLIENTS; i++) {
      clients.push(sdkClient(front.url, people[i] as (typeof people)[0], groups[i % GROUPS] as string));
    }
    for (const cl of clients) await waitFor(() => cl.conn.state === 'open', { what: 'client open' });
    expect(front.relayed.get(c.router.port) ?? 0).toBeGreaterThan(0);
    expect(front.relayed.get(r2.port) ?? 0).toBe(0);

    let stop = false;
    const acks: { groupId: string; msgId: number; clientMsgId: string }[] = [];
    const failures: string[] = [];
    let httpRetries = 0;
    // Posters over HTTP through the front, retrying with the same clientMsgId.
    const poster = async (p: number) => {
      const u = people[CLIENTS + p] as (typeof people)[0];
      for (let n = 0; !stop && n < 2000; n++) {
        const groupId = groups[(p + n) % GROUPS] as string;
        const clientMsgId = `h${p}-${n}`;
        const deadline = Date.now() + 20_000;
        for (;;) {
          const r = await postOnce(
            front.url,
            groupId,
            u.token,
            { contents: `http ${p} ${n}`, clientMsgId },
            5000,
          );
          if ((r.status === 201 || r.status === 200) && typeof r.body?.msgId === 'number') {
            acks.push({ groupId, msgId: r.body.msgId, clientMsgId });
            break;
          }
          if ((r.status !== 0 && r.status < 500) || Date.now() > deadline) {
            failures.push(`${clientMsgId}: ${r.status} ${JSON.stringify(r.body)}`);
            return;
          }
          httpRetries++;
          await sleep(rand(20, 60));
        }
        await sleep(rand(5, 30));
      }
    };
    // Senders over the group WebSocket (the SDK resends unacknowledged messages itself).
    const wsSends: Promise<unknown>[] = [];
    const sender = async (i: number) => {
      const cl = clients[i] as SdkClient;
      for (let n = 0; !stop && n < 2000; n++) {
        wsSends.push(cl.conn.send(`ws ${i} ${n}`, `ws${i}-${n}`).done);
        await sleep(rand(30, 80));
      }
    };
    const running = [
      ...Array.from({ length: POSTERS }, (_, p) => poster(p)),
      ...Array.from({ length: CLIENTS }, (_, i) => sender(i)),
    ];
    let reconnectMs = 0;
    try {
      await sleep(1000);
      const acksBefore = acks.length;
      const killedAt = performance.now();
      c.router.proc.child.kill('SIGKILL');
      expect((await c.router.proc.waitExit(5000))?.signal).toBe('SIGKILL');
      // Every client is open again, through the second router.
      await waitFor(
        () => clients.every((cl) => cl.conn.state === 'open' && cl.states.includes('reconnecting')),
        {
          timeoutMs: 15_000,
          what: 'every client reconnected',
        },
      );
      reconnectMs = performance.now() - killedAt;
      await waitFor(() => acks.length > acksBefore + POSTERS, {
        timeoutMs: 15_000,
        what: 'posts through router 2',
      });
      await sleep(1000);
    } finally {
      stop = true;
      await Promise.all(running);
    }
    expect(failures).toEqual([]);
    const wsAcks = await Promise.all(wsSends);
    expect(front.relayed.get(r2.port) ?? 0).toBeGreaterThan(0);

    let gaps = 0;
    let delivered = 0;
    for (const g of groups) {
      const stored = await readAll(r2.url, g, owner.token);
      expect(chainProblems(stored, `stored ${g}`)).toEqual([]);
      const ids = stored.map((m) => `${m.userId}/${m.clientMsgId}`);
      expect(new Set(ids).size).toBe(ids.length);
      for (const a of acks.filter((x) => x.groupId === g)) {
        expect(stored[a.msgId - 1]?.clientMsgId).toBe(a.clientMsgId);
      }
      for (const cl of clients.filter((x) => x.conn.groupId === g)) {
        expect(await deliveredAtLeast(cl, stored.length, 15_000)).toBe(true);
        const problems = chainProblems(cl.messages, `client ${cl.userId}`);
        gaps += problems.length;
        expect(problems).toEqual([]);
        expect(cl.messages.map((m) => m.clientMsgId)).toEqual(stored.map((m) => m.clientMsgId));
        delivered += cl.messages.length;
      }
    }
    summary('router-loss', {
      routers: 2,
      killed: 'router 1 (SIGKILL)',
      httpAcknowledged: acks.length,
      httpRetries,
      wsAcknowledged: wsAcks.length,
      clients: CLIENTS,
      reconnectAllMs: round1(reconnectMs),
      delivered,
      gaps,
      duplicates: 0,
      connectionsViaRouter1: front.relayed.get(c.router.port) ?? 0,
      connectionsViaRouter2: front.relayed.get(r2.port) ?? 0,
    });
  }, 90_000);
});
