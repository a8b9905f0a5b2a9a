/**
 * GroupConnection (client/group-connection.ts) against an in-process fake shard that
 * speaks the group WebSocket protocol of shard/sockets/group-hub.ts: history on connect, gap filling,
 * duplicates, the outbox (acks, resends with the same clientMsgId, ack timeouts,
 * permanent errors, retry), reconnect states and catch-up, refusals, epoch changes,
 * typing and presence.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatApi } from '../../../client/api.js';
import { ShardChatError } from '../../../client/errors.js';
import {
  type ConnectionState,
  GroupConnection,
  type GroupConnectionOptions,
  type OutgoingState,
} from '../../../client/group-connection.js';
import type { Message } from '../../../client/types.js';
import { FakeChatServer, sleep, until } from '../../helpers/fake-chat-server.js';

const G = 'g1';

interface Recorded {
  messages: Message[];
  states: ConnectionState[];
  errors: ShardChatError[];
  typing: string[];
  presence: string[][];
  outgoing: { clientMsgId: string; state: OutgoingState }[];
  hellos: { epoch: string; lastMsgId: number; mode: string; shard?: number }[];
  /** Resets and messages in the order they were emitted. */
  timeline: string[];
}

let server: FakeChatServer;
let open: GroupConnection[] = [];

beforeEach(async () => {
  server = await FakeChatServer.start();
});

afterEach(async () => {
  for (const c of open) c.close();
  open = [];
  await server.close();
});

function connect(
  userId: string,
  extra: Partial<GroupConnectionOptions> = {},
): { conn: GroupConnection; rec: Recorded } {
  const api = new ChatApi({ baseUrl: server.baseUrl, token: userId });
  const conn = new GroupConnection({
    api,
    groupId: G,
    WebSocket,
    backoff: { minMs: 20, maxMs: 200, factor: 2 },
    ...extra,
  });
  open.push(conn);
  const rec: Recorded = {
    messages: [],
    states: [],
    errors: [],
    typing: [],
    presence: [],
    outgoing: [],
    hellos: [],
    timeline: [],
  };
  conn.on('message', (m) => {
    rec.messages.push(m);
    rec.timeline.push(`${m.epoch}:${m.msgId}`);
  });
  conn.on('state', (s) => rec.states.push(s));
  conn.on('error', (e) => rec.errors.push(e));
  conn.on('typing', (u) => rec.typing.push(u));
  conn.on('presence', (p) => rec.presence.push(p));
  conn.on('outgoing', (o) => rec.outgoing.push({ clientMsgId: o.clientMsgId, state: o.state }));
  conn.on('hello', (h) => rec.hellos.push(h));
  conn.on('reset', () => rec.timeline.push('reset'));
  return { conn, rec };
}

const ids = (ms: Message[]) => ms.map((m) => m.msgId);
const fill = (n: number, userId = 'zoe') => {
  for (let i = 1; i <= n; i++) server.append(G, userId, `old ${i}`, `old-${i}`, false);
};
const messageEvents = (clientMsgId: string) =>
  server.received.filter((r) => r.ev.type === 'message' && r.ev.clientMsgId === clientMsgId);

