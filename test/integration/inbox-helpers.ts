/**
 * Helpers of the inbox / fan-out tests (docs/delivery-protocol.md): ids on chosen
 * shards, an inbox reader on the real `ws` package, metrics of one shard.
 */
import { expect } from 'vitest';
import { api, type Cluster } from '../helpers/cluster.js';
import { metricValue, parseMetrics, WsClient } from '../helpers/http.js';
import { loadShardFunction } from '../helpers/shardchat.js';

export type Ev = Record<string, unknown> & { type: string };

/** The shard of an id under S shards (the project's own shard function, from dist/). */
export async function shardOfFn(S: number): Promise<(id: string) => number> {
  const sf = await loadShardFunction();
  const fn = new sf.ShardFunction(sf.DEFAULT_SHARD_SPEC);
  return (id) => fn.shardOfKey(id, S);
}

/** The first id `${prefix}${n}` that lives on `shard`. */
export function idOn(shardOf: (id: string) => number, prefix: string, shard: number): string {
  for (let n = 0; n < 10_000; n++) if (shardOf(`${prefix}${n}`) === shard) return `${prefix}${n}`;
  throw new Error(`no id ${prefix}N on shard ${shard}`);
}

/** An inbox WebSocket that records every event it gets. */
export class Inbox {
  readonly ws: WsClient;
  readonly events: Ev[] = [];
  private pumping: Promise<void>;
  private stopped = false;

  constructor(url: string) {
    this.ws = new WsClient(url);
    this.pumping = Promise.resolve();
  }

  static async open(c: Cluster, userId: string, token: string, base = c.router.wsUrl): Promise<Inbox> {
    return Inbox.openUrl(`${base}/users/${encodeURIComponent(userId)}/ws?token=${encodeURIComponent(token)}`);
  }

  /** Any WebSocket of the chat protocol (a group's, an inbox), recording its events. */
  static async openUrl(url: string): Promise<Inbox> {
    const box = new Inbox(url);
    await box.ws.opened;
    box.pumping = box.pump();
    return box;
  }

  private async pump(): Promise<void> {
    while (!this.stopped) {
      try {
        this.events.push(await this.ws.nextJson<Ev>(1000));
      } catch {
        if (this.ws.closeInfo) return;
      }
    }
  }

  messages(groupId?: string): Ev[] {
    return this.events.filter(
      (e) => e.type === 'message' && (groupId === undefined || e.groupId === groupId),
    );
  }

  /** Waits (bounded) until `pred` holds on the events seen. */
  async until(pred: (events: Ev[]) => boolean, ms = 20_000, what = 'inbox events'): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred(this.events)) {
      if (Date.now() > deadline || this.ws.closeInfo)
        throw new Error(
          `timed out waiting for ${what} (${this.events.length} events, closed ${JSON.stringify(this.ws.closeInfo)}): ${JSON.stringify(this.events.slice(-3)).slice(0, 400)}`,
        );
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  send(ev: object): void {
    this.ws.send(JSON.stringify(ev));
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.ws.terminate();
    await this.pumping;
  }
}

/** A token per user of a cluster, fetched once (`cluster` is read on each call: it may be set later). */
export function tokenCache(cluster: () => Cluster): (userId: string) => Promise<string> {
  const tokens = new Map<string, Promise<string>>();
  return (userId) => {
    let t = tokens.get(userId);
    if (!t) {
      t = cluster().token(userId);
      tokens.set(userId, t);
    }
    return t;
  };
}

export async function shardMetrics(c: Cluster, shard: number): Promise<string> {
  const res = await fetch(`${c.shards[shard]?.adminUrl}/metrics`);
  return res.text();
}

export async function metricOn(
  c: Cluster,
  shard: number,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  return metricValue(await shardMetrics(c, shard), name, labels) ?? 0;
}

/** The sum of a counter over every series (all labels) on every shard. */
export async function metricSum(c: Cluster, name: string): Promise<number[]> {
  return Promise.all(
    c.shards.map(async (s) => {
      const res = await fetch(`${s.adminUrl}/metrics`).catch(() => undefined);
      if (!res) return 0;
      return parseMetrics(await res.text())
        .filter((x) => x.name === name)
        .reduce((a, x) => a + x.value, 0);
    }),
  );
}

export async function makeGroup(
  c: Cluster,
  groupId: string,
  owner: string,
  members: string[],
): Promise<void> {
  const r = await api(c.router.url, 'PUT', `/groups/${groupId}`, await c.token(owner), { subject: groupId });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  for (const m of members) {
    const res = await api(c.router.url, 'POST', `/groups/${groupId}/members`, await c.token(m), {
      userId: m,
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
  }
}

/** Posts `n` messages to each group, from the posters in turn, `concurrency` requests at a time. */
export async function postMany(
  c: Cluster,
  groups: string[],
  posters: { userId: string; token: string }[],
  n: number,
  tag: string,
  concurrency = 24,
): Promise<void> {
  const jobs: (() => Promise<void>)[] = [];
  for (const g of groups)
    for (let i = 0; i < n; i++) {
      const p = posters[i % posters.length] as { userId: string; token: string };
      jobs.push(async () => {
        const r = await api(c.router.url, 'POST', `/groups/${g}/messages`, p.token, {
          contents: `${tag} ${g} ${i}`,
          clientMsgId: `${tag}-${g}-${i}`,
        });
        expect(r.status, JSON.stringify(r.body)).toBe(201);
      });
    }
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < jobs.length) await (jobs[next++] as () => Promise<void>)();
    }),
  );
}

/** msgIds of a group's messages as received, and a check that they are exactly 1..n in order. */
export function expectInOrder(events: Ev[], groupId: string, from: number, to: number): void {
  const ids = events
    .filter((e) => e.type === 'message' && e.groupId === groupId)
    .map((e) => e.msgId as number);
  expect(ids, `${groupId}: ${ids.length} received`).toEqual(
    Array.from({ length: to - from + 1 }, (_, i) => from + i),
  );
}
