/**
 * InboxConnection (client/inbox-connection.ts) against the in-process fake shard playing
 * a session host (the inbox protocol of docs/delivery-protocol.md) and the groups'
 * shard at once: several groups over one socket, each in order and once, gaps repaired
 * per group without holding up the others, dedupe over reconnects, pull-mode ticks,
 * sends acknowledged per group and resent with the same clientMsgId, refusals, typing
 * and presence per group, and the fallback to group sockets while the inbox is refused
 * and back, without a duplicate or a gap across the switches.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatApi } from '../../../client/api.js';
import type { ShardChatError } from '../../../client/errors.js';
import {
  InboxConnection,
  type InboxConnectionOptions,
  type InboxStatus,
} from '../../../client/inbox-connection.js';
import type { Message } from '../../../client/types.js';
import { FakeChatServer, sleep, until } from '../../helpers/fake-chat-server.js';

const ME = 'alice';
const GROUPS = ['g1', 'g2', 'g3'];

interface Recorded {
  messages: Message[];
  states: InboxStatus[];
  errors: { e: ShardChatError; groupId?: string }[];
  typing: [string, string][];
  presence: [string, string[]][];
  resets: string[];
}

let server: FakeChatServer;
let open: InboxConnection[] = [];

beforeEach(async () => {
  server = await FakeChatServer.start();
  for (const g of GROUPS) for (const u of [ME, 'bob', 'zoe']) server.join(g, u);
});

afterEach(async () => {
  for (const c of open) c.close();
  open = [];
  await server.close();
});

function connect(
  extra: Partial<InboxConnectionOptions> = {},
  userId = ME,
): { conn: InboxConnection; rec: Recorded } {
  const api = new ChatApi({ baseUrl: server.baseUrl, token: userId });
  const conn = new InboxConnection({
    api,
    userId,
    groups: GROUPS,
    WebSocket,
    backoff: { minMs: 20, maxMs: 200, factor: 2 },
    fallbackAfterMs: 300,
    ...extra,
  });
  open.push(conn);
  const rec: Recorded = { messages: [], states: [], errors: [], typing: [], presence: [], resets: [] };
  conn.on('message', (m) => rec.messages.push(m));
  conn.on('state', (s) => rec.states.push(s));
  conn.on('error', (e, groupId) => rec.errors.push({ e, groupId }));
  conn.on('typing', (g, u) => rec.typing.push([g, u]));
  conn.on('presence', (g, p) => rec.presence.push([g, p]));
  conn.on('reset', (g) => rec.resets.push(g));
  return { conn, rec };
}

const of = (rec: Recorded, g: string) => rec.messages.filter((m) => m.groupId === g);
const ids = (ms: Message[]) => ms.map((m) => m.msgId);
const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const fill = (g: string, n: number, push = false) => {
  for (let i = 0; i < n; i++) server.append(g, 'zoe', `${g} old`, null, push);
};

/** Every group: msgIds 1..n[g] once, in order, the prevMsgId chain intact. */
function expectExactlyOnce(rec: Recorded, n: Record<string, number>): void {
  for (const [g, count] of Object.entries(n)) {
    const ms = of(rec, g);
    expect(ids(ms), g).toEqual(range(1, count));
    for (const m of ms) expect(m.prevMsgId).toBe(m.msgId - 1);
  }
}

