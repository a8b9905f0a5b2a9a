/**
 * Group WebSockets (docs/architecture.md section 4) through the router, on real processes: hello,
 * ordered delivery of posted messages, acks, typing, presence, refusals passed through,
 * malformed frames, the rate limit (4029), the bounded send queue (4008), the payload
 * limit (1009) and shard shutdown (1001).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { failedUpgrade, metricValue, WsClient } from '../helpers/http.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';

useProcessCleanup();

type Ev = Record<string, unknown> & { type: string };

const MESSAGE_FIELDS = ['groupId', 'msgId', 'prevMsgId', 'epoch', 'ts', 'userId', 'contents', 'clientMsgId'];

function wsUrl(c: Cluster, groupId: string, token?: string, base = c.router.wsUrl): string {
  const q = token === undefined ? '' : `?token=${encodeURIComponent(token)}`;
  return `${base}/groups/${encodeURIComponent(groupId)}/ws${q}`;
}

/** Opens a group WebSocket and returns it with its hello. */
async function subscribe(c: Cluster, groupId: string, token: string): Promise<{ ws: WsClient; hello: Ev }> {
  const ws = new WsClient(wsUrl(c, groupId, token));
  await ws.opened;
  const hello = await ws.nextJson<Ev>();
  return { ws, hello };
}

/** Reads events until `pred` matches one (bounded in count and time); returns the events read. */
async function readUntil(
  ws: WsClient,
  pred: (e: Ev) => boolean,
  maxEvents = 10_000,
  ms = 20_000,
): Promise<Ev[]> {
  const seen: Ev[] = [];
  const deadline = Date.now() + ms;
  while (seen.length < maxEvents) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const e = await ws.nextJson<Ev>(left);
    seen.push(e);
    if (pred(e)) return seen;
  }
  throw new Error(`no matching event among ${seen.length}: ${JSON.stringify(seen.slice(-5)).slice(0, 500)}`);
}

/** Reads `n` events of type `type` (others are skipped), bounded. */
async function readMessages(ws: WsClient, n: number, type = 'message', ms = 20_000): Promise<Ev[]> {
  const out: Ev[] = [];
  const deadline = Date.now() + ms;
  for (let i = 0; i < n * 10 + 100 && out.length < n; i++) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const e = await ws.nextJson<Ev>(left);
    if (e.type === type) out.push(e);
  }
  if (out.length < n) throw new Error(`got ${out.length} of ${n} ${type} events`);
  return out;
}

/** No event of type `type` arrives before a marker event of the client's own (a later ack). */
async function eventsBefore(ws: WsClient, marker: (e: Ev) => boolean): Promise<Ev[]> {
  const seen = await readUntil(ws, marker, 1000, 10_000);
  return seen.slice(0, -1);
}

async function makeGroup(c: Cluster, groupId: string, owner: string, members: string[]): Promise<void> {
  const t = await c.token(owner);
  expect((await api(c.router.url, 'PUT', `/groups/${groupId}`, t, { subject: groupId })).status).toBe(201);
  for (const m of members) {
    const res = await api(c.router.url, 'POST', `/groups/${groupId}/members`, await c.token(m), {
      userId: m,
    });
    expect(res.status).toBe(200);
  }
}

async function shardMetric(c: Cluster, shard: number, name: string): Promise<number> {
  const res = await fetch(`${c.shards[shard]?.adminUrl}/metrics`);
  return metricValue(await res.text(), name) ?? 0;
}

