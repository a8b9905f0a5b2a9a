/**
 * The inbox WebSocket and cross-shard fan-out (docs/delivery-protocol.md) on real
 * processes: 4 shards, a user whose session host is shard 3 and who is a member of
 * three groups on shards 0, 1 and 2 gets everything on one inbox, in order, once;
 * sends and types through it; and a session host killed while messages are posted
 * neither blocks the groups' shards nor loses the later messages.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { failedUpgrade } from '../helpers/http.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  type Ev,
  expectInOrder,
  Inbox,
  idOn,
  makeGroup,
  metricOn,
  postMany,
  shardOfFn,
} from './inbox-helpers.js';

useProcessCleanup();

const S = 4;

describe('inbox WebSocket and fan-out (4 shards)', () => {
  let c: Cluster;
  let shardOf: (id: string) => number;
  let u: string; // session host 3
  let v: string; // session host 1
  let groups: string[]; // on shards 0, 1, 2
  const posters: { userId: string; token: string }[] = [];
  const inboxes: Inbox[] = [];
  const tokens = new Map<string, string>();
  const tok = async (id: string) => {
    let t = tokens.get(id);
    if (!t) {
      t = await c.token(id);
      tokens.set(id, t);
    }
    return t;
  };
  const open = async (userId: string) => {
    const box = await Inbox.open(c, userId, await tok(userId));
    inboxes.push(box);
    await box.until((e) => e.some((x) => x.type === 'hello'), 10_000, 'hello');
    return box;
  };

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), { shards: S });
    shardOf = await shardOfFn(S);
    u = idOn(shardOf, 'ulla', 3);
    v = idOn(shardOf, 'vera', 1);
    groups = [0, 1, 2].map((s) => idOn(shardOf, 'room', s));
    for (const [i, s] of [0, 1, 2].entries()) {
      const p = idOn(shardOf, `poster${i}x`, s);
      posters.push({ userId: p, token: await tok(p) });
    }
    for (const g of groups)
      await makeGroup(c, g, posters[0]?.userId as string, [u, v, ...posters.slice(1).map((p) => p.userId)]);
  }, 60_000);
  afterAll(async () => {
    for (const b of inboxes) await b.close();
    await defaultRegistry.cleanup();
  });

  it('refuses: 421 on the wrong shard, 401 without a token, 403 for another user', async () => {
    const wrong = c.shards[(shardOf(u) + 1) % S]?.url as string;
    const t = await tok(u);
    expect((await failedUpgrade(`${wrong}/users/${u}/ws?token=${t}`)).status).toBe(421);
    expect((await failedUpgrade(`${c.router.url}/users/${u}/ws`)).status).toBe(401);
    expect((await failedUpgrade(`${c.router.url}/users/${u}/ws?token=${await tok(v)}`)).status).toBe(403);
  });

  it('delivers 3x100 messages posted concurrently to groups on 3 shards to one inbox on a 4th, in order, once', async () => {
    const box = await open(u);
    expect(box.events[0]).toEqual({ type: 'hello', userId: u, shard: 3 });
    const other = await open(v);
    const started = Date.now();
    await postMany(c, groups, posters, 100, 'a');
    const postedMs = Date.now() - started;
    await box.until((e) => e.filter((x) => x.type === 'message').length >= 300, 30_000, '300 messages');
    await other.until((e) => e.filter((x) => x.type === 'message').length >= 300, 30_000, '300 messages');
    const allMs = Date.now() - started;
    for (const g of groups) {
      expectInOrder(box.events, g, 1, 100);
      expectInOrder(other.events, g, 1, 100);
    }
    // Every field of the stored message comes with the event.
    const hist = await api(
      c.router.url,
      'GET',
      `/groups/${groups[1]}/messages?after=0&limit=100`,
      await tok(u),
    );
    const { type, ...first } = box.messages(groups[1])[0] as Ev;
    expect(first).toEqual(hist.body.messages[0]);
    const batches = await metricOn(c, 0, 'shardchat_shard_fanout_batches_total', { dest: '3' });
    console.log(
      `inbox: 300 messages posted in ${postedMs} ms, all delivered after ${allMs} ms; shard 0 -> 3 batches ${batches}`,
    );
    expect(batches).toBeGreaterThan(0);
    expect(batches).toBeLessThan(100);
    expect(await metricOn(c, 3, 'shardchat_shard_inbox_connections')).toBe(1);
  }, 90_000);

  it('sends through the inbox (ack with msgId) and the other members get it; errors name group and clientMsgId', async () => {
    const box = inboxes[0] as Inbox;
    const other = inboxes[1] as Inbox;
    const g = groups[2] as string;
    box.send({ type: 'message', groupId: g, contents: 'from the inbox', clientMsgId: 'ib-1' });
    await box.until((e) => e.some((x) => x.type === 'ack' && x.clientMsgId === 'ib-1'), 10_000, 'ack');
    const ack = box.events.find((x) => x.type === 'ack' && x.clientMsgId === 'ib-1') as Ev;
    expect(ack).toMatchObject({ groupId: g, msgId: 101, prevMsgId: 100 });
    expect(typeof ack.epoch).toBe('string');
    await other.until(
      (e) => e.some((x) => x.type === 'message' && x.groupId === g && x.msgId === 101),
      10_000,
      'msg 101',
    );
    expect(other.messages(g).at(-1)).toMatchObject({
      userId: u,
      contents: 'from the inbox',
      clientMsgId: 'ib-1',
    });
    // The same clientMsgId again: the same msgId, stored once.
    box.send({ type: 'message', groupId: g, contents: 'again', clientMsgId: 'ib-1' });
    await box.until(
      (e) => e.filter((x) => x.type === 'ack' && x.clientMsgId === 'ib-1').length === 2,
      10_000,
      'ack 2',
    );
    expect(
      box.events.filter((x) => x.type === 'ack' && x.clientMsgId === 'ib-1').map((x) => x.msgId),
    ).toEqual([101, 101]);
    // Not a member: an error with groupId and clientMsgId.
    const lonely = idOn(shardOf, 'lonely', 2);
    await makeGroup(c, lonely, posters[0]?.userId as string, []);
    box.send({ type: 'message', groupId: lonely, contents: 'hi', clientMsgId: 'ib-2' });
    await box.until((e) => e.some((x) => x.type === 'error' && x.clientMsgId === 'ib-2'), 10_000, 'error');
    expect(box.events.find((x) => x.type === 'error' && x.clientMsgId === 'ib-2')).toMatchObject({
      code: 'forbidden',
      groupId: lonely,
    });
  }, 30_000);

  it("typing through the inbox reaches the other members' inboxes, not the sender's", async () => {
    const box = inboxes[0] as Inbox;
    const other = inboxes[1] as Inbox;
    const g = groups[1] as string;
    const mark = box.events.length;
    box.send({ type: 'typing', groupId: g });
    await other.until(
      (e) => e.some((x) => x.type === 'typing' && x.userId === u && x.groupId === g),
      10_000,
      'typing',
    );
    // A message after the typing, through the same shards: the sender sees the message but no typing of its own.
    box.send({ type: 'message', groupId: g, contents: 'marker', clientMsgId: 'ty-1' });
    await box.until((e) => e.some((x) => x.type === 'message' && x.clientMsgId === 'ty-1'), 10_000, 'marker');
    expect(box.events.slice(mark).filter((x) => x.type === 'typing')).toEqual([]);
  }, 30_000);

  it('a session host killed while messages are posted: posts go on, the fan-out retries, later messages arrive in order', async () => {
    const g = groups[0] as string;
    const old = inboxes[0] as Inbox;
    const lastSeen = Math.max(...old.messages(g).map((m) => m.msgId as number));
    const retriesBefore = await metricOn(c, 0, 'shardchat_shard_fanout_retries_total', { dest: '3' });
    c.shards[3]?.proc.signal('SIGKILL');
    await c.shards[3]?.proc.waitExit(10_000);
    // The group's shard keeps accepting posts (no blocking on the dead destination).
    const t0 = Date.now();
    await postMany(c, [g], posters, 30, 'down', 8);
    const downMs = Date.now() - t0;
    expect(downMs).toBeLessThan(10_000);
    await waitFor(
      async () =>
        (await metricOn(c, 0, 'shardchat_shard_fanout_retries_total', { dest: '3' })) > retriesBefore,
      {
        timeoutMs: 10_000,
        what: 'fan-out retries to shard 3',
      },
    );
    const retries =
      (await metricOn(c, 0, 'shardchat_shard_fanout_retries_total', { dest: '3' })) - retriesBefore;
    await c.restartShard(3);
    const box = await waitFor(
      async () => {
        try {
          return await open(u);
        } catch {
          return undefined;
        }
      },
      { timeoutMs: 15_000, what: 'the inbox after the restart' },
    );
    // The SDK's job, by hand: catch up with GET ?after= after (re)connecting.
    const caught = await api(
      c.router.url,
      'GET',
      `/groups/${g}/messages?after=${lastSeen}&limit=200`,
      await tok(u),
    );
    expect(caught.status).toBe(200);
    const have = new Set<number>([...Array(lastSeen).keys()].map((i) => i + 1));
    for (const m of caught.body.messages as Ev[]) have.add(m.msgId as number);
    const caughtTo = Math.max(...have);
    expect(caughtTo).toBe(lastSeen + 30);
    // Later messages come through the inbox, in order, none twice.
    await postMany(c, [g], posters, 20, 'after', 4);
    await box.until(
      (e) => e.some((x) => x.type === 'message' && x.groupId === g && x.msgId === caughtTo + 20),
      20_000,
      'later messages',
    );
    const ids = box.messages(g).map((m) => m.msgId as number);
    for (let i = 1; i < ids.length; i++) expect(ids[i]).toBeGreaterThan(ids[i - 1] as number);
    for (let id = caughtTo + 1; id <= caughtTo + 20; id++) expect(ids).toContain(id);
    console.log(
      `inbox: 30 posts while shard 3 was down took ${downMs} ms; ${retries} retries counted on shard 0`,
    );
    expect(retries).toBeGreaterThan(0);
  }, 90_000);
});
