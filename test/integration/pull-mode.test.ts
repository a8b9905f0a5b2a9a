/**
 * Push or pull (docs/delivery-protocol.md section 7) on real processes: 3 shards and a
 * router, with low thresholds (4 members, enter at 8 msg/s, leave below 2 msg/s after
 * 1 s, a tick per 100 ms at most).
 *
 * A group on shard 0 with members whose session hosts are shards 0, 1 and 2 is posted to
 * slowly (push), then fast by several posters (pull: visible in GET /groups/{id} and in
 * the hello of a new group WebSocket), then the posters stop (back to push) and a few
 * more are posted slowly. Raw sockets (a group WebSocket, an inbox on shard 1) see ticks
 * instead of messages while in pull mode, each switch announced by a tick with the mode,
 * and the first message pushed after it follows the push tick. The SDK's GroupConnection
 * and two InboxConnections (hosts 0 and 2) deliver every message once and in order across
 * both switches, and report them as `mode` events. No session host repaired anything:
 * what was not pushed is never a gap. Ticks stay within one per tickMs.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatApi } from '../../client/api.js';
import { GroupConnection } from '../../client/group-connection.js';
import { InboxConnection } from '../../client/inbox-connection.js';
import type { DeliveryMode, Message } from '../../client/types.js';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, REPO_ROOT, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  type Ev,
  Inbox,
  idOn,
  makeGroup,
  metricOn,
  metricSum,
  shardOfFn,
  tokenCache,
} from './inbox-helpers.js';

useProcessCleanup();

const S = 3;
const PULL = { minMembers: 4, enterRate: 8, exitRate: 2, windowMs: 1000, holdMs: 1000, tickMs: 100 };
const RING = 64;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Walks the events of one socket in order: a `message` never comes while the last tick
 * said pull, the first message after a tick follows it, and every tick moves forward.
 * Returns the modes the ticks switched to.
 */
function checkSocket(events: Ev[], groupId: string, what: string): DeliveryMode[] {
  let mode: DeliveryMode = 'push';
  let head = -1;
  const switches: DeliveryMode[] = [];
  for (const e of events) {
    if (e.groupId !== groupId) continue;
    if (e.type === 'tick') {
      expect(e.lastMsgId as number, `${what}: ticks move forward`).toBeGreaterThanOrEqual(head);
      head = e.lastMsgId as number;
      if (e.mode !== mode) switches.push(e.mode as DeliveryMode);
      mode = e.mode as DeliveryMode;
    } else if (e.type === 'message') {
      expect(mode, `${what}: message ${e.msgId} pushed in pull mode`).toBe('push');
      if (head >= 0) expect(e.msgId, `${what}: the first message after a tick follows it`).toBe(head + 1);
      head = e.msgId as number;
    }
  }
  return switches;
}

/** Every message of a group read straight from the shard's SQLite file (in a child process). */
async function sqliteMessages(c: Cluster, shard: number, groupId: string): Promise<Message[]> {
  const script = `
    const Database = require('better-sqlite3');
    const db = new Database(process.argv[1], { readonly: true, fileMustExist: true });
    const rows = db
      .prepare(
        'SELECT group_id AS groupId, msg_id AS msgId, prev_msg_id AS prevMsgId, epoch, ts, user_id AS userId,' +
          ' contents, client_msg_id AS clientMsgId FROM messages WHERE group_id = ? ORDER BY msg_id',
      )
      .all(process.argv[2]);
    db.close();
    process.stdout.write(JSON.stringify(rows));`;
  const file = path.join(c.dataDir, `shard-${shard}.sqlite`);
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', script, file, groupId], {
    cwd: REPO_ROOT,
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(stdout) as Message[];
}