describe('group WebSockets through the router (3 shards)', () => {
  let c: Cluster;
  const clients: WsClient[] = [];
  const track = <T extends { ws: WsClient }>(x: T): T => {
    clients.push(x.ws);
    return x;
  };

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      config: { shard: { limits: { wsMaxPayloadBytes: 4096 } } },
    });
  });
  afterAll(async () => {
    for (const w of clients) w.terminate();
    await defaultRegistry.cleanup();
  });

  it('says hello first with the epoch, lastMsgId and push mode', async () => {
    await makeGroup(c, 'ws-hello', 'alice', []);
    const alice = await c.token('alice');
    await api(c.router.url, 'POST', '/groups/ws-hello/messages', alice, {
      contents: 'one',
      clientMsgId: 'h1',
    });
    const info = await api(c.router.url, 'GET', '/groups/ws-hello', alice);
    expect(info.status).toBe(200);
    const { hello } = track(await subscribe(c, 'ws-hello', alice));
    expect(hello).toMatchObject({ type: 'hello', epoch: info.body.epoch, lastMsgId: 1, mode: 'push' });
    expect(typeof hello.epoch).toBe('string');
  });

  it('delivers every message posted over HTTP and over the WebSocket, in msgId order, once, with all fields', async () => {
    await makeGroup(c, 'ws-order', 'alice', ['bob', 'carol']);
    const [alice, bob, carol] = await Promise.all(['alice', 'bob', 'carol'].map((u) => c.token(u)));
    const sub = track(await subscribe(c, 'ws-order', carol as string));
    expect(sub.hello).toMatchObject({ type: 'hello', lastMsgId: 0 });
    const poster = track(await subscribe(c, 'ws-order', bob as string));
    const N = 15;
    const httpPosts = Promise.all(
      Array.from({ length: N }, (_, i) =>
        api(c.router.url, 'POST', '/groups/ws-order/messages', alice, {
          contents: `http ${i}`,
          clientMsgId: `h${i}`,
        }),
      ),
    );
    for (let i = 0; i < N; i++)
      poster.ws.send(JSON.stringify({ type: 'message', contents: `ws ${i}`, clientMsgId: `w${i}` }));
    for (const r of await httpPosts) expect(r.status).toBe(201);
    const acks = await readMessages(poster.ws, N, 'ack');
    expect(acks.map((a) => a.clientMsgId).sort()).toEqual(
      Array.from({ length: N }, (_, i) => `w${i}`).sort(),
    );
    for (const a of acks) {
      expect(a).toMatchObject({ type: 'ack', epoch: sub.hello.epoch });
      expect(typeof a.msgId).toBe('number');
      expect(a.prevMsgId).toBe((a.msgId as number) - 1);
      expect(typeof a.ts).toBe('number');
    }

    const got = await readMessages(sub.ws, 2 * N);
    expect(got.map((m) => m.msgId)).toEqual(Array.from({ length: 2 * N }, (_, i) => i + 1));
    const history = await api(c.router.url, 'GET', '/groups/ws-order/messages?after=0&limit=100', carol);
    expect(history.body.messages).toHaveLength(2 * N);
    for (const [i, m] of got.entries()) {
      const { type, ...fields } = m;
      expect(type).toBe('message');
      for (const f of MESSAGE_FIELDS) expect(fields).toHaveProperty(f);
      expect(fields).toEqual(history.body.messages[i]);
      expect(m.prevMsgId).toBe((m.msgId as number) - 1);
      expect(m.groupId).toBe('ws-order');
    }
    // Each WebSocket post is acknowledged with the msgId it was delivered under.
    for (const a of acks) {
      const m = got.find((x) => x.msgId === a.msgId);
      expect(m).toMatchObject({ userId: 'bob', clientMsgId: a.clientMsgId });
    }
    // The same clientMsgId again: acked with the first msgId and not delivered twice.
    poster.ws.send(JSON.stringify({ type: 'message', contents: 'ws 0 again', clientMsgId: 'w0' }));
    const again = (await readMessages(poster.ws, 1, 'ack'))[0] as Ev;
    expect(again.msgId).toBe(acks.find((a) => a.clientMsgId === 'w0')?.msgId);
    const r = await api(c.router.url, 'POST', '/groups/ws-order/messages', alice, {
      contents: 'last',
      clientMsgId: 'last',
    });
    expect(r.body.msgId).toBe(2 * N + 1);
    const next = await readMessages(sub.ws, 1);
    expect(next[0]).toMatchObject({ msgId: 2 * N + 1, contents: 'last' });
  });

  it('sends typing to the other members only and never stores it', async () => {
    await makeGroup(c, 'ws-typing', 'alice', ['bob']);
    const [alice, bob] = await Promise.all([c.token('alice'), c.token('bob')]);
    const a = track(await subscribe(c, 'ws-typing', alice));
    const b = track(await subscribe(c, 'ws-typing', bob));
    a.ws.send(JSON.stringify({ type: 'typing' }));
    const atBob = await readUntil(b.ws, (e) => e.type === 'typing');
    expect(atBob.at(-1)).toEqual({ type: 'typing', groupId: 'ws-typing', userId: 'alice' });
    // Alice's own stream: her next ack comes with no typing event of hers before it.
    a.ws.send(JSON.stringify({ type: 'message', contents: 'marker', clientMsgId: 'mk' }));
    const before = await eventsBefore(a.ws, (e) => e.type === 'ack');
    expect(before.filter((e) => e.type === 'typing')).toEqual([]);
    const history = await api(c.router.url, 'GET', '/groups/ws-typing/messages?after=0', alice);
    expect(history.body.messages.map((m: { contents: string }) => m.contents)).toEqual(['marker']);
    const info = await api(c.router.url, 'GET', '/groups/ws-typing', alice);
    expect(info.body.lastMsgId).toBe(1);
  });

  it('announces presence and lists who is connected', async () => {
    await makeGroup(c, 'ws-presence', 'alice', ['bob']);
    const [alice, bob] = await Promise.all([c.token('alice'), c.token('bob')]);
    const a = track(await subscribe(c, 'ws-presence', alice));
    const b = track(await subscribe(c, 'ws-presence', bob));
    const online = await readUntil(a.ws, (e) => e.type === 'presence');
    expect(online.at(-1)).toMatchObject({
      type: 'presence',
      groupId: 'ws-presence',
      userId: 'bob',
      status: 'online',
    });
    const p = await api(c.router.url, 'GET', '/groups/ws-presence/presence', alice);
    expect(p.status).toBe(200);
    expect(p.body.presence.map((x: { userId: string }) => x.userId).sort()).toEqual(['alice', 'bob']);
    b.ws.ws.close(1000);
    await b.ws.waitClosed();
    const offline = await readUntil(a.ws, (e) => e.type === 'presence');
    expect(offline.at(-1)).toMatchObject({ type: 'presence', userId: 'bob', status: 'offline' });
    const after = await api(c.router.url, 'GET', '/groups/ws-presence/presence', alice);
    expect(after.body.presence.map((x: { userId: string }) => x.userId)).toEqual(['alice']);
  });

  it('ends the sockets of a member who leaves or is removed (error event, close 1008)', async () => {
    await makeGroup(c, 'ws-leave', 'alice', ['bob', 'carol']);
    const [alice, bob, carol] = await Promise.all([c.token('alice'), c.token('bob'), c.token('carol')]);
    const a = track(await subscribe(c, 'ws-leave', alice));
    const b = track(await subscribe(c, 'ws-leave', bob));
    const k = track(await subscribe(c, 'ws-leave', carol));
    expect((await api(c.router.url, 'DELETE', '/groups/ws-leave/members/bob', bob)).status).toBe(204);
    const bobEvents = await readUntil(b.ws, (e) => e.type === 'error');
    expect(bobEvents.at(-1)).toMatchObject({ type: 'error', code: 'forbidden' });
    expect((await b.ws.waitClosed(10_000)).code).toBe(1008);
    // The owner removes carol.
    expect((await api(c.router.url, 'DELETE', '/groups/ws-leave/members/carol', alice)).status).toBe(204);
    expect((await k.ws.waitClosed(10_000)).code).toBe(1008);
    // The remaining member still gets messages; the former ones got nothing more.
    await api(c.router.url, 'POST', '/groups/ws-leave/messages', alice, {
      contents: 'after',
      clientMsgId: 'x1',
    });
    const [m] = await readMessages(a.ws, 1);
    expect(m).toMatchObject({ contents: 'after', msgId: 1 });
  });

  it("passes the shard's refusals through: 403 non-member, 401 no token, 404 unknown group", async () => {
    await makeGroup(c, 'ws-refuse', 'alice', []);
    const mallory = await c.token('mallory');
    const forbidden = await failedUpgrade(wsUrl(c, 'ws-refuse', mallory, c.router.url));
    expect(forbidden.status).toBe(403);
    expect(JSON.parse(forbidden.text).error.code).toBe('forbidden');
    expect((await failedUpgrade(wsUrl(c, 'ws-refuse', undefined, c.router.url))).status).toBe(401);
    expect((await failedUpgrade(wsUrl(c, 'ws-no-such-group', mallory, c.router.url))).status).toBe(404);
  });

  it('answers malformed frames with an error event and keeps the connection', async () => {
    await makeGroup(c, 'ws-bad', 'alice', []);
    const { ws } = track(await subscribe(c, 'ws-bad', await c.token('alice')));
    for (const bad of ['{not json', '[1,2]', '"str"', 'null', '{"type":"dance"}']) {
      ws.send(bad);
      const e = await ws.nextJson<Ev>();
      expect(e.type).toBe('error');
      expect(typeof e.code).toBe('string');
    }
    ws.send(JSON.stringify({ type: 'message', contents: '', clientMsgId: 'x' }));
    expect(await ws.nextJson<Ev>()).toMatchObject({ type: 'error', code: 'bad_field' });
    ws.send(JSON.stringify({ type: 'message', contents: 'still here', clientMsgId: 'ok1' }));
    const seen = await readUntil(ws, (e) => e.type !== 'message', 10, 10_000);
    expect(seen.at(-1)).toMatchObject({ type: 'ack', clientMsgId: 'ok1', msgId: 1 });
    expect(ws.closeInfo).toBeUndefined();
  });

  it('closes with 1009 when a frame exceeds wsMaxPayloadBytes', async () => {
    await makeGroup(c, 'ws-big', 'alice', []);
    const { ws } = track(await subscribe(c, 'ws-big', await c.token('alice')));
    ws.send(JSON.stringify({ type: 'message', contents: 'x'.repeat(5000), clientMsgId: 'big' }));
    const closed = await ws.waitClosed(10_000);
    expect(closed.code).toBe(1009);
  });
});

