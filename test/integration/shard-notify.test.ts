/**
 * Offline notifications (docs/architecture.md section 6) on real processes, with a real HTTP server in
 * the test process as the webhook: each member's session host notifies the members with
 * no live connection anywhere (no inbox, no group WebSocket; not the author), in batches;
 * a full queue and a failing webhook are counted as drops; an empty webhookUrl turns it
 * all off; a stopping shard flushes what is queued.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
import { Notifier, PREVIEW_CHARS, preview } from '../../shard/delivery/notifier.js';
import { ShardMetrics } from '../../shard/metrics.js';
import type { Store } from '../../shard/storage/store.js';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { metricValue, WsClient } from '../helpers/http.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import { loadShardFunction } from '../helpers/shardchat.js';

useProcessCleanup();

interface Notification {
  userId: string;
  groupId: string;
  msgId: number;
  userIdFrom: string;
  preview: string;
  ts: number;
}

type Mode = 'ok' | 'fail' | 'hang';

/** A webhook that records every POST; `mode` decides how it answers. */
class Webhook {
  readonly posts: { notifications: Notification[] }[] = [];
  readonly contentTypes: string[] = [];
  mode: Mode = 'ok';
  requests = 0;
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();
  url = '';

  constructor() {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.requests++;
        if (this.mode === 'hang') return;
        if (this.mode === 'fail') {
          res.writeHead(500).end('no');
          return;
        }
        this.contentTypes.push(String(req.headers['content-type']));
        this.posts.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        res.writeHead(204).end();
      });
    });
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  get all(): Notification[] {
    return this.posts.flatMap((p) => p.notifications);
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
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

async function post(c: Cluster, groupId: string, user: string, contents: string, clientMsgId: string) {
  const res = await api(c.router.url, 'POST', `/groups/${groupId}/messages`, await c.token(user), {
    contents,
    clientMsgId,
  });
  expect(res.status).toBe(201);
  return res.body as { msgId: number; ts: number };
}

/** A metric summed over every running shard of the cluster. */
async function metric(c: Cluster, name: string): Promise<number> {
  let sum = 0;
  for (const s of c.shards) {
    if (!s.proc.running) continue;
    const res = await fetch(`${s.adminUrl}/metrics`);
    sum += metricValue(await res.text(), name) ?? 0;
  }
  return sum;
}

async function subscribe(c: Cluster, groupId: string, user: string): Promise<WsClient> {
  const ws = new WsClient(`${c.router.wsUrl}/groups/${groupId}/ws?token=${await c.token(user)}`);
  await ws.opened;
  expect((await ws.nextJson<{ type: string }>()).type).toBe('hello');
  return ws;
}

const SENT = 'shardchat_shard_notifications_sent_total';
const DROPPED = 'shardchat_shard_notifications_dropped_total';

describe('offline notifications to a webhook', () => {
  const hook = new Webhook();
  let c: Cluster;
  const clients: WsClient[] = [];

  beforeAll(async () => {
    await hook.start();
    c = await startCluster(await defaultRegistry.tempDir(), {
      config: {
        shard: { notifications: { webhookUrl: hook.url, batchMs: 50, maxBatch: 3, timeoutMs: 2000 } },
      },
    });
  });
  afterAll(async () => {
    for (const w of clients) w.terminate();
    await defaultRegistry.cleanup();
    await hook.stop();
  });

  it('notifies offline members with the message fields, not online members nor the author', async () => {
    await makeGroup(c, 'notify', 'alice', ['bob', 'carol', 'dave']);
    const bobWs = await subscribe(c, 'notify', 'bob');
    clients.push(bobWs);
    const sentBefore = await metric(c, SENT);
    const contents = `${'é'.repeat(100)}${'z'.repeat(100)}`;
    const m1 = await post(c, 'notify', 'alice', contents, 'n1');
    const m2 = await post(c, 'notify', 'carol', 'from carol', 'n2');
    // m1: carol and dave; m2: alice and dave (bob is online, authors are skipped).
    await waitFor(() => hook.all.length >= 4, { timeoutMs: 15_000, what: 'four notifications' });
    const byMsg = (id: number) =>
      hook.all
        .filter((n) => n.groupId === 'notify' && n.msgId === id)
        .map((n) => n.userId)
        .sort();
    expect(byMsg(m1.msgId)).toEqual(['carol', 'dave']);
    expect(byMsg(m2.msgId)).toEqual(['alice', 'dave']);
    const n = hook.all.find((x) => x.msgId === m1.msgId && x.userId === 'carol');
    expect(n).toEqual({
      userId: 'carol',
      groupId: 'notify',
      msgId: m1.msgId,
      userIdFrom: 'alice',
      preview: contents.slice(0, 140),
      ts: m1.ts,
    });
    expect([...(n?.preview ?? '')]).toHaveLength(140);
    expect(hook.contentTypes.every((t) => t.startsWith('application/json'))).toBe(true);
    for (const p of hook.posts) expect(p.notifications.length).toBeLessThanOrEqual(3);
    await waitFor(async () => (await metric(c, SENT)) - sentBefore >= 4, {
      timeoutMs: 10_000,
      what: 'the sent counter',
    });
    expect((await metric(c, SENT)) - sentBefore).toBe(4);
  });

  it('does not notify a member whose inbox is open on their session host, another shard than the group', async () => {
    const { ShardFunction, DEFAULT_SHARD_SPEC } = await loadShardFunction();
    const sf = new ShardFunction(DEFAULT_SHARD_SPEC);
    const shardOf = (id: string) => sf.shardOfKey(id, 3);
    // Members whose session hosts differ from the group's shard.
    const group = 'inboxnote';
    const [ivy, jack] = ['ivy', 'jack', 'kim', 'liam', 'mia', 'noah', 'olga', 'pete'].filter(
      (u) => shardOf(u) !== shardOf(group),
    ) as [string, string];
    await makeGroup(c, group, 'alice', [ivy, jack]);
    const inbox = new WsClient(`${c.router.wsUrl}/users/${ivy}/ws?token=${await c.token(ivy)}`);
    clients.push(inbox);
    await inbox.opened;
    expect((await inbox.nextJson<{ type: string }>()).type).toBe('hello');
    const m = await post(c, group, 'alice', 'are you there?', 'in1');
    // ivy gets the message on her inbox; jack, with no connection, is notified; ivy never.
    const got = await inbox.nextJson<{ type: string; msgId?: number }>(10_000);
    expect(got).toMatchObject({ type: 'message', msgId: m.msgId });
    await waitFor(() => hook.all.some((n) => n.groupId === group && n.userId === jack), {
      timeoutMs: 15_000,
      what: `the notification of ${jack}`,
    });
    const m2 = await post(c, group, 'alice', 'and now?', 'in2');
    await waitFor(() => hook.all.some((n) => n.groupId === group && n.msgId === m2.msgId), {
      timeoutMs: 15_000,
      what: 'the notification of the second message',
    });
    expect(
      hook.all
        .filter((n) => n.groupId === group)
        .map((n) => `${n.msgId}:${n.userId}`)
        .sort(),
    ).toEqual([`${m.msgId}:${jack}`, `${m2.msgId}:${jack}`].sort());
  });

  it('sends in batches of maxBatch at most and notifies each offline member once per message', async () => {
    await makeGroup(c, 'batch', 'erin', ['f1', 'f2', 'f3', 'f4']);
    const start = hook.posts.length;
    const ids: number[] = [];
    for (let i = 0; i < 5; i++) ids.push((await post(c, 'batch', 'erin', `m${i}`, `b${i}`)).msgId);
    const mine = () =>
      hook.posts.slice(start).flatMap((p) => p.notifications.filter((n) => n.groupId === 'batch'));
    await waitFor(() => mine().length >= 20, { timeoutMs: 20_000, what: 'twenty notifications' });
    const keys = mine().map((n) => `${n.msgId}:${n.userId}`);
    expect(new Set(keys).size).toBe(20);
    for (const id of ids) for (const u of ['f1', 'f2', 'f3', 'f4']) expect(keys).toContain(`${id}:${u}`);
    for (const p of hook.posts.slice(start)) expect(p.notifications.length).toBeLessThanOrEqual(3);
  });

  it('counts a batch the webhook refuses as dropped, after one retry at most', async () => {
    await makeGroup(c, 'failing', 'gina', ['hank']);
    const droppedBefore = await metric(c, DROPPED);
    const requestsBefore = hook.requests;
    hook.mode = 'fail';
    try {
      await post(c, 'failing', 'gina', 'nobody hears this', 'f1');
      await waitFor(async () => (await metric(c, DROPPED)) > droppedBefore, {
        timeoutMs: 15_000,
        what: 'the dropped counter',
      });
      expect((await metric(c, DROPPED)) - droppedBefore).toBe(1);
      // One attempt and one retry, no more.
      expect(hook.requests - requestsBefore).toBe(2);
    } finally {
      hook.mode = 'ok';
    }
    // The webhook is back: later notifications go through.
    const m = await post(c, 'failing', 'gina', 'now it works', 'f2');
    await waitFor(() => hook.all.some((n) => n.groupId === 'failing' && n.msgId === m.msgId), {
      timeoutMs: 15_000,
      what: 'a notification after recovery',
    });
  });
});

describe('a notification queue that fills up', () => {
  const hook = new Webhook();
  let c: Cluster;

  beforeAll(async () => {
    await hook.start();
    hook.mode = 'hang';
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: 1,
      config: {
        shard: {
          notifications: { webhookUrl: hook.url, batchMs: 50, maxBatch: 1, queueSize: 2, timeoutMs: 1000 },
        },
      },
    });
  });
  afterAll(async () => {
    await defaultRegistry.cleanup();
    await hook.stop();
  });

  it('drops and counts what does not fit while the webhook never answers', async () => {
    const members = Array.from({ length: 10 }, (_, i) => `q${i}`);
    await makeGroup(c, 'full', 'owner', members);
    const before = await metric(c, DROPPED);
    await post(c, 'full', 'owner', 'to ten offline members', 'x1');
    // Ten notifications, a queue of two (one more may be in flight): seven at least drop at once.
    await waitFor(async () => (await metric(c, DROPPED)) - before >= 7, {
      timeoutMs: 10_000,
      what: 'dropped notifications',
    });
    expect(await metric(c, SENT)).toBe(0);
    // The hung webhook gets one request at a time, never a storm.
    expect(hook.requests).toBeLessThanOrEqual(4);
    // Every notification ends up dropped (timeouts included), none sent.
    await waitFor(async () => (await metric(c, DROPPED)) - before === 10, {
      timeoutMs: 20_000,
      what: 'all ten counted as dropped',
    });
    expect(await metric(c, SENT)).toBe(0);
  }, 40_000);
});