describe('InboxConnection against a fake session host', () => {
  it('delivers the recent history of every group, then live messages of all groups over one socket, in order per group', async () => {
    fill('g1', 4);
    fill('g2', 2);
    const { conn, rec } = connect({ initialHistory: 3 });
    await until(() => of(rec, 'g1').length === 3 && of(rec, 'g2').length === 2, 'history');
    expect(conn.state).toBe('open');
    expect(conn.mode).toBe('inbox');
    expect(conn.shard).toBe(server.shardOrdinal);
    expect(ids(of(rec, 'g1'))).toEqual([2, 3, 4]);
    expect(ids(of(rec, 'g2'))).toEqual([1, 2]);
    expect(of(rec, 'g3')).toEqual([]);
    // g3 has no history to wait for: its initial read must have been answered (empty) before
    // the live messages, or the SDK rightly starts it at the latest 3 of them.
    await until(
      () => server.requests.some((u) => u.startsWith('/groups/g3/messages?') && u.includes('before=')),
      'the initial read of g3',
    );
    expect(server.inboxUpgrades).toBe(1);
    expect(server.upgrades).toBe(0);
    // Interleaved live messages of the three groups.
    for (let i = 0; i < 10; i++) for (const g of GROUPS) server.append(g, 'bob', `${g} live ${i}`);
    await until(() => rec.messages.length === 3 + 2 + 30, 'live messages');
    await sleep(50);
    expect(ids(of(rec, 'g1'))).toEqual(range(2, 14));
    expectExactlyOnce(
      { ...rec, messages: rec.messages.filter((m) => m.groupId !== 'g1') },
      { g2: 12, g3: 10 },
    );
    expect(conn.lastMsgId('g1')).toBe(14);
    expect(conn.epoch('g1')).toBe(server.group('g1').epoch);
    expect(rec.states.map((s) => [s.state, s.mode])).toEqual([['open', 'inbox']]);
    expect(rec.errors).toEqual([]);
  });

  it('a gap in one group is filled from ?after= while the other groups keep flowing', async () => {
    const { conn, rec } = connect();
    await until(() => conn.state === 'open', 'open');
    await until(
      () => GROUPS.every((g) => server.requests.some((r) => r.startsWith(`/groups/${g}/messages?after=0`))),
      'catch-up reads',
    );
    await sleep(50);
    server.holdReads.add('g1');
    server.append('g1', 'zoe', 'g1 one', null, false); // stored, never pushed
    server.append('g1', 'zoe', 'g1 two'); // pushed: a gap
    server.append('g1', 'zoe', 'g1 three'); // waits behind it
    for (let i = 0; i < 5; i++) server.append('g2', 'bob', `g2 ${i}`);
    await until(() => of(rec, 'g2').length === 5, 'g2 while g1 waits');
    expect(of(rec, 'g1')).toEqual([]);
    server.holdReads.delete('g1');
    await until(() => of(rec, 'g1').length === 3, 'g1 after the repair');
    await sleep(50);
    expectExactlyOnce(rec, { g1: 3, g2: 5, g3: 0 });
    expect(server.requests).toContain('/groups/g1/messages?after=0&limit=100');
  });

  it('drops duplicates and catches every group up after a reconnect, without delivering anything twice', async () => {
    const { conn, rec } = connect();
    await until(() => conn.state === 'open', 'open');
    for (const g of GROUPS) server.append(g, 'bob', `${g} 1`);
    await until(() => rec.messages.length === 3, 'first messages');
    server.refuseInbox = 503;
    server.terminateInboxes();
    await until(() => conn.status.inbox !== 'open', 'inbox lost');
    // Posted while away: nobody pushes them.
    for (const g of ['g1', 'g2']) for (let i = 2; i <= 4; i++) server.append(g, 'bob', `${g} ${i}`);
    server.refuseInbox = undefined;
    await until(() => rec.messages.length === 9, 'caught up');
    expect(conn.state).toBe('open');
    expect(conn.mode).toBe('inbox');
    // Old ones pushed again (a host replaying its tail) are dropped.
    for (const g of ['g1', 'g2'])
      for (const m of server.group(g).log) server.broadcastInbox(g, { type: 'message', ...m });
    server.append('g3', 'bob', 'g3 2');
    await until(() => of(rec, 'g3').length === 2, 'g3 2');
    await sleep(100);
    expectExactlyOnce(rec, { g1: 4, g2: 4, g3: 2 });
    expect(server.requests).toContain('/groups/g1/messages?after=1&limit=100');
    expect(rec.states.map((s) => s.state)).toEqual(['open', 'reconnecting', 'open']);
  });

  it('a tick (pull mode) makes it read what the tick announces', async () => {
    const { conn, rec } = connect();
    await until(() => conn.state === 'open', 'open');
    // The initial read of g2 answered (empty) before anything is appended, however slow the machine.
    await until(() => server.requests.some((r) => r.startsWith('/groups/g2/messages')), 'initial read');
    await sleep(100);
    for (let i = 0; i < 3; i++) server.append('g2', 'bob', `pulled ${i}`, null, false);
    await sleep(50);
    expect(rec.messages).toEqual([]);
    const g = server.group('g2');
    for (const c of server.inboxes)
      server.sendInbox(c, { type: 'tick', groupId: 'g2', epoch: g.epoch, lastMsgId: 3 });
    await until(() => of(rec, 'g2').length === 3, 'pulled messages');
    // A tick that announces nothing new reads nothing.
    const reads = server.requests.length;
    for (const c of server.inboxes)
      server.sendInbox(c, { type: 'tick', groupId: 'g2', epoch: g.epoch, lastMsgId: 3 });
    await sleep(100);
    expect(server.requests.length).toBe(reads);
    expectExactlyOnce(rec, { g2: 3 });
  });

  it('sends {type: message, groupId, contents, clientMsgId}; acks are per group; a drop before the ack resends the same clientMsgId', async () => {
    const { conn, rec } = connect();
    await until(() => conn.state === 'open', 'open');
    await sleep(100);
    const a = conn.send('g1', 'to g1');
    const b = conn.send('g2', 'to g2');
    expect(() => conn.send('nope', 'x')).toThrow(TypeError);
    const [ackA, ackB] = await Promise.all([a.done, b.done]);
    expect(ackA).toMatchObject({ msgId: 1, epoch: server.group('g1').epoch });
    expect(ackB).toMatchObject({ msgId: 1, epoch: server.group('g2').epoch });
    expect(server.inboxReceived.map((r) => r.ev)).toEqual([
      { type: 'message', groupId: 'g1', contents: 'to g1', clientMsgId: a.clientMsgId },
      { type: 'message', groupId: 'g2', contents: 'to g2', clientMsgId: b.clientMsgId },
    ]);
    expect(a.groupId).toBe('g1');

    let dropped = false;
    server.onInboxMessage = (c, ev) => {
      if (dropped) return false;
      dropped = true;
      // Stored, but the connection dies before the ack or the push go out.
      server.append(ev.groupId, c.userId, ev.contents, ev.clientMsgId, false);
      c.ws.terminate();
      return true;
    };
    const out = conn.send('g3', 'survives');
    const ack = await out.done;
    expect(ack.msgId).toBe(1);
    expect(server.group('g3').log).toHaveLength(1);
    expect(
      server.inboxReceived.filter((r) => r.ev.clientMsgId === out.clientMsgId).length,
    ).toBeLessThanOrEqual(2);
    await until(() => of(rec, 'g3').length === 1, 'own message delivered');
    await sleep(100);
    expectExactlyOnce(rec, { g1: 1, g2: 1, g3: 1 });
    expect(conn.unacknowledged()).toEqual([]);
  });

  it('an error event with groupId and clientMsgId fails that send only', async () => {
    const { conn, rec } = connect();
    await until(() => conn.state === 'open', 'open');
    server.onInboxMessage = (c, ev) => {
      if (ev.groupId !== 'g1') return false;
      server.sendInbox(c, {
        type: 'error',
        code: 'forbidden',
        groupId: 'g1',
        clientMsgId: ev.clientMsgId,
        message: 'not a member',
      });
      return true;
    };
    const bad = conn.send('g1', 'refused');
    const good = conn.send('g2', 'fine');
    await expect(bad.done).rejects.toMatchObject({ code: 'forbidden' });
    expect((await good.done).msgId).toBe(1);
    expect(bad.state).toBe('failed');
    expect(rec.errors.map((x) => [x.e.code, x.groupId])).toEqual([['forbidden', 'g1']]);
  });

  it('typing goes out with its groupId (throttled per group); typing and presence events come with theirs', async () => {
    const { conn, rec } = connect({ typingIntervalMs: 300 });
    await until(() => conn.state === 'open', 'open');
    // Every group's snapshot first: a late one would replace what the events below say.
    await until(() => GROUPS.every((g) => rec.presence.some(([x]) => x === g)), 'presence snapshots');
    expect(conn.onlineUsers('g1')).toEqual([ME]);
    for (let i = 0; i < 3; i++) {
      conn.typing('g1');
      conn.typing('g2');
    }
    await sleep(50);
    expect(server.inboxReceived.map((r) => r.ev)).toEqual([
      { type: 'typing', groupId: 'g1' },
      { type: 'typing', groupId: 'g2' },
    ]);
    for (const c of server.inboxes) {
      server.sendInbox(c, { type: 'typing', groupId: 'g2', userId: 'bob' });
      server.sendInbox(c, { type: 'typing', groupId: 'g2', userId: ME });
      server.sendInbox(c, { type: 'presence', groupId: 'g3', userId: 'bob', status: 'online' });
    }
    await until(() => rec.typing.length === 1 && conn.onlineUsers('g3').includes('bob'), 'events');
    expect(rec.typing).toEqual([['g2', 'bob']]);
    expect(rec.presence.at(-1)).toEqual(['g3', [ME, 'bob']]);
    for (const c of server.inboxes)
      server.sendInbox(c, { type: 'presence', groupId: 'g3', userId: 'bob', status: 'offline' });
    await until(() => !conn.onlineUsers('g3').includes('bob'), 'bob offline');
  });

  it('tells the host what it follows after every hello and on follow/unfollow, and its status (kept over reconnects)', async () => {
    const { conn, rec } = connect();
    const sent = () => server.inboxPresenceReceived.map((r) => r.ev);
    await until(() => sent().length === 1, 'follow after hello');
    expect(sent()).toEqual([{ type: 'follow', groupIds: GROUPS }]);
    server.join('g4', ME);
    conn.follow('g4');
    conn.unfollow('g2');
    conn.setStatus('away');
    conn.setStatus('away');
    await until(() => sent().length === 4, 'follow, unfollow, status');
    expect(sent().slice(1)).toEqual([
      { type: 'follow', groupIds: ['g4'] },
      { type: 'unfollow', groupIds: ['g2'] },
      { type: 'status', status: 'away' },
    ]);
    expect(conn.presenceStatus).toBe('away');
    server.terminateInboxes();
    await until(() => sent().length === 6, 'status and follow after the next hello');
    expect(sent().slice(4)).toEqual([
      { type: 'status', status: 'away' },
      { type: 'follow', groupIds: ['g1', 'g3', 'g4'] },
    ]);
    // Away users count as present; offline removes them.
    server.broadcastInbox('g1', { type: 'presence', groupId: 'g1', userId: 'bob', status: 'away' });
    await until(() => conn.onlineUsers('g1').includes('bob'), 'bob away');
    server.broadcastInbox('g1', { type: 'presence', groupId: 'g1', userId: 'bob', status: 'offline' });
    await until(() => !conn.onlineUsers('g1').includes('bob'), 'bob offline');
    expect(rec.errors).toEqual([]);
  });

  it('polls GET /groups/{g}/presence every presencePollMs', async () => {
    const { conn } = connect({ presencePollMs: 200 });
    await until(() => conn.state === 'open', 'open');
    const bob = connect({ groups: ['g1'] }, 'bob');
    await until(() => bob.conn.state === 'open', 'bob open');
    await until(() => conn.onlineUsers('g1').includes('bob'), 'bob seen by polling', 10_000);
    bob.conn.close();
    await until(() => !conn.onlineUsers('g1').includes('bob'), 'bob gone by polling', 10_000);
  });

  it('an inbox refused with 403 ends in closed without falling back', async () => {
    const api = new ChatApi({ baseUrl: server.baseUrl, token: 'mallory' });
    const conn = new InboxConnection({ api, userId: ME, groups: GROUPS, WebSocket, fallbackAfterMs: 100 });
    open.push(conn);
    const errors: ShardChatError[] = [];
    conn.on('error', (e) => errors.push(e));
    const out = conn.send('g1', 'never');
    await until(() => conn.state === 'closed', 'closed');
    expect(errors.map((e) => e.status)).toContain(403);
    await expect(out.done).rejects.toMatchObject({ code: 'closed' });
    await sleep(300);
    expect(server.inboxUpgrades).toBe(1);
    expect(server.upgrades).toBe(0);
  });

  it('falls back to group sockets while the inbox is refused (503), and back, without duplicates or gaps', async () => {
    fill('g1', 2);
    const n = { g1: 2, g2: 0, g3: 0 };
    const post = (g: keyof typeof n, push = true) => {
      n[g]++;
      server.append(g, 'bob', `${g} ${n[g]}`, null, push);
    };
    server.refuseInbox = 503;
    const { conn, rec } = connect();
    // The inbox never opens: after fallbackAfterMs each group gets its own socket.
    await until(() => conn.mode === 'fallback' && conn.state === 'open', 'fallback open', 10_000);
    expect(server.conns.size).toBe(3);
    expect(new Set([...server.conns].map((c) => c.groupId))).toEqual(new Set(GROUPS));
    await until(() => of(rec, 'g1').length === 2, 'history over the group socket');
    for (const g of ['g1', 'g2', 'g3'] as const) post(g);
    await until(() => rec.messages.length === 5, 'live over group sockets');
    // Sends go over the group sockets meanwhile.
    const s1 = conn.send('g2', 'sent in fallback');
    expect((await s1.done).msgId).toBe(2);
    n.g2++;
    expect(server.received.map((r) => r.ev)).toEqual([
      { type: 'message', contents: 'sent in fallback', clientMsgId: s1.clientMsgId },
    ]);
    // The inbox keeps being tried in the background.
    const tries = server.inboxUpgrades;
    await until(() => server.inboxUpgrades > tries, 'inbox retried');
    // Some messages stored silently around the switch; then the inbox is back.
    post('g1', false);
    post('g3', false);
    server.refuseInbox = undefined;
    await until(() => conn.mode === 'inbox' && conn.state === 'open', 'back to the inbox', 10_000);
    await until(() => server.conns.size === 0, 'group sockets closed');
    for (const g of ['g1', 'g2', 'g3'] as const) post(g);
    const s2 = conn.send('g1', 'sent over the inbox');
    await s2.done;
    n.g1++;
    await until(() => rec.messages.length === n.g1 + n.g2 + n.g3, 'everything', 3000);

    // And once more: the inbox drops and stays refused; fallback again, then back.
    server.refuseInbox = 503;
    server.terminateInboxes();
    await until(() => conn.mode === 'fallback' && conn.state === 'open', 'fallback again', 3000);
    post('g2');
    post('g2', false);
    post('g2');
    server.refuseInbox = undefined;
    await until(() => conn.mode === 'inbox' && server.conns.size === 0, 'inbox again', 3000);
    post('g3');
    await until(() => rec.messages.length === n.g1 + n.g2 + n.g3, 'everything again', 3000);
    await sleep(200);
    expectExactlyOnce(rec, n);
    expect(rec.states.map((s) => `${s.mode}:${s.state}`)).toEqual([
      'fallback:connecting',
      'fallback:open',
      'inbox:open',
      'inbox:reconnecting',
      'fallback:reconnecting',
      'fallback:open',
      'inbox:open',
    ]);
    expect(conn.unacknowledged()).toEqual([]);
    expect(rec.resets).toEqual([]);
  });
});
