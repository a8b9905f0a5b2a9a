/**
 * InboxConnection on a real cluster (router and 3 shard processes on loopback): a user
 * in three groups owned by three different shards receives, over one inbox WebSocket on
 * its session host, every message posted by others (concurrently) exactly once and in
 * order per group. Then its session host is SIGKILLed: the SDK falls back to the
 * groups' own WebSockets and keeps receiving the groups of the other shards; once the
 * host is restarted it is back on the inbox, with no gap and no duplicate.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatApi } from '../../client/api.js';
import { ShardChatError } from '../../client/errors.js';
import { InboxConnection, type InboxStatus } from '../../client/inbox-connection.js';
import type { Message } from '../../client/types.js';
import { type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import { loadShardFunction } from '../helpers/shardchat.js';

useProcessCleanup();

const S = 3;

async function retryWhileUnavailable<T>(fn: () => Promise<T>, ms = 20_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof ShardChatError) || !err.retryable || Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe('InboxConnection on a real cluster', () => {
  let c: Cluster;
  let inbox: InboxConnection | undefined;

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), { shards: S });
  }, 90_000);

  afterAll(async () => {
    inbox?.close();
    await defaultRegistry.cleanup();
  });

  it('one inbox delivers three groups on three shards exactly once in order, falls back while its host is down, and comes back', async () => {
    const sfApi = await loadShardFunction();
    const sf = new sfApi.ShardFunction(sfApi.DEFAULT_SHARD_SPEC);
    const tag = `${process.pid}-${Date.now().toString(36)}`;
    const userId = `reader-${tag}`;
    const host = sf.shardOfKey(userId, S);
    // One group per shard: groups[i] lives on shard i.
    const groups: string[] = [];
    for (let shard = 0; shard < S; shard++) {
      for (let i = 0; ; i++) {
        const g = `inbox-${tag}-${i}`;
        if (sf.shardOfKey(g, S) === shard && !groups.includes(g)) {
          groups.push(g);
          break;
        }
      }
    }
    const posters = ['p0', 'p1', 'p2'].map((p) => `${p}-${tag}`);
    const owner = new ChatApi({ baseUrl: c.router.url, token: await c.token(posters[0] as string) });
    const apis = new Map<string, ChatApi>();
    for (const p of posters) apis.set(p, new ChatApi({ baseUrl: c.router.url, token: await c.token(p) }));
    const me = new ChatApi({ baseUrl: c.router.url, token: await c.token(userId) });
    for (const [i, g] of groups.entries()) {
      await owner.putGroup(g, { subject: `inbox test ${i}` });
      const served = await owner.getGroup(g);
      expect(served.shard).toBe(i);
      for (const p of posters.slice(1)) await (apis.get(p) as ChatApi).join(g, p);
      await me.join(g, userId);
    }

    const received = new Map<string, Message[]>(groups.map((g) => [g, []]));
    const states: InboxStatus[] = [];
    inbox = new InboxConnection({
      api: me,
      userId,
      groups,
      WebSocket,
      backoff: { minMs: 50, maxMs: 500, factor: 2 },
      fallbackAfterMs: 1500,
      ackTimeoutMs: 3000,
      maxSendAttempts: 100,
    });
    const conn = inbox;
    conn.on('message', (m) => received.get(m.groupId)?.push(m));
    conn.on('state', (s) => states.push(s));
    const errors: string[] = [];
    conn.on('error', (e, g) => errors.push(`${g ?? '-'}: ${e.code} ${e.message}`));
    await waitFor(() => conn.state === 'open' && conn.mode === 'inbox', { what: 'the inbox open' });
    expect(conn.shard).toBe(host);

    const counts = new Map<string, number>(groups.map((g) => [g, 0]));
    const post = async (g: string, n: number) => {
      for (let i = 0; i < n; i++) {
        const p = posters[i % posters.length] as string;
        await retryWhileUnavailable(() =>
          (apis.get(p) as ChatApi).post(g, `${g} #${i}`, `${p}-${g}-${counts.get(g)}-${i}`),
        );
      }
      counts.set(g, (counts.get(g) ?? 0) + n);
    };
    const expectAll = async (what: string) => {
      await waitFor(
        () => groups.every((g) => (received.get(g) as Message[]).length >= (counts.get(g) as number)),
        {
          what: `${what} (received ${groups.map((g) => received.get(g)?.length).join(', ')} of ${groups
            .map((g) => counts.get(g))
            .join(', ')}; errors: ${errors.slice(-5).join(' | ')})`,
          timeoutMs: 30_000,
        },
      );
      await new Promise((r) => setTimeout(r, 300));
      for (const g of groups) {
        const ms = received.get(g) as Message[];
        expect(
          ms.map((m) => m.msgId),
          g,
        ).toEqual(Array.from({ length: counts.get(g) as number }, (_, i) => i + 1));
        for (const m of ms) expect(m.prevMsgId).toBe(m.msgId - 1);
      }
    };

    // --- 3 × 50, concurrently ---
    await Promise.all(groups.map((g) => post(g, 50)));
    await expectAll('3 × 50 over the inbox');
    expect(states.every((s) => s.mode === 'inbox')).toBe(true);

    // --- SIGKILL the session host: the other shards' groups keep coming over their own sockets ---
    const victim = c.shards[host];
    victim?.proc.child.kill('SIGKILL');
    await victim?.proc.waitExit(5000);
    await waitFor(() => conn.mode === 'fallback', { what: 'fallback mode', timeoutMs: 15_000 });
    const others = groups.filter((_, i) => i !== host);
    await waitFor(() => others.every((g) => conn.isLive(g)), { what: 'group sockets of the live shards' });
    expect(conn.isLive(groups[host] as string)).toBe(false);
    await Promise.all(others.map((g) => post(g, 20)));
    await waitFor(
      () => others.every((g) => (received.get(g) as Message[]).length >= (counts.get(g) as number)),
      {
        what: 'the other shards’ messages during the outage',
        timeoutMs: 20_000,
      },
    );
    // A send to a live shard's group goes over its socket meanwhile.
    const during = conn.send(others[0] as string, 'sent during the outage');
    await during.done;
    counts.set(others[0] as string, (counts.get(others[0] as string) as number) + 1);

    // --- restart it: back to the inbox, no gap, no duplicate ---
    await c.restartShard(host);
    await waitFor(() => conn.mode === 'inbox' && conn.state === 'open', {
      what: 'back on the inbox',
      timeoutMs: 30_000,
    });
    await Promise.all(groups.map((g) => post(g, 10)));
    const after = groups.map((g) => conn.send(g, `mine in ${g}`));
    await Promise.all(after.map((o) => o.done));
    for (const g of groups) counts.set(g, (counts.get(g) as number) + 1);
    await expectAll('everything after the restart');
    expect(states.at(-1)).toMatchObject({ mode: 'inbox', state: 'open' });
    expect(states.some((s) => s.mode === 'fallback')).toBe(true);
    expect(conn.unacknowledged()).toEqual([]);
    // The server agrees.
    for (const g of groups) {
      const stored = await me.messagesAfter(g, 0, 200);
      expect(stored).toEqual(received.get(g));
    }
  }, 150_000);
});
