/**
 * Durability (docs/architecture.md section 4): a message is acknowledged only after it is durable.
 * Clients post continuously to groups of one shard while that shard's process is
 * SIGKILLed at random points and restarted on the same data; afterwards every
 * acknowledged message is there exactly once with its original msgId and contents,
 * ids stay contiguous, and posting continues with the next msgId.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Message } from '../../shard/storage/store.js';
import { api, type Cluster, type ShardProc, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import { loadShardFunction } from '../helpers/shardchat.js';

useProcessCleanup();

/** Starting a cluster of real processes can be slow on a loaded machine. */
const CLUSTER_START_MS = 90_000;

const S = 3;
const TARGET = 1;
const GROUPS = 3;
const POSTERS = 6;
const ROUNDS = 3;
/** Per poster: an upper bound on messages, whatever happens. */
const MAX_PER_POSTER = 3000;
/** How long one message may take to be acknowledged (retries included) before the test fails. */
const ACK_DEADLINE_MS = 60_000;

interface Ack {
  groupId: string;
  userId: string;
  clientMsgId: string;
  contents: string;
  msgId: number;
  ts: number;
  status: number;
}

/** A stored message as the API returns it. */
type Msg = Message;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rand = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));

/** One POST with a timeout; a status, or 0 when the request failed at the network level. */
async function post(
  base: string,
  groupId: string,
  token: string,
  body: { contents: string; clientMsgId: string },
): Promise<{ status: number; body: { msgId: number; ts: number } | undefined }> {
  try {
    const res = await fetch(`${base}/groups/${groupId}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    let parsed: { msgId: number; ts: number } | undefined;
    try {
      parsed = JSON.parse(text) as { msgId: number; ts: number };
    } catch {
      parsed = undefined;
    }
    return { status: res.status, body: parsed };
  } catch {
    return { status: 0, body: undefined };
  }
}

async function readAll(c: Cluster, groupId: string, token: string): Promise<Msg[]> {
  const all: Msg[] = [];
  for (let page = 0; page < 10_000; page++) {
    const after = all.length ? (all[all.length - 1] as Msg).msgId : 0;
    const r = await api(c.router.url, 'GET', `/groups/${groupId}/messages?after=${after}&limit=200`, token);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const msgs = r.body.messages as Msg[];
    all.push(...msgs);
    if (msgs.length < 200) return all;
  }
  throw new Error('too many pages');
}

/** Waits (bounded) until the router forwards to the shard again: a read of `groupId` answers 200. */
async function waitServing(c: Cluster, groupId: string, token: string, ms = 45_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const r = await api(c.router.url, 'GET', `/groups/${groupId}`, token).catch(() => undefined);
    if (r?.status === 200) return;
    await sleep(50);
  }
  throw new Error(`${groupId} is not served again within ${ms} ms`);
}

describe('durability of acknowledged messages across SIGKILL', () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: S,
      // Each poster sends one message per round trip for seconds, as fast as the machine
      // allows: durability is tested here, not the per-user message limit (429 would fail it).
      config: { shard: { limits: { userMessagesPerSecond: 100000, userMessageBurst: 100000 } } },
    });
  }, CLUSTER_START_MS);
  afterAll(() => defaultRegistry.cleanup());

  it('keeps every acknowledged message, exactly once, through 3 kills at random points', async () => {
    const { ShardFunction, DEFAULT_SHARD_SPEC } = await loadShardFunction();
    const sf = new ShardFunction(DEFAULT_SHARD_SPEC);
    const run = `${process.pid}-${Date.now().toString(36)}`;
    const groups: string[] = [];
    for (let i = 0; groups.length < GROUPS && i < 10_000; i++) {
      const id = `dur-${run}-${i}`;
      if (sf.shardOfKey(id, S) === TARGET) groups.push(id);
    }
    expect(groups).toHaveLength(GROUPS);

    const users = await Promise.all(
      Array.from({ length: POSTERS }, async (_, i) => {
        const id = `poster-${run}-${i}`;
        return { id, token: await c.token(id) };
      }),
    );
    const owner = users[0] as (typeof users)[0];
    for (const g of groups) {
      expect((await api(c.router.url, 'PUT', `/groups/${g}`, owner.token, { subject: g })).status).toBe(201);
      for (const u of users.slice(1)) {
        const joined = await api(c.router.url, 'POST', `/groups/${g}/members`, u.token, { userId: u.id });
        expect(joined.status, JSON.stringify(joined.body)).toBe(200);
      }
    }
    const epochs = new Map<string, string>();
    for (const g of groups) {
      epochs.set(g, (await api(c.router.url, 'GET', `/groups/${g}`, owner.token)).body.epoch as string);
    }

    const acks: Ack[] = [];
    let retries = 0;
    let stop = false;
    const failures: string[] = [];

    /** A poster: posts one message at a time, retrying the same clientMsgId until it is acknowledged. */
    const poster = async (p: number) => {
      const u = users[p] as (typeof users)[0];
      for (let n = 0; n < MAX_PER_POSTER && !stop; n++) {
        const groupId = groups[(p + n) % groups.length] as string;
        const clientMsgId = `p${p}-n${n}`;
        const contents = `poster ${p} message ${n} ${'x'.repeat(n % 50)}`;
        const deadline = Date.now() + ACK_DEADLINE_MS;
        for (;;) {
          const r = await post(c.router.url, groupId, u.token, { contents, clientMsgId });
          if ((r.status === 201 || r.status === 200) && r.body) {
            acks.push({
              groupId,
              userId: u.id,
              clientMsgId,
              contents,
              msgId: r.body.msgId,
              ts: r.body.ts,
              status: r.status,
            });
            break;
          }
          if (r.status !== 0 && r.status < 500) {
            failures.push(`${groupId} ${clientMsgId}: unexpected ${r.status} ${JSON.stringify(r.body)}`);
            return;
          }
          if (Date.now() > deadline) {
            failures.push(`${groupId} ${clientMsgId}: no acknowledgement within ${ACK_DEADLINE_MS} ms`);
            return;
          }
          retries++;
          await sleep(rand(20, 80));
        }
      }
    };

    const posters = users.map((_, p) => poster(p));
    const acksAtLeast = async (n: number, ms: number) => {
      const deadline = Date.now() + ms;
      while (acks.length < n && Date.now() < deadline && failures.length === 0) await sleep(20);
      expect(failures).toEqual([]);
      expect(acks.length).toBeGreaterThanOrEqual(n);
    };

    try {
      await sleep(1000);
      await acksAtLeast(POSTERS, 30_000);
      for (let round = 0; round < ROUNDS; round++) {
        await sleep(rand(300, 1200));
        const shard = c.shards[TARGET] as ShardProc;
        const before = acks.length;
        expect(shard.proc.running).toBe(true);
        shard.proc.child.kill('SIGKILL');
        const exit = await shard.proc.waitExit(5000);
        expect(exit?.signal).toBe('SIGKILL');
        await c.restartShard(TARGET);
        await waitServing(c, groups[0] as string, owner.token);
        // Posting resumes on the restarted shard before the next kill.
        await acksAtLeast(acks.length + POSTERS * 2, 45_000);
        expect(acks.length).toBeGreaterThan(before);
      }
    } finally {
      stop = true;
      await Promise.all(posters);
    }
    expect(failures).toEqual([]);
    expect(retries).toBeGreaterThan(0);

    for (const g of groups) {
      const stored = await readAll(c, g, owner.token);
      const mine = acks.filter((a) => a.groupId === g);
      expect(mine.length).toBeGreaterThan(0);
      // Contiguous ids from 1 with a consistent chain, one epoch from before the kills.
      expect(stored.map((m) => m.msgId)).toEqual(Array.from({ length: stored.length }, (_, i) => i + 1));
      for (const m of stored) {
        expect(m.prevMsgId).toBe(m.msgId - 1);
        expect(m.epoch).toBe(epochs.get(g));
      }
      // Exactly once: no (user, clientMsgId) twice, and every stored message was acknowledged
      // (posters retry each clientMsgId until it is).
      const keys = stored.map((m) => `${m.userId}/${m.clientMsgId}`);
      expect(new Set(keys).size).toBe(keys.length);
      expect(stored.length).toBe(mine.length);
      // Every acknowledgement: the stored message with its original msgId, ts and contents.
      for (const a of mine) {
        const m = stored[a.msgId - 1];
        expect(m, `${a.clientMsgId} acknowledged as ${a.msgId}`).toMatchObject({
          msgId: a.msgId,
          userId: a.userId,
          clientMsgId: a.clientMsgId,
          contents: a.contents,
          ts: a.ts,
        });
      }
      // Posting continues with the next msgId.
      const next = await api(c.router.url, 'POST', `/groups/${g}/messages`, owner.token, {
        contents: 'after the kills',
        clientMsgId: `final-${run}`,
      });
      expect(next.status).toBe(201);
      expect(next.body).toMatchObject({
        msgId: stored.length + 1,
        prevMsgId: stored.length,
        epoch: epochs.get(g),
      });
      const info = await api(c.router.url, 'GET', `/groups/${g}`, owner.token);
      expect(info.body).toMatchObject({ lastMsgId: stored.length + 1, memberCount: POSTERS });
    }
  }, 240_000);
});