describe('GroupConnection against a fake shard', () => {
  it('says hello, delivers the latest initialHistory messages in order, and goes connecting → open', async () => {
    fill(10);
    const { conn, rec } = connect('alice', { initialHistory: 5 });
    expect(conn.state).toBe('connecting');
    await until(() => rec.messages.length === 5, '5 history messages');
    expect(conn.state).toBe('open');
    expect(rec.states).toEqual(['open']);
    expect(ids(rec.messages)).toEqual([6, 7, 8, 9, 10]);
    expect(rec.messages.map((m) => m.contents)).toEqual(['old 6', 'old 7', 'old 8', 'old 9', 'old 10']);
    expect(rec.hellos).toEqual([
      { epoch: server.group(G).epoch, lastMsgId: 10, mode: 'push', shard: server.shardOrdinal },
    ]);
    expect(conn.shard).toBe(server.shardOrdinal);
    expect(conn.epoch).toBe(server.group(G).epoch);
    expect(conn.lastMsgId).toBe(10);
    expect(server.requests).toContain(`/groups/${G}/messages?before=11&limit=5`);
    // A live message follows the history.
    server.append(G, 'zoe', 'live', 'live-1');
    await until(() => rec.messages.length === 6, 'the live message');
    expect(ids(rec.messages)).toEqual([6, 7, 8, 9, 10, 11]);
    expect(rec.errors).toEqual([]);
  });

  it('delivers nothing old on an empty group and then live messages from msgId 1', async () => {
    const { conn, rec } = connect('alice');
    await until(() => conn.state === 'open', 'open');
    server.append(G, 'zoe', 'first', 'f1');
    await until(() => rec.messages.length === 1, 'the first message');
    expect(rec.messages[0]).toMatchObject({ msgId: 1, prevMsgId: 0, contents: 'first', userId: 'zoe' });
  });

  it('fills a gap from GET …/messages?after= and delivers each message once, in order; duplicates are dropped', async () => {
    fill(3);
    const { conn, rec } = connect('alice');
    await until(() => rec.messages.length === 3, 'history 1..3');
    expect(conn.lastMsgId).toBe(3);
    await until(() => server.requests.includes(`/groups/${G}/messages?after=3&limit=100`), 'catch-up read');
    await sleep(50);
    server.append(G, 'zoe', 'four', 'n4', false); // stored, never pushed
    server.append(G, 'zoe', 'five', 'n5'); // pushed: prevMsgId 4, but the client has 3
    await until(() => rec.messages.length === 5, 'messages 4 and 5');
    expect(ids(rec.messages)).toEqual([1, 2, 3, 4, 5]);
    expect(rec.messages.map((m) => m.contents).slice(3)).toEqual(['four', 'five']);
    // One read after the history, one for the gap.
    expect(server.requests.filter((p) => p.startsWith(`/groups/${G}/messages?after=3`)).length).toBe(2);

    // Duplicates pushed again (and an old one) are dropped; a later message still arrives.
    const log = server.group(G).log;
    for (const m of [log[3], log[4], log[2], log[4]]) server.broadcast(G, { type: 'message', ...m });
    server.append(G, 'zoe', 'six', 'n6');
    await until(() => rec.messages.some((m) => m.msgId === 6), 'message 6');
    await sleep(50);
    expect(ids(rec.messages)).toEqual([1, 2, 3, 4, 5, 6]);
    for (let i = 1; i < rec.messages.length; i++)
      expect(rec.messages[i]?.prevMsgId).toBe(rec.messages[i - 1]?.msgId);
    expect(rec.errors).toEqual([]);
  });

  it('holds messages that arrive ahead of a gap until the gap is filled', async () => {
    fill(2);
    const { rec } = connect('alice');
    await until(() => rec.messages.length === 2, 'history');
    // The catch-up read that follows the history is over before the test goes on.
    await until(() => server.requests.includes(`/groups/${G}/messages?after=2&limit=100`), 'catch-up read');
    await sleep(50);
    const reads = server.requests.length;
    // 3 and 4 stored silently; 5 and 6 pushed out of order after them.
    server.append(G, 'zoe', 'three', 'n3', false);
    server.append(G, 'zoe', 'four', 'n4', false);
    const five = server.append(G, 'zoe', 'five', 'n5', false).message;
    const six = server.append(G, 'zoe', 'six', 'n6', false).message;
    server.broadcast(G, { type: 'message', ...six });
    server.broadcast(G, { type: 'message', ...five });
    await until(() => rec.messages.length === 6, 'messages 3..6');
    await sleep(50);
    expect(ids(rec.messages)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(server.requests.slice(reads)).toContain(`/groups/${G}/messages?after=2&limit=100`);
  });

  it('send() writes {type: message, contents, clientMsgId}; the ack makes it sent and resolves done', async () => {
    const { conn, rec } = connect('alice');
    await until(() => conn.state === 'open', 'open');
    const out = conn.send('hello there');
    expect(out.state).toBe('pending');
    expect(out.clientMsgId).toMatch(/^[0-9a-f-]{36}$/);
    const ack = await out.done;
    expect(out.state).toBe('sent');
    expect(out.attempts).toBe(1);
    const stored = server.group(G).log;
    expect(stored).toHaveLength(1);
    expect(ack).toEqual({ msgId: 1, prevMsgId: 0, epoch: server.group(G).epoch, ts: stored[0]?.ts });
    expect(out.ack).toEqual(ack);
    expect(server.received.map((r) => r.ev)).toEqual([
      { type: 'message', contents: 'hello there', clientMsgId: out.clientMsgId },
    ]);
    expect(rec.outgoing).toEqual([
      { clientMsgId: out.clientMsgId, state: 'pending' },
      { clientMsgId: out.clientMsgId, state: 'sent' },
    ]);
    // The sender sees its own message once, and the outbox is empty.
    await until(() => rec.messages.length === 1, 'own message');
    expect(rec.messages[0]).toMatchObject({ msgId: 1, userId: 'alice', clientMsgId: out.clientMsgId });
    expect(conn.unacknowledged).toEqual([]);
    // send() with a clientMsgId already in the outbox returns the same entry.
    const a = conn.send('x', 'fixed-id');
    expect(conn.send('x', 'fixed-id')).toBe(a);
    await a.done;
  });

  it('refuses a clientMsgId the shard would not accept, and fails empty or oversized contents at once', async () => {
    const { conn, rec } = connect('alice', { maxMessageBytes: 100 });
    await until(() => conn.state === 'open', 'open');
    expect(() => conn.send('x', 'has space')).toThrow(TypeError);
    expect(() => conn.send('x', 'a'.repeat(129))).toThrow(TypeError);
    const big = conn.send('é'.repeat(51)); // 102 bytes in UTF-8
    expect(big.state).toBe('failed');
    expect(big.error?.code).toBe('bad_field');
    await expect(big.done).rejects.toThrow(/1 to 100 bytes/);
    const blank = conn.send('   ');
    expect(blank.state).toBe('failed');
    await expect(blank.done).rejects.toBeInstanceOf(ShardChatError);
    expect(conn.unacknowledged).toEqual([]);
    await sleep(100);
    expect(server.received.filter((r) => r.ev.type === 'message')).toEqual([]);
    expect(rec.outgoing.map((o) => o.state)).toEqual(['failed', 'failed']);
  });

  it('a frame the server closes with 1009 fails that message (too_large) instead of resending it forever', async () => {
    await server.close();
    server = await FakeChatServer.start({ maxPayload: 1024 });
    const { conn } = connect('alice');
    await until(() => conn.state === 'open', 'open');
    const big = conn.send('y'.repeat(2000));
    await expect(big.done).rejects.toMatchObject({ code: 'too_large' });
    expect(big.state).toBe('failed');
    await until(() => conn.state === 'open', 'open again');
    const upgrades = server.upgrades;
    await sleep(300);
    // One reconnect after the 1009, then quiet: the big message is not written again.
    expect(server.upgrades).toBe(upgrades);
    const small = conn.send('fits');
    expect((await small.done).msgId).toBe(1);
    expect(server.group(G).log.map((m) => m.contents)).toEqual(['fits']);
  });

  it('sends queued before the connection opens go out once it is open', async () => {
    const { conn } = connect('alice');
    const a = conn.send('early one');
    const b = conn.send('early two');
    expect(conn.state).toBe('connecting');
    const [ackA, ackB] = await Promise.all([a.done, b.done]);
    expect([ackA.msgId, ackB.msgId]).toEqual([1, 2]);
    expect(server.group(G).log.map((m) => m.contents)).toEqual(['early one', 'early two']);
  });

  it('resends the same clientMsgId after the connection drops before the ack; stored and delivered once', async () => {
    const { conn, rec } = connect('alice');
    await until(() => conn.state === 'open', 'open');
    // Let the catch-up read after the hello finish: it would otherwise find the stored
    // message and acknowledge it without any resend.
    await until(() => server.requests.includes(`/groups/${G}/messages?after=0&limit=100`), 'catch-up read');
    await sleep(50);
    let dropped = false;
    server.onMessage = (c, ev) => {
      if (dropped) return false;
      dropped = true;
      // Stored, but the connection dies before the ack or the push go out.
      server.append(c.groupId, c.userId, ev.contents, ev.clientMsgId, false);
      c.ws.terminate();
      return true;
    };
    const out = conn.send('survives');
    const ack = await out.done;
    expect(rec.states).toEqual(['open', 'reconnecting', 'open']);
    expect(messageEvents(out.clientMsgId)).toHaveLength(2);
    const log = server.group(G).log;
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ msgId: 1, clientMsgId: out.clientMsgId, contents: 'survives' });
    expect(ack.msgId).toBe(1);
    expect(out.state).toBe('sent');
    await until(() => rec.messages.length === 1, 'the message delivered');
    await sleep(100);
    expect(rec.messages.map((m) => m.clientMsgId)).toEqual([out.clientMsgId]);
    expect(server.upgrades).toBe(2);
  });

  it('writes again after ackTimeoutMs, fails after maxSendAttempts, and retry() resends the same clientMsgId', async () => {
    const { conn, rec } = connect('alice', { ackTimeoutMs: 300, maxSendAttempts: 3 });
    await until(() => conn.state === 'open', 'open');
    let ignoring = true;
    const writes: number[] = [];
    server.onMessage = () => {
      writes.push(Date.now());
      return ignoring;
    };
    const out = conn.send('slow');
    let settled = false;
    void out.done.then(
      () => {
        settled = true;
      },
      () => {
        settled = true;
      },
    );
    await until(() => out.state === 'failed', 'the send failing', 15_000);
    expect(writes).toHaveLength(3);
    for (let i = 1; i < writes.length; i++)
      expect((writes[i] as number) - (writes[i - 1] as number)).toBeGreaterThanOrEqual(280);
    expect(out.attempts).toBe(3);
    expect(out.error?.code).toBe('timeout');
    expect(new Set(messageEvents(out.clientMsgId).map((r) => r.ev.clientMsgId))).toEqual(
      new Set([out.clientMsgId]),
    );
    expect(rec.outgoing.map((o) => o.state)).toEqual(['pending', 'failed']);
    // No more writes while failed; done is still pending (a timeout can be retried).
    await sleep(400);
    expect(writes).toHaveLength(3);
    expect(settled).toBe(false);
    expect(conn.unacknowledged.map((o) => o.clientMsgId)).toEqual([out.clientMsgId]);

    ignoring = false;
    conn.retry(out.clientMsgId);
    const ack = await out.done;
    expect(writes).toHaveLength(4);
    expect(messageEvents(out.clientMsgId)).toHaveLength(4);
    expect(out.state).toBe('sent');
    expect(ack.msgId).toBe(1);
    expect(server.group(G).log).toHaveLength(1);
    expect(rec.outgoing.map((o) => o.state)).toEqual(['pending', 'failed', 'pending', 'sent']);
  });

  it('a permanent error event for the message marks it failed and rejects done', async () => {
    const { conn, rec } = connect('alice');
    await until(() => conn.state === 'open', 'open');
    server.onMessage = (c, ev) => {
      server.send(c, { type: 'error', code: 'bad_field', clientMsgId: ev.clientMsgId, message: 'too long' });
      return true;
    };
    const out = conn.send('rejected');
    const err = await out.done.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ShardChatError);
    expect(err).toMatchObject({ code: 'bad_field', message: 'too long' });
    expect(out.state).toBe('failed');
    expect(out.error?.code).toBe('bad_field');
    expect(rec.errors.map((e) => e.code)).toEqual(['bad_field']);
    expect(conn.unacknowledged).toEqual([]);
    expect(conn.state).toBe('open');
  });

  it('a transient error event leaves the message pending, and the ack timer writes it again', async () => {
    const { conn } = connect('alice', { ackTimeoutMs: 300 });
    await until(() => conn.state === 'open', 'open');
    let first = true;
    server.onMessage = (c, ev) => {
      if (!first) return false;
      first = false;
      server.send(c, { type: 'error', code: 'unavailable', clientMsgId: ev.clientMsgId, message: 'busy' });
      return true;
    };
    const out = conn.send('retry me');
    const ack = await out.done;
    expect(ack.msgId).toBe(1);
    expect(messageEvents(out.clientMsgId)).toHaveLength(2);
  });

  it('goes reconnecting and open again after close 1001, and catches up on what was posted meanwhile', async () => {
    fill(3);
    const { conn, rec } = connect('alice');
    await until(() => rec.messages.length === 3, 'history');
    server.refuseUpgrades = 503;
    server.closeAll(1001, 'shard shutting down');
    await until(() => conn.state === 'reconnecting', 'reconnecting');
    const before = server.upgrades;
    await until(() => server.upgrades >= before + 2, 'reconnect attempts while refused');
    expect(conn.state).toBe('reconnecting');
    for (let i = 4; i <= 7; i++) server.append(G, 'zoe', `while away ${i}`, `away-${i}`);
    expect(rec.messages).toHaveLength(3);
    server.refuseUpgrades = undefined;
    await until(() => rec.messages.length === 7, 'the messages posted while disconnected');
    expect(conn.state).toBe('open');
    expect(rec.states).toEqual(['open', 'reconnecting', 'open']);
    expect(ids(rec.messages)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(server.requests).toContain(`/groups/${G}/messages?after=3&limit=100`);
    expect(rec.hellos.map((h) => h.lastMsgId)).toEqual([3, 7]);
    // The 503 upgrade refusals were not fatal.
    expect(rec.errors.filter((e) => !e.retryable)).toEqual([]);
  });

  it('resumes from a given (epoch, lastMsgId) without loading history', async () => {
    fill(6);
    const { rec } = connect('alice', { epoch: server.group(G).epoch, lastMsgId: 4 });
    await until(() => rec.messages.length === 2, 'messages after the resume point');
    await sleep(50);
    expect(ids(rec.messages)).toEqual([5, 6]);
    expect(server.requests.some((p) => p.includes('before='))).toBe(false);
  });

  it('an upgrade refused with 403 (and the messages route answering 403) ends in closed, without retrying', async () => {
    fill(2);
    server.forbidden = true;
    const { conn, rec } = connect('mallory');
    const out = conn.send('never');
    await until(() => conn.state === 'closed', 'closed');
    expect(rec.states.at(-1)).toBe('closed');
    expect(rec.errors.map((e) => [e.status, e.code])).toContainEqual([403, 'forbidden']);
    await expect(out.done).rejects.toMatchObject({ code: 'closed' });
    await sleep(400);
    expect(server.upgrades).toBe(1);
    expect(rec.messages).toEqual([]);
    expect(conn.state).toBe('closed');
  });

  it('close code 1008 ends in closed with a forbidden error, without reconnecting', async () => {
    const { conn, rec } = connect('alice');
    await until(() => conn.state === 'open', 'open');
    for (const c of server.conns) {
      server.send(c, { type: 'error', code: 'forbidden', message: 'you are no longer a member of g1' });
      c.ws.close(1008, 'not a member');
    }
    await until(() => conn.state === 'closed', 'closed');
    expect(rec.states).toEqual(['open', 'closed']);
    expect(rec.errors.map((e) => e.code)).toEqual(['forbidden', 'forbidden']);
    expect(rec.errors[1]?.message).toBe('not a member');
    await sleep(400);
    expect(server.upgrades).toBe(1);
    expect(server.conns.size).toBe(0);
  });

  it('on reconnect to a new epoch emits reset, then delivers the new history from its start', async () => {
    fill(3);
    const { conn, rec } = connect('alice');
    await until(() => rec.messages.length === 3, 'history');
    const oldEpoch = conn.epoch as string;
    server.refuseUpgrades = 503;
    server.closeAll(1001);
    await until(() => conn.state === 'reconnecting', 'reconnecting');
    const epoch = server.resetEpoch(G);
    server.append(G, 'zoe', 'new one', 'e1');
    server.append(G, 'zoe', 'new two', 'e2');
    server.refuseUpgrades = undefined;
    await until(() => rec.messages.length === 5, 'the new epoch messages');
    expect(rec.timeline).toEqual([
      `${oldEpoch}:1`,
      `${oldEpoch}:2`,
      `${oldEpoch}:3`,
      'reset',
      `${epoch}:1`,
      `${epoch}:2`,
    ]);
    expect(conn.epoch).toBe(epoch);
    expect(conn.lastMsgId).toBe(2);
    server.append(G, 'zoe', 'new three', 'e3');
    await until(() => rec.messages.length === 6, 'a live message of the new epoch');
    expect(rec.messages.at(-1)).toMatchObject({ epoch, msgId: 3, prevMsgId: 2 });
  });

  it('a live message of a new epoch emits reset and restarts delivery', async () => {
    fill(3);
    const { conn, rec } = connect('alice');
    await until(() => rec.messages.length === 3, 'history');
    const epoch = server.resetEpoch(G);
    server.append(G, 'zoe', 'again', 'r1', false);
    server.append(G, 'zoe', 'again two', 'r2');
    await until(() => rec.messages.length === 5, 'the new epoch');
    expect(rec.timeline.slice(3)).toEqual(['reset', `${epoch}:1`, `${epoch}:2`]);
    expect(conn.epoch).toBe(epoch);
  });

  it('throttles typing to one event per typingIntervalMs; emits others’ typing, not its own', async () => {
    const a = connect('alice', { typingIntervalMs: 300 });
    const b = connect('bob', { typingIntervalMs: 300 });
    await until(() => a.conn.state === 'open' && b.conn.state === 'open', 'both open');
    const typingFromAlice = () =>
      server.received.filter((r) => r.userId === 'alice' && r.ev.type === 'typing');
    for (let i = 0; i < 5; i++) a.conn.typing();
    await until(() => b.rec.typing.length === 1, 'bob sees alice typing');
    await sleep(100);
    expect(typingFromAlice()).toHaveLength(1);
    expect(typingFromAlice()[0]?.ev).toEqual({ type: 'typing' });
    expect(b.rec.typing).toEqual(['alice']);
    await sleep(250);
    a.conn.typing();
    a.conn.typing();
    await until(() => b.rec.typing.length === 2, 'bob sees alice typing again');
    expect(typingFromAlice()).toHaveLength(2);
    // The user's own typing (another tab of it) is not emitted.
    server.broadcast(G, { type: 'typing', groupId: G, userId: 'alice' });
    server.broadcast(G, { type: 'typing', groupId: G, userId: 'carol' });
    await until(() => a.rec.typing.includes('carol'), 'alice sees carol');
    expect(a.rec.typing).toEqual(['carol']);
  });

  it('typing() while not open sends nothing', async () => {
    const { conn } = connect('alice');
    conn.typing();
    await until(() => conn.state === 'open', 'open');
    await sleep(50);
    expect(server.received).toEqual([]);
  });

  it('tracks presence: the snapshot on hello, then online/offline events', async () => {
    const a = connect('alice');
    await until(() => a.rec.presence.length >= 1, 'presence snapshot');
    expect(a.conn.onlineUsers).toEqual(['alice']);
    const b = connect('bob');
    await until(() => a.conn.onlineUsers.includes('bob'), 'alice sees bob online');
    expect(a.rec.presence.at(-1)?.sort()).toEqual(['alice', 'bob']);
    await until(() => b.conn.onlineUsers.length === 2, 'bob sees both');
    expect(b.conn.onlineUsers.sort()).toEqual(['alice', 'bob']);
    b.conn.close();
    await until(() => !a.conn.onlineUsers.includes('bob'), 'alice sees bob offline');
    expect(a.rec.presence.at(-1)).toEqual(['alice']);
  });

  it('a presence snapshot that arrives after a newer presence event keeps the event', async () => {
    // Alice's snapshot is taken before Bob connects but reaches her after his "online".
    server.holdPresence.add(G);
    const a = connect('alice');
    await until(() => server.requests.some((r) => r.startsWith(`/groups/${G}/presence`)), 'snapshot asked');
    const b = connect('bob');
    await until(() => a.conn.onlineUsers.includes('bob'), 'alice sees bob online (event)');
    const seen = a.rec.presence.length;
    server.holdPresence.delete(G);
    await until(() => a.rec.presence.length > seen, 'the late snapshot applied');
    expect(a.conn.onlineUsers.sort()).toEqual(['alice', 'bob']);
    b.conn.close();
    await until(() => !a.conn.onlineUsers.includes('bob'), 'alice sees bob offline');
  });

  it('close() rejects unacknowledged sends, emits closed and stops reconnecting', async () => {
    const { conn, rec } = connect('alice');
    await until(() => conn.state === 'open', 'open');
    server.onMessage = () => true; // never acknowledged
    const out = conn.send('lost');
    await until(() => messageEvents(out.clientMsgId).length === 1, 'the write');
    conn.close();
    await expect(out.done).rejects.toMatchObject({ code: 'closed' });
    expect(conn.state).toBe('closed');
    expect(rec.states).toEqual(['open', 'closed']);
    await until(() => server.conns.size === 0, 'the socket closed');
    await sleep(300);
    expect(server.upgrades).toBe(1);
  });
});
