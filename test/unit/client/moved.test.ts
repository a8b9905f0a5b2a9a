/**
 * Close code 4012 "moved" (common/protocol.ts CLOSE_MOVED): the key (group or user) moved
 * to another shard during a reshard. GroupConnection and InboxConnection reconnect at
 * once (no backoff, not counted as a failure), resume from lastMsgId with no gap and no
 * duplicate, and write what was pending again with its clientMsgId (stored and delivered
 * once). A repeated 4012 soon after (a stale router sending the client back to the old
 * owner) waits the normal backoff instead of spinning. Against the in-process fake shard.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatApi } from '../../../client/api.js';
import { GroupConnection, type GroupConnectionOptions } from '../../../client/group-connection.js';
import { InboxConnection } from '../../../client/inbox-connection.js';
import type { Message } from '../../../client/types.js';
import { CLOSE_MOVED } from '../../../common/protocol.js';
import { FakeChatServer, sleep, until } from '../../helpers/fake-chat-server.js';

const G = 'g1';
/** A backoff long enough that a reconnect within it can only be the immediate one. */
const SLOW = { minMs: 2000, maxMs: 2000, jitter: [1, 1] as const };

let server: FakeChatServer;
const open: { close(): void }[] = [];

beforeEach(async () => {
  server = await FakeChatServer.start();
});

afterEach(async () => {
  for (const c of open.splice(0)) c.close();
  await server.close();
});

function group(extra: Partial<GroupConnectionOptions> = {}) {
  const conn = new GroupConnection({
    api: new ChatApi({ baseUrl: server.baseUrl, token: 'alice' }),
    groupId: G,
    WebSocket,
    backoff: SLOW,
    ...extra,
  });
  open.push(conn);
  const messages: Message[] = [];
  const states: string[] = [];
  conn.on('message', (m) => messages.push(m));
  conn.on('state', (s) => states.push(s));
  return { conn, messages, states };
}

const ids = (ms: Message[]) => ms.map((m) => m.msgId);
const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/** Waits for the next upgrade after `before` and says how long it took. */
async function timeToUpgrade(count: () => number, before: number): Promise<number> {
  const t0 = Date.now();
  await until(() => count() > before, 'the reconnect');
  return Date.now() - t0;
}

describe('GroupConnection and close 4012 (moved)', () => {
  it('reconnects at once (no backoff) and resumes from lastMsgId: no gap, no duplicate', async () => {
    for (let i = 1; i <= 3; i++) server.append(G, 'zoe', `old ${i}`, `old-${i}`, false);
    const { conn, messages, states } = group();
    await until(() => messages.length === 3, 'history');
    await until(() => server.requests.includes(`/groups/${G}/messages?after=3&limit=100`), 'catch-up read');
    await sleep(50);
    server.closeAll(CLOSE_MOVED, 'moved');
    // Stored at the new owner meanwhile; nobody pushes them to this client.
    for (let i = 4; i <= 6; i++) server.append(G, 'zoe', `moved ${i}`, `m-${i}`, false);
    const took = await timeToUpgrade(() => server.upgrades, 1);
    expect(took).toBeLessThan(1000); // the backoff would wait 2 s
    await until(() => messages.length === 6, 'the messages stored during the move');
    expect(conn.state).toBe('open');
    expect(states).toEqual(['open', 'reconnecting', 'open']);
    // The catch-up read after the move starts at the last message delivered before it.
    expect(server.requests.filter((r) => r === `/groups/${G}/messages?after=3&limit=100`).length).toBe(2);
    server.append(G, 'zoe', 'live', 'live-7');
    await until(() => messages.length === 7, 'a live message');
    await sleep(100);
    expect(ids(messages)).toEqual(range(1, 7));
    for (const m of messages) expect(m.prevMsgId).toBe(m.msgId - 1);
    // Not counted as a failure: the backoff still starts from its first delay.
    expect((conn as unknown as { backoff: { attempts: number } }).backoff.attempts).toBe(0);
  });

  it('messages pending at the move are written again with their clientMsgId and stored and delivered once', async () => {
    const { conn, messages } = group();
    await until(() => conn.state === 'open', 'open');
    await until(() => server.requests.includes(`/groups/${G}/messages?after=0&limit=100`), 'catch-up read');
    await sleep(50);
    // The old owner stores the first message but moves the group before acking; the
    // second reaches it too late and is dropped.
    let n = 0;
    server.onMessage = (c, ev) => {
      n++;
      if (n === 1) {
        server.append(c.groupId, c.userId, ev.contents, ev.clientMsgId, false);
        return true;
      }
      if (n === 2) {
        c.ws.close(CLOSE_MOVED, 'moved');
        return true;
      }
      return false;
    };
    const a = conn.send('stored before the move');
    const b = conn.send('dropped by the old owner');
    const [ackA, ackB] = await Promise.all([a.done, b.done]);
    expect([ackA.msgId, ackB.msgId]).toEqual([1, 2]);
    expect(server.upgrades).toBe(2);
    const log = server.group(G).log;
    expect(log.map((m) => m.clientMsgId)).toEqual([a.clientMsgId, b.clientMsgId]);
    // Each written once per socket (never under a new clientMsgId), and the write on the
    // moved socket is not counted as an attempt.
    for (const out of [a, b]) {
      const writes = server.received.filter(
        (r) => r.ev.type === 'message' && r.ev.clientMsgId === out.clientMsgId,
      );
      expect(writes.length).toBeLessThanOrEqual(2);
      expect(out.attempts).toBe(1);
      expect(out.state).toBe('sent');
    }
    expect(
      server.received.every((r) => r.ev.clientMsgId === a.clientMsgId || r.ev.clientMsgId === b.clientMsgId),
    ).toBe(true);
    await until(() => messages.length === 2, 'both delivered');
    await sleep(100);
    expect(messages.map((m) => m.clientMsgId)).toEqual([a.clientMsgId, b.clientMsgId]);
    expect(conn.unacknowledged).toEqual([]);
  });

  it('a repeated 4012 soon after the immediate retry waits the backoff; after the window it is immediate again', async () => {
    // The decision (at once, or after the backoff) is read from the connection, not timed:
    // on a loaded machine an immediate reconnect can take longer than a short backoff.
    // The window is longer than a reopen takes there, so the second move falls inside it.
    const backoff = { minMs: 800, maxMs: 800, jitter: [1, 1] as const };
    const { conn } = group({ backoff, movedRetryWindowMs: 4000 });
    await until(() => conn.state === 'open', 'open');
    const t0 = Date.now();
    server.closeAll(CLOSE_MOVED, 'moved');
    await timeToUpgrade(() => server.upgrades, 1);
    expect(conn.retryDelayMs).toBe(0);
    await until(() => conn.state === 'open', 'open after the move');
    // A stale router sends it back to the old owner, which moves it again.
    server.closeAll(CLOSE_MOVED, 'moved');
    await timeToUpgrade(() => server.upgrades, 2);
    expect(conn.retryDelayMs).toBe(800);
    await until(() => conn.state === 'open', 'open after the backoff');
    // Past the window, a move is retried at once again.
    const wait = 4400 - (Date.now() - t0);
    if (wait > 0) await sleep(wait);
    server.closeAll(CLOSE_MOVED, 'moved');
    await timeToUpgrade(() => server.upgrades, 3);
    expect(conn.retryDelayMs).toBe(0);
    await until(() => conn.state === 'open', 'open');
  });
});