describe('push or pull (3 shards, low thresholds)', () => {
  let c: Cluster;
  let shardOf: (id: string) => number;
  const tok = tokenCache(() => c);
  const closers: (() => void | Promise<void>)[] = [];

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: S,
      config: { shard: { delivery: { pull: PULL, recent: { messagesPerGroup: RING } } } },
    });
    shardOf = await shardOfFn(S);
  }, 60_000);
  afterAll(async () => {
    for (const close of closers) await close();
    await defaultRegistry.cleanup();
  });

  it('a group switches to pull when large and active and back when quiet; every client sees every message once, in order', async () => {
    const g = idOn(shardOf, 'stadium', 0);
    const poster = idOn(shardOf, 'caster', 1);
    const amy = idOn(shardOf, 'amy', 1); // raw inbox on host 1
    const bea = idOn(shardOf, 'bea', 2); // InboxConnection on host 2
    const dan = idOn(shardOf, 'dan', 0); // InboxConnection on host 0 (the group's own shard)
    const cal = idOn(shardOf, 'cal', 0); // GroupConnection and a raw group WebSocket
    await makeGroup(c, g, poster, [amy, bea, dan, cal]);
    const mode = async () =>
      (await api(c.router.url, 'GET', `/groups/${g}`, await tok(poster))).body.mode as DeliveryMode;
    let posted = 0;
    const post = async (tag: string) => {
      const n = posted++;
      const r = await api(c.router.url, 'POST', `/groups/${g}/messages`, await tok(poster), {
        contents: `${tag} ${n}`,
        clientMsgId: `${tag}-${n}`,
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    };

    // --- the clients ---
    const rawInbox = await Inbox.open(c, amy, await tok(amy));
    closers.push(() => rawInbox.close());
    const groupWsUrl = async (u: string) =>
      `${c.router.wsUrl}/groups/${g}/ws?token=${encodeURIComponent(await tok(u))}`;
    const rawGroup = await Inbox.openUrl(await groupWsUrl(cal));
    closers.push(() => rawGroup.close());
    await rawGroup.until((e) => e.some((x) => x.type === 'hello'), 10_000, 'hello');
    expect(rawGroup.events[0]).toMatchObject({ type: 'hello', mode: 'push' });
    const sdk: {
      name: string;
      received: Message[];
      modes: DeliveryMode[];
      now: () => DeliveryMode | undefined;
    }[] = [];
    const gc = new GroupConnection({
      api: new ChatApi({ baseUrl: c.router.url, token: await tok(cal) }),
      groupId: g,
      WebSocket,
      backoff: { minMs: 50, maxMs: 500, factor: 2 },
    });
    closers.push(() => gc.close());
    sdk.push({ name: 'GroupConnection', received: [], modes: [], now: () => gc.mode });
    gc.on('message', (m) => sdk[0]?.received.push(m));
    gc.on('mode', (m) => sdk[0]?.modes.push(m));
    const inboxes: InboxConnection[] = [];
    for (const u of [bea, dan]) {
      const ic = new InboxConnection({
        api: new ChatApi({ baseUrl: c.router.url, token: await tok(u) }),
        userId: u,
        groups: [g],
        WebSocket,
        backoff: { minMs: 50, maxMs: 500, factor: 2 },
      });
      closers.push(() => ic.close());
      inboxes.push(ic);
      const rec = {
        name: `InboxConnection ${u}`,
        received: [] as Message[],
        modes: [] as DeliveryMode[],
        now: () => ic.deliveryMode(g),
      };
      sdk.push(rec);
      ic.on('message', (m) => rec.received.push(m));
      ic.on('mode', (_g, m) => rec.modes.push(m));
    }
    await waitFor(() => gc.state === 'open', { what: 'the group connection open' });
    await waitFor(() => inboxes.every((ic) => ic.state === 'open'), { what: 'the inboxes open' });

    // --- push: slowly (at most ~3 msg/s, below enterRate whatever the machine does) ---
    for (let i = 0; i < 6; i++) {
      await post('slow');
      await sleep(300);
    }
    expect(await mode()).toBe('push');

    // --- pull: several posters as fast as they get answers ---
    const started = Date.now();
    let stop = false;
    const posters = Array.from({ length: 4 }, async () => {
      while (!stop && posted < 1000) {
        await post('fast');
        await sleep(10);
      }
    });
    await waitFor(async () => (await mode()) === 'pull', { what: 'pull mode', timeoutMs: 20_000 });
    // A group WebSocket opened now says so in its hello.
    const lateGroup = await Inbox.openUrl(await groupWsUrl(cal));
    closers.push(() => lateGroup.close());
    await lateGroup.until((e) => e.some((x) => x.type === 'hello'), 10_000, 'hello');
    const hello = lateGroup.events[0] as Ev;
    expect(hello).toMatchObject({ type: 'hello', mode: 'pull' });
    await waitFor(() => sdk.every((s) => s.now() === 'pull'), { what: 'every SDK client in pull mode' });
    // Many messages in pull mode: read by the clients after ticks, one read at a time.
    const inPull = posted;
    await waitFor(() => posted >= inPull + 150, { what: '150 more messages', timeoutMs: 30_000 });
    stop = true;
    await Promise.all(posters);

    // --- back to push once quiet ---
    await waitFor(async () => (await mode()) === 'push', { what: 'push mode again', timeoutMs: 20_000 });
    const pullMs = Date.now() - started;
    for (let i = 0; i < 5; i++) {
      await post('after');
      await sleep(300);
    }
    expect(await mode()).toBe('push');
    const last = (await api(c.router.url, 'GET', `/groups/${g}`, await tok(poster))).body.lastMsgId as number;
    expect(last).toBe(posted);

    // --- every client: 1..last once, in order ---
    await waitFor(() => sdk.every((s) => s.received.length >= last), {
      what: `every SDK client at ${last} (${sdk.map((s) => `${s.name}: ${s.received.length}`).join(', ')})`,
      timeoutMs: 30_000,
    });
    await sleep(300);
    for (const s of sdk) {
      expect(
        s.received.map((m) => m.msgId),
        s.name,
      ).toEqual(Array.from({ length: last }, (_, i) => i + 1));
      for (const m of s.received) expect(m.prevMsgId).toBe(m.msgId - 1);
      // The switches, as events: pull first, push last, alternating.
      expect(s.modes[0], s.name).toBe('pull');
      expect(s.modes.at(-1), s.name).toBe('push');
      for (const [i, m] of s.modes.entries()) expect(m).toBe(i % 2 === 0 ? 'pull' : 'push');
    }
    // --- the raw sockets: ticks instead of messages in pull mode, the switches announced ---
    await rawInbox.until(
      (e) => e.some((x) => x.type === 'message' && x.msgId === last),
      20_000,
      'last message',
    );
    await rawGroup.until(
      (e) => e.some((x) => x.type === 'message' && x.msgId === last),
      20_000,
      'last message',
    );
    for (const [what, box] of [
      ['raw inbox (host 1)', rawInbox],
      ['raw group WebSocket', rawGroup],
    ] as const) {
      const switches = checkSocket(box.events, g, what);
      expect(switches[0], what).toBe('pull');
      expect(switches.at(-1), what).toBe('push');
      const messages = box.events.filter((e) => e.type === 'message' && e.groupId === g).length;
      expect(messages, `${what}: most messages were not pushed`).toBeLessThan(last);
    }
    // --- nothing repaired; ticks bounded; the reads served from memory ---
    expect((await metricSum(c, 'shardchat_shard_gap_repairs_total')).reduce((a, b) => a + b, 0)).toBe(0);
    const pulls = await metricOn(c, 0, 'shardchat_shard_mode_switches_total', { mode: 'pull' });
    expect(pulls).toBeGreaterThanOrEqual(1);
    expect(await metricOn(c, 0, 'shardchat_shard_mode_switches_total', { mode: 'push' })).toBe(pulls);
    expect(await metricOn(c, 0, 'shardchat_shard_pull_groups')).toBe(0);
    const ticks = await metricOn(c, 0, 'shardchat_shard_ticks_total');
    expect(ticks).toBeGreaterThan(0);
    expect(ticks).toBeLessThanOrEqual(Math.ceil(pullMs / PULL.tickMs) + 2 * pulls + 2);
    expect(await metricOn(c, 0, 'shardchat_shard_history_reads_total', { source: 'memory' })).toBeGreaterThan(
      0,
    );
    console.log(
      `pull mode: ${last} messages, ${pulls} switch(es) to pull, ${ticks} ticks in ${pullMs} ms; raw inbox got ${
        rawInbox.events.filter((e) => e.type === 'message').length
      } messages pushed`,
    );
    for (const close of closers.splice(0)) await close();
  }, 120_000);

  it('the memory ring answers ?after= exactly as SQLite does, also after a restart empties it', async () => {
    const h = idOn(shardOf, 'archive', 1);
    const owner = idOn(shardOf, 'olga', 2);
    await makeGroup(c, h, owner, []);
    const t = await tok(owner);
    for (let i = 0; i < 150; i++) {
      const r = await api(c.router.url, 'POST', `/groups/${h}/messages`, t, {
        contents: `m ${i}`,
        clientMsgId: `r-${i}`,
      });
      expect(r.status).toBe(201);
    }
    const reads = async () => ({
      memory: await metricOn(c, 1, 'shardchat_shard_history_reads_total', { source: 'memory' }),
      store: await metricOn(c, 1, 'shardchat_shard_history_reads_total', { source: 'store' }),
    });
    /** GET ?after= for every (after, limit) against the SQLite rows; returns how many were from memory. */
    const compare = async (afters: number[]) => {
      const rows = await sqliteMessages(c, 1, h);
      const before = await reads();
      for (const after of afters)
        for (const limit of [1, 10, RING, 200]) {
          const r = await api(c.router.url, 'GET', `/groups/${h}/messages?after=${after}&limit=${limit}`, t);
          expect(r.status).toBe(200);
          expect(r.body.messages, `after=${after} limit=${limit}`).toEqual(
            rows.filter((m) => m.msgId > after).slice(0, limit),
          );
        }
      const now = await reads();
      return { memory: now.memory - before.memory, store: now.store - before.store, rows: rows.length };
    };
    // The ring holds 87..150: after >= 86 from memory, older ranges from SQLite.
    const first = await compare([0, 1, 50, 85, 86, 87, 100, 140, 149, 150, 151]);
    expect(first.rows).toBe(150);
    expect(first).toMatchObject({ memory: 7 * 4, store: 4 * 4 });

    // SIGKILL and restart: the ring is empty, every read goes to SQLite, with the same answers.
    const victim = c.shards[1];
    victim?.proc.child.kill('SIGKILL');
    await victim?.proc.waitExit(5000);
    await c.restartShard(1);
    await waitFor(async () => (await api(c.router.url, 'GET', `/groups/${h}`, t)).status === 200, {
      what: 'shard 1 back',
      timeoutMs: 20_000,
    });
    const afterRestart = await compare([0, 86, 100, 149, 150, 151]);
    expect(afterRestart).toMatchObject({ memory: 0, store: 6 * 4 });

    // New messages start a new ring: 151..155 from memory, anything before from SQLite.
    for (let i = 150; i < 155; i++)
      expect(
        (
          await api(c.router.url, 'POST', `/groups/${h}/messages`, t, {
            contents: `m ${i}`,
            clientMsgId: `r-${i}`,
          })
        ).status,
      ).toBe(201);
    const refilled = await compare([0, 149, 150, 151, 155]);
    expect(refilled).toMatchObject({ rows: 155, memory: 3 * 4, store: 2 * 4 });
  }, 90_000);

  it('concurrent long-polls on one group share one wake-up and read the new message from memory', async () => {
    const h = idOn(shardOf, 'lobby', 1);
    const owner = idOn(shardOf, 'oscar', 0);
    await makeGroup(c, h, owner, []);
    const t = await tok(owner);
    for (let i = 0; i < 3; i++)
      await api(c.router.url, 'POST', `/groups/${h}/messages`, t, {
        contents: `m ${i}`,
        clientMsgId: `w-${i}`,
      });
    const N = 40;
    const wakeups = await metricOn(c, 1, 'shardchat_shard_longpoll_wakeups_total');
    const memory = await metricOn(c, 1, 'shardchat_shard_history_reads_total', { source: 'memory' });
    const store = await metricOn(c, 1, 'shardchat_shard_history_reads_total', { source: 'store' });
    const polls = Array.from({ length: N }, () =>
      api(c.router.url, 'GET', `/groups/${h}/messages?after=3&wait=25`, t),
    );
    await waitFor(async () => (await metricOn(c, 1, 'shardchat_shard_longpoll_waiters')) === N, {
      what: `${N} long-polls waiting`,
      timeoutMs: 20_000,
    });
    const r = await api(c.router.url, 'POST', `/groups/${h}/messages`, t, {
      contents: 'wake up',
      clientMsgId: 'w-3',
    });
    expect(r.status).toBe(201);
    const answers = await Promise.all(polls);
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.body.messages.map((m: Message) => [m.msgId, m.contents])).toEqual([[4, 'wake up']]);
    }
    expect((await metricOn(c, 1, 'shardchat_shard_longpoll_wakeups_total')) - wakeups).toBe(1);
    expect(await metricOn(c, 1, 'shardchat_shard_longpoll_waiters')).toBe(0);
    // Each poll read twice (empty, then after the wake-up), all from memory.
    expect((await metricOn(c, 1, 'shardchat_shard_history_reads_total', { source: 'memory' })) - memory).toBe(
      2 * N,
    );
    expect((await metricOn(c, 1, 'shardchat_shard_history_reads_total', { source: 'store' })) - store).toBe(
      0,
    );
  }, 60_000);
});
