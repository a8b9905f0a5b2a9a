/**
 * The client SDK (ChatApi + GroupConnection) on a real cluster (router and 3 shard
 * processes on loopback): two users exchange messages over group WebSockets through the
 * router, each message delivered to both exactly once and in msgId order; then the
 * group's shard is SIGKILLed and restarted while one of them keeps sending, and both
 * connections recover without a loss, a duplicate or a reordering.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatApi } from '../../client/api.js';
import { type ConnectionState, GroupConnection, type Outgoing } from '../../client/group-connection.js';
import type { Ack, Message } from '../../client/types.js';
import { type Cluster, type ShardProc, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';

useProcessCleanup();

const S = 3;
const CLUSTER_START_MS = 90_000;

interface Client {
  userId: string;
  api: ChatApi;
  conn: GroupConnection;
  messages: Message[];
  states: ConnectionState[];
  resets: number;
  hellos: { shard?: number; epoch: string; lastMsgId: number }[];
}

/** Checks a delivery: msgIds 1..n in order, each once, the prevMsgId chain intact, one epoch. */
function expectChain(messages: Message[], n: number, epoch: string): void {
  expect(messages.map((m) => m.msgId)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  for (const m of messages) {
    expect(m.prevMsgId).toBe(m.msgId - 1);
    expect(m.epoch).toBe(epoch);
  }
}

describe('client SDK on a real cluster', () => {
  let c: Cluster;
  const clients: Client[] = [];

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), { shards: S });
  }, CLUSTER_START_MS);

  afterAll(async () => {
    for (const cl of clients) cl.conn.close();
    await defaultRegistry.cleanup();
  });

  async function client(userId: string, groupId: string): Promise<Client> {
    const api = new ChatApi({ baseUrl: c.router.url });
    api.token = await api.devToken(userId);
    const conn = new GroupConnection({
      api,
      groupId,
      WebSocket,
      backoff: { minMs: 50, maxMs: 500, factor: 2 },
      ackTimeoutMs: 3000,
      maxSendAttempts: 100,
    });
    const cl: Client = { userId, api, conn, messages: [], states: [], resets: 0, hellos: [] };
    conn.on('message', (m) => cl.messages.push(m));
    conn.on('state', (s) => cl.states.push(s));
    conn.on('reset', () => cl.resets++);
    conn.on('hello', (h) => cl.hellos.push(h));
    clients.push(cl);
    return cl;
  }

  it('delivers to both users exactly once and in order, and recovers from a SIGKILL of the shard', async () => {
    const groupId = `sdk-${process.pid}-${Date.now().toString(36)}`;
    const setup = new ChatApi({ baseUrl: c.router.url });
    setup.token = await setup.devToken('alice');
    expect(await setup.putUser('alice', { name: 'Alice' })).toMatchObject({ userId: 'alice', name: 'Alice' });
    const group = await setup.putGroup(groupId, { subject: 'client sdk' });
    expect(group).toMatchObject({ groupId, subject: 'client sdk', lastMsgId: 0 });
    const bobApi: ChatApi = new ChatApi({
      baseUrl: c.router.url,
      token: (): Promise<string> => bobApi.devToken('bob'),
    });
    // A token source may be a function; here it fetches a dev token each time.
    expect(await bobApi.join(groupId, 'bob')).toBe(groupId);

    const served = await setup.getGroup(groupId);
    expect(served.body).toMatchObject({ groupId, memberCount: 2, epoch: group.epoch });
    expect(served.shard).toBeTypeOf('number');
    const shardIndex = served.shard as number;
    expect(shardIndex).toBeGreaterThanOrEqual(0);
    expect(shardIndex).toBeLessThan(S);

    const alice = await client('alice', groupId);
    const bob = await client('bob', groupId);
    const both = [alice, bob];
    await waitFor(() => both.every((x) => x.conn.state === 'open'), { what: 'both connections open' });
    for (const x of both) {
      expect(x.conn.shard).toBe(shardIndex);
      expect(x.hellos[0]).toMatchObject({ shard: shardIndex, epoch: group.epoch, lastMsgId: 0 });
    }
    await waitFor(() => both.every((x) => x.conn.onlineUsers.length === 2), { what: 'presence of both' });
    expect(alice.conn.onlineUsers.sort()).toEqual(['alice', 'bob']);

    // --- 50 messages, alternately from alice and bob ---
    const N = 50;
    const sent: { from: Client; out: Outgoing }[] = [];
    for (let i = 0; i < N; i++) {
      const from = i % 2 === 0 ? alice : bob;
      sent.push({ from, out: from.conn.send(`message ${i} from ${from.userId}`) });
    }
    const acks: Ack[] = await Promise.all(sent.map((s) => s.out.done));
    await waitFor(() => both.every((x) => x.messages.length >= N), {
      what: `${N} messages at both`,
      timeoutMs: 20_000,
    });
    for (const x of both) {
      expectChain(x.messages, N, group.epoch);
      expect(x.messages.length).toBe(N);
    }
    expect(bob.messages).toEqual(alice.messages);
    expect(new Set(acks.map((a) => a.msgId)).size).toBe(N);
    for (const [i, s] of sent.entries()) {
      const ack = acks[i] as Ack;
      const m = alice.messages[ack.msgId - 1];
      expect(m).toMatchObject({
        userId: s.from.userId,
        clientMsgId: s.out.clientMsgId,
        contents: s.out.contents,
        ts: ack.ts,
      });
      expect(s.out.state).toBe('sent');
    }
    for (const x of both) expect(x.states).toEqual(['open']);

    // --- SIGKILL the group's shard; alice keeps sending during the outage ---
    const victim = c.shards[shardIndex] as ShardProc;
    expect(victim.proc.running).toBe(true);
    victim.proc.child.kill('SIGKILL');
    expect((await victim.proc.waitExit(5000))?.signal).toBe('SIGKILL');
    await waitFor(() => both.every((x) => x.conn.state === 'reconnecting'), {
      what: 'both connections reconnecting',
    });
    const M = 20;
    const during: Outgoing[] = [];
    for (let i = 0; i < M; i++) {
      during.push(alice.conn.send(`during the outage ${i}`));
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(during.every((o) => o.state === 'pending')).toBe(true);
    expect(alice.conn.unacknowledged).toHaveLength(M);
    await c.restartShard(shardIndex);

    const duringAcks = await Promise.all(during.map((o) => o.done));
    await waitFor(() => both.every((x) => x.messages.length >= N + M && x.conn.state === 'open'), {
      what: 'every message at both after the restart',
      timeoutMs: 30_000,
    });
    for (const x of both) {
      expect(x.states[0]).toBe('open');
      expect(x.states[1]).toBe('reconnecting');
      expect(x.states.at(-1)).toBe('open');
      expect(x.resets).toBe(0);
      expectChain(x.messages, N + M, group.epoch);
      expect(x.conn.shard).toBe(shardIndex);
      expect(x.hellos.at(-1)).toMatchObject({ shard: shardIndex, epoch: group.epoch });
    }
    expect(bob.messages).toEqual(alice.messages);
    expect(new Set(duringAcks.map((a) => a.msgId)).size).toBe(M);
    expect(duringAcks.map((a) => a.msgId).sort((a, b) => a - b)).toEqual(
      Array.from({ length: M }, (_, i) => N + i + 1),
    );
    for (const [i, o] of during.entries()) {
      const ack = duringAcks[i] as Ack;
      expect(o.state).toBe('sent');
      expect(alice.messages[ack.msgId - 1]).toMatchObject({
        userId: 'alice',
        clientMsgId: o.clientMsgId,
        contents: `during the outage ${i}`,
      });
    }
    expect(alice.conn.unacknowledged).toEqual([]);

    // The server agrees: N + M messages stored, and the shard that serves the group is the hello's.
    const after = await setup.getGroup(groupId);
    expect(after.body.lastMsgId).toBe(N + M);
    expect(after.shard).toBe(shardIndex);
    const stored = await setup.messagesAfter(groupId, 0, 200);
    expect(stored).toEqual(alice.messages);
  }, 120_000);
});