describe('notifications turned off', () => {
  const hook = new Webhook();
  let c: Cluster;

  beforeAll(async () => {
    await hook.start();
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: 1,
      config: { shard: { notifications: { webhookUrl: '', batchMs: 10 } } },
    });
  });
  afterAll(async () => {
    await defaultRegistry.cleanup();
    await hook.stop();
  });

  it('sends nothing and counts nothing when webhookUrl is empty', async () => {
    await makeGroup(c, 'quiet', 'owner', ['r1', 'r2']);
    for (let i = 0; i < 3; i++) await post(c, 'quiet', 'owner', `m${i}`, `q${i}`);
    // Give a would-be batch (batchMs 10) ample time to leave.
    await new Promise((r) => setTimeout(r, 300));
    expect(await metric(c, SENT)).toBe(0);
    expect(await metric(c, DROPPED)).toBe(0);
    expect(hook.requests).toBe(0);
  });
});

describe('a stopping shard', () => {
  const hook = new Webhook();
  let c: Cluster;

  beforeAll(async () => {
    await hook.start();
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: 1,
      // A long batch interval: the second batch would wait a minute, so only stop() sends it.
      config: { shard: { notifications: { webhookUrl: hook.url, batchMs: 60_000, timeoutMs: 2000 } } },
    });
  });
  afterAll(async () => {
    await defaultRegistry.cleanup();
    await hook.stop();
  });

  it('flushes queued notifications on SIGTERM', async () => {
    await makeGroup(c, 'flush', 'owner', ['s1']);
    const m1 = await post(c, 'flush', 'owner', 'first', 'fl1');
    await waitFor(() => hook.all.some((n) => n.msgId === m1.msgId), {
      timeoutMs: 10_000,
      what: 'first batch',
    });
    const m2 = await post(c, 'flush', 'owner', 'second', 'fl2');
    const shard = c.shards[0];
    shard?.proc.signal('SIGTERM');
    const exit = await shard?.proc.waitExit(15_000);
    expect(exit?.code).toBe(0);
    expect(hook.all.filter((n) => n.groupId === 'flush').map((n) => [n.msgId, n.userId])).toEqual([
      [m1.msgId, 's1'],
      [m2.msgId, 's1'],
    ]);
  }, 40_000);
});