describe('group WebSocket limits and shutdown (1 shard)', () => {
  let c: Cluster;
  const clients: WsClient[] = [];

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: 1,
      config: {
        shard: {
          limits: {
            wsMessagesPerSecond: 0.5,
            wsBurst: 3,
            wsSendQueueBytes: 1024,
            maxMessageBytes: 32768,
            // The slow-consumer test posts as one user as fast as it can until the shard
            // gives up on the consumer: the per-user message limit is not what it tests.
            userMessagesPerSecond: 100000,
            userMessageBurst: 100000,
          },
        },
      },
    });
  });
  afterAll(async () => {
    for (const w of clients) w.terminate();
    await defaultRegistry.cleanup();
  });

  it('sends an error event and closes with 4029 past the rate limit', async () => {
    await makeGroup(c, 'rl', 'alice', []);
    const { ws } = await subscribe(c, 'rl', await c.token('alice'));
    clients.push(ws);
    for (let i = 0; i < 10; i++) ws.send(JSON.stringify({ type: 'typing' }));
    const seen = await readUntil(ws, (e) => e.type === 'error' && e.code === 'rate_limited', 20, 10_000);
    expect(seen.at(-1)).toMatchObject({ type: 'error', code: 'rate_limited' });
    expect((await ws.waitClosed(10_000)).code).toBe(4029);
  });

  it('closes a consumer that stops reading with 4008 while the others get everything', async () => {
    await makeGroup(c, 'slow', 'alice', ['bob', 'carol']);
    const [alice, bob, carol] = await Promise.all([c.token('alice'), c.token('bob'), c.token('carol')]);
    const fast = await subscribe(c, 'slow', carol);
    const slow = await subscribe(c, 'slow', bob);
    clients.push(fast.ws, slow.ws);
    await readUntil(fast.ws, (e) => e.type === 'presence' && e.userId === 'bob');
    const before = await shardMetric(c, 0, 'shardchat_shard_slow_consumers_total');
    // biome-ignore lint/suspicious/noExplicitAny: the ws client's underlying socket
    const socket = (slow.ws.ws as any)._socket as import('node:net').Socket;
    socket.pause();

    const fastGot: Ev[] = [];
    let fastDone = false;
    const reading = (async () => {
      // Read concurrently so the healthy subscriber never falls behind.
      for (let i = 0; i < 100_000 && !fastDone; i++) {
        const e = await fast.ws.nextJson<Ev>(500).catch(() => undefined);
        if (e?.type === 'message') fastGot.push(e);
      }
    })();

    const body = 'y'.repeat(30_000);
    let posted = 0;
    let closedBySlow = false;
    const deadline = Date.now() + 60_000;
    for (let round = 0; round < 400 && Date.now() < deadline; round++) {
      const batch = await Promise.all(
        Array.from({ length: 4 }, () => {
          const id = `p${posted++}`;
          return api(c.router.url, 'POST', '/groups/slow/messages', alice, {
            contents: `${id} ${body}`,
            clientMsgId: id,
          });
        }),
      );
      for (const r of batch) expect(r.status).toBe(201);
      if (round % 5 === 4 && (await shardMetric(c, 0, 'shardchat_shard_slow_consumers_total')) > before) {
        closedBySlow = true;
        break;
      }
    }
    expect(closedBySlow, `slow consumer not detected after ${posted} messages`).toBe(true);
    expect(await shardMetric(c, 0, 'shardchat_shard_slow_consumers_total')).toBe(before + 1);
    // Reading again, the slow client finds what was queued (bounded) and then the 4008 close.
    socket.resume();
    const closed = await slow.ws.waitClosed(15_000);
    expect(closed.code).toBe(4008);
    // The healthy subscriber got every message, in order, once.
    const deadline2 = Date.now() + 30_000;
    while (fastGot.length < posted && Date.now() < deadline2) await new Promise((r) => setTimeout(r, 50));
    fastDone = true;
    expect(fastGot.map((m) => m.msgId)).toEqual(Array.from({ length: posted }, (_, i) => i + 1));
    expect(fast.ws.closeInfo).toBeUndefined();
    await reading;
    // The closed connection is gone from presence.
    const p = await api(c.router.url, 'GET', '/groups/slow/presence', carol);
    expect(p.body.presence.map((x: { userId: string }) => x.userId)).toEqual(['carol']);
  }, 120_000);

  it('closes group sockets with 1001 when the shard gets SIGTERM', async () => {
    await makeGroup(c, 'bye', 'alice', []);
    const { ws } = await subscribe(c, 'bye', await c.token('alice'));
    clients.push(ws);
    const shard = c.shards[0];
    shard?.proc.signal('SIGTERM');
    const closed = await ws.waitClosed(15_000);
    expect(closed.code).toBe(1001);
    const exit = await shard?.proc.waitExit(15_000);
    expect(exit?.code).toBe(0);
  }, 40_000);
});
