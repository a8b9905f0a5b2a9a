/**
 * Pull mode in the SDK (docs/delivery-protocol.md section 7) against the in-process fake
 * shard: GroupConnection and InboxConnection (sharing client/group-sequencer.ts) on a
 * `tick` ahead of what they delivered read `?after=` one read at a time (a burst of ticks
 * while a read is held costs one more read, not one per tick), deliver every message
 * once and in order across push -> pull -> push, and report the mode (`mode` getter,
 * `deliveryMode(groupId)`, `mode` events on a switch).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatApi } from '../../../client/api.js';
import { GroupConnection } from '../../../client/group-connection.js';
import { InboxConnection } from '../../../client/inbox-connection.js';
import type { DeliveryMode, Message } from '../../../client/types.js';
import { FakeChatServer, sleep, until } from '../../helpers/fake-chat-server.js';

const G = 'big';
const BACKOFF = { minMs: 20, maxMs: 200, factor: 2 };

let server: FakeChatServer;
const closers: (() => void)[] = [];

beforeEach(async () => {
  server = await FakeChatServer.start();
  for (const u of ['alice', 'bob']) server.join(G, u);
});

afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await server.close();
});

const ids = (ms: Message[]) => ms.map((m) => m.msgId);
const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const reads = () => server.requests.filter((r) => r.startsWith(`/groups/${G}/messages?after=`)).length;

/**
 * Drives one switch cycle through `send` (the group's sockets or the inbox): 3 pushed,
 * 6 announced by a burst of ticks while reads are held, 2 pushed again after the push tick.
 */
async function cycle(
  send: (ev: object) => void,
  received: Message[],
  modes: DeliveryMode[],
  modeNow: () => DeliveryMode | undefined,
): Promise<void> {
  for (let i = 0; i < 3; i++) server.append(G, 'bob', `pushed ${i}`, null, true);
  await until(() => received.length === 3, 'pushed 1..3');
  expect(modeNow()).toBe('push');
  const epoch = server.group(G).epoch;
  // Nothing is being read now (pushed messages in order need no read): a tick that
  // announces nothing new reads nothing.
  const settled = reads();
  send({ type: 'tick', groupId: G, epoch, lastMsgId: 3, mode: 'push' });
  await sleep(100);
  expect(reads()).toBe(settled);
  // Pull: messages stored without a push, announced by ticks only.
  for (let i = 0; i < 6; i++) server.append(G, 'bob', `pulled ${i}`, null, false);
  const before = reads();
  server.holdReads.add(G);
  for (let last = 4; last <= 9; last++)
    send({ type: 'tick', groupId: G, epoch, lastMsgId: last, mode: 'pull' });
  await until(() => modeNow() === 'pull', 'pull mode');
  await sleep(100);
  expect(received).toHaveLength(3);
  server.holdReads.delete(G);
  await until(() => received.length === 9, 'pulled 4..9');
  // One read was held; the five ticks behind it cost one more read at most.
  expect(reads() - before).toBeLessThanOrEqual(2);
  // Back to push: the push tick at the head, then pushed messages.
  send({ type: 'tick', groupId: G, epoch, lastMsgId: 9, mode: 'push' });
  for (let i = 0; i < 2; i++) server.append(G, 'bob', `pushed again ${i}`, null, true);
  await until(() => received.length === 11, 'pushed 10..11');
  await sleep(100);
  expect(ids(received)).toEqual(range(1, 11));
  for (const m of received) expect(m.prevMsgId).toBe(m.msgId - 1);
  expect(modes).toEqual(['pull', 'push']);
  expect(modeNow()).toBe('push');
}

/** alice's GroupConnection to G, open, recording its messages and mode events. */
async function openGroup() {
  const api = new ChatApi({ baseUrl: server.baseUrl, token: 'alice' });
  const conn = new GroupConnection({ api, groupId: G, WebSocket, backoff: BACKOFF });
  closers.push(() => conn.close());
  const received: Message[] = [];
  const modes: DeliveryMode[] = [];
  conn.on('message', (m) => received.push(m));
  conn.on('mode', (m) => modes.push(m));
  await until(() => conn.state === 'open', 'open');
  return { conn, received, modes };
}

describe('pull mode in the SDK', () => {
  it('GroupConnection: ticks read ?after= (coalesced), every message once in order across push -> pull -> push', async () => {
    const { conn, received, modes } = await openGroup();
    await until(
      () => reads() + server.requests.filter((r) => r.includes('before=')).length > 0,
      'first load',
    );
    await cycle(
      (ev) => server.broadcast(G, ev),
      received,
      modes,
      () => conn.mode,
    );
  });

  it('a pushed message ends pull mode when the push tick was missed', async () => {
    const { conn, received, modes } = await openGroup();
    for (let i = 0; i < 4; i++) server.append(G, 'bob', `pulled ${i}`, null, false);
    server.broadcast(G, {
      type: 'tick',
      groupId: G,
      epoch: server.group(G).epoch,
      lastMsgId: 4,
      mode: 'pull',
    });
    await until(() => received.length === 4, 'pulled 1..4');
    expect(conn.mode).toBe('pull');
    // The push tick is lost; message 5 is pushed.
    server.append(G, 'bob', 'pushed', null, true);
    await until(() => received.length === 5, 'pushed 5');
    expect(conn.mode).toBe('push');
    expect(modes).toEqual(['pull', 'push']);
    expect(ids(received)).toEqual(range(1, 5));
  });

  it('InboxConnection: the same over the inbox, with the mode per group', async () => {
    const api = new ChatApi({ baseUrl: server.baseUrl, token: 'alice' });
    const conn = new InboxConnection({ api, userId: 'alice', groups: [G], WebSocket, backoff: BACKOFF });
    closers.push(() => conn.close());
    const received: Message[] = [];
    const modes: DeliveryMode[] = [];
    conn.on('message', (m) => received.push(m));
    conn.on('mode', (g, m) => {
      if (g === G) modes.push(m);
    });
    await until(() => conn.state === 'open', 'open');
    await until(() => server.requests.some((r) => r.startsWith(`/groups/${G}/messages`)), 'first load');
    await sleep(50);
    expect(conn.deliveryMode('other')).toBeUndefined();
    await cycle(
      (ev) => {
        for (const c of server.inboxes) server.sendInbox(c, ev);
      },
      received,
      modes,
      () => conn.deliveryMode(G),
    );
  });
});