describe('the notifier in process (queue bound, preview)', () => {
  it('bounds its queue: what does not fit is dropped and counted, and stop() drops what it cannot send', async () => {
    const cfg = parseConfig({
      shard: {
        notifications: {
          webhookUrl: 'http://127.0.0.1:9/never',
          queueSize: 1000,
          batchMs: 60_000,
          timeoutMs: 500,
        },
      },
    });
    const store = { counts: () => ({ groups: 0, members: 0 }), bytes: () => 0 } as unknown as Store;
    const metrics = new ShardMetrics(0, store);
    const notifier = new Notifier({ cfg, log: createLogger('test', 'silent'), metrics });
    const users = Array.from({ length: 1050 }, (_, i) => `u${i}`);
    notifier.offline(users, {
      groupId: 'huge',
      msgId: 1,
      prevMsgId: 0,
      epoch: 'e',
      ts: 1,
      userId: 'author',
      contents: 'hi',
      clientMsgId: 'c',
    });
    const droppedNow = async () => (await metrics.notificationsDropped.get()).values[0]?.value ?? 0;
    // The 50 past the queue's 1,000 are dropped at once.
    expect(await droppedNow()).toBe(50);
    expect(notifier.queued).toBeLessThanOrEqual(1000);
    // Stopping with an unreachable webhook is bounded; every queued notification ends up dropped.
    await notifier.stop();
    expect(notifier.queued).toBe(0);
    expect(await droppedNow()).toBe(1050);
    expect((await metrics.notificationsSent.get()).values[0]?.value ?? 0).toBe(0);
  });

  it('previews the first 140 characters without splitting a character', () => {
    expect(preview('short')).toBe('short');
    const emoji = '😀'.repeat(200);
    expect([...preview(emoji)]).toHaveLength(PREVIEW_CHARS);
    expect(preview(emoji)).toBe('😀'.repeat(140));
    expect(preview('a'.repeat(141))).toBe('a'.repeat(140));
  });
});