describe('InboxConnection and close 4012 (moved)', () => {
  it('reconnects the inbox at once, catches every group up from its lastMsgId, and sends what was pending once', async () => {
    const groups = ['g1', 'g2'];
    for (const g of groups) for (const u of ['alice', 'bob']) server.join(g, u);
    const conn = new InboxConnection({
      api: new ChatApi({ baseUrl: server.baseUrl, token: 'alice' }),
      userId: 'alice',
      groups,
      WebSocket,
      backoff: SLOW,
      fallbackAfterMs: 1500,
    });
    open.push(conn);
    const messages: Message[] = [];
    conn.on('message', (m) => messages.push(m));
    await until(() => conn.state === 'open', 'open');
    for (const g of groups) server.append(g, 'bob', `${g} 1`);
    await until(() => messages.length === 2, 'first messages');
    await sleep(50);
    let moved = false;
    server.onInboxMessage = (c, ev) => {
      if (moved) return false;
      moved = true;
      // Stored by the old host, which then hands the user over before acking; more is
      // posted while moving, and nobody pushes it.
      server.append(ev.groupId, c.userId, ev.contents, ev.clientMsgId, false);
      for (const g of groups) for (let i = 0; i < 2; i++) server.append(g, 'bob', `${g} during`, null, false);
      c.ws.close(CLOSE_MOVED, 'moved');
      return true;
    };
    const out = conn.send('g2', 'across the move');
    const took = await timeToUpgrade(() => server.inboxUpgrades, 1);
    expect(took).toBeLessThan(1000);
    const ack = await out.done;
    expect(ack.msgId).toBe(2);
    expect(out.attempts).toBe(1);
    await until(() => messages.length === 3 + 2 + 2, 'caught up');
    await sleep(100);
    for (const g of groups) {
      const ms = messages.filter((m) => m.groupId === g);
      expect(ids(ms), g).toEqual(range(1, g === 'g2' ? 4 : 3));
      for (const m of ms) expect(m.prevMsgId).toBe(m.msgId - 1);
    }
    expect(server.group('g2').log.filter((m) => m.clientMsgId === out.clientMsgId)).toHaveLength(1);
    expect(server.requests).toContain('/groups/g1/messages?after=1&limit=100');
    // No fallback to group sockets: the inbox came back at once.
    expect(conn.mode).toBe('inbox');
    expect(server.upgrades).toBe(0);
    expect(conn.state).toBe('open');
  });
});
