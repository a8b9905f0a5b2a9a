/**
 * Continuous load on a cluster while something happens to it (a migration, faults):
 * posters through the router retrying with the same clientMsgId, members joining and
 * leaving, GroupConnection and InboxConnection subscribers; afterwards, what every
 * check of docs/architecture.md section 7's guarantees needs: acknowledged messages
 * present once, contiguous msgIds, unchanged epochs, every subscriber complete and in
 * order, no 5xx seen by any client.
 */
import { expect } from 'vitest';
import WebSocket from 'ws';
import { ChatApi } from '../../client/api.js';
import { InboxConnection } from '../../client/inbox-connection.js';
import type { Message } from '../../client/types.js';
import { api, type Cluster } from './cluster.js';
import {
  chainProblems,
  makeGroup,
  users as makeUsers,
  postOnce,
  rand,
  readAll,
  type SdkClient,
  sdkClient,
  sleep,
  type TestUser,
  timedRequest,
} from './reliability.js';

export interface LoadResult {
  acked: number;
  fiveHundreds: string[];
  /** Latencies (ms) of acknowledged posts. */
  latencies: number[];
}

export class ReshardLoad {
  readonly groups: string[] = [];
  private people: TestUser[] = [];
  private subscribers: SdkClient[] = [];
  private inboxes: { user: string; inbox: InboxConnection; got: Map<string, Message[]> }[] = [];
  private readonly acked = new Map<string, Set<string>>();
  private readonly epochs = new Map<string, string>();
  private readonly fiveHundreds: string[] = [];
  private readonly latencies: number[] = [];
  private stopping = false;
  private running: Promise<void>[] = [];
  private memberships = new Map<string, Set<string>>();
  /** The sharded conversation (overflow: shard, capacity 2) and where its users were placed. */
  private readonly big: string;
  private readonly placed = new Map<string, string>();

  constructor(
    private readonly c: Cluster,
    private readonly prefix: string,
    private readonly nGroups = 8,
  ) {
    this.big = `${prefix}-big`;
  }

  async setup(): Promise<void> {
    this.people = await makeUsers(this.c, this.prefix, 8);
    const [owner, ...rest] = this.people as [TestUser, ...TestUser[]];
    for (let i = 0; i < this.nGroups; i++) {
      const g = `${this.prefix}-g${i}`;
      await makeGroup(this.c, g, owner, rest.slice(0, 4));
      this.groups.push(g);
      this.acked.set(g, new Set());
      this.memberships.set(g, new Set([owner.id, ...rest.slice(0, 4).map((u) => u.id)]));
      const row = await api(this.c.router.url, 'GET', `/groups/${g}`, owner.token);
      this.epochs.set(g, row.body.epoch);
      await this.c.token(owner.id);
    }
    for (const p of this.people) {
      const r = await api(this.c.router.url, 'PUT', `/users/${p.id}`, p.token, { name: `Name ${p.id}` });
      expect(r.status).toBeLessThan(300);
    }
    // A sharded conversation: its roster (on the parent's shard) places users in ~k.
    const created = await api(this.c.router.url, 'PUT', `/groups/${this.big}`, owner.token, {
      subject: this.big,
      capacity: 2,
      overflow: 'shard',
    });
    expect(created.status).toBe(201);
    this.placed.set(owner.id, this.big);
    for (const u of rest.slice(0, 4)) await this.joinBig(u);
    // One GroupConnection per group (the owner), one InboxConnection per member 1..2.
    for (const g of this.groups) this.subscribers.push(sdkClient(this.c.router.url, owner, g));
    const resume: Record<string, { epoch: string; lastMsgId: number }> = {};
    for (const g of this.groups) resume[g] = { epoch: this.epochs.get(g) as string, lastMsgId: 0 };
    for (const u of rest.slice(0, 2)) {
      const inbox = new InboxConnection({
        api: new ChatApi({ baseUrl: this.c.router.url, token: u.token, timeoutMs: 10_000 }),
        userId: u.id,
        groups: this.groups,
        resume,
        WebSocket,
        presencePollMs: 0,
        backoff: { minMs: 50, maxMs: 500, factor: 2 },
      });
      const got = new Map<string, Message[]>(this.groups.map((g) => [g, []]));
      inbox.on('message', (m) => got.get(m.groupId)?.push(m));
      this.inboxes.push({ user: u.id, inbox, got });
    }
  }

  /**
   * Starts the posters (each posts to the groups in turn, at most `postsPerPoster` times
   * and for at most `maxMs`, fewer once `stop()` is called) and a joiner. A test whose
   * load must overlap something (a migration) posts until it calls `stop()`: a load
   * bounded by its count alone finishes early on a slow machine.
   */
  start(postsPerPoster = 60, maxMs = 300_000): void {
    const posters = this.people.slice(0, 5);
    const until = Date.now() + maxMs;
    this.running = posters.map(async (u, w) => {
      for (let i = 0; i < postsPerPoster && !this.stopping && Date.now() < until; i++) {
        const g = this.groups[(w + i) % this.groups.length] as string;
        if (!this.memberships.get(g)?.has(u.id)) continue;
        await this.post(u, g, `${u.id}-${i}`);
        await sleep(rand(5, 30));
      }
    });
    // Users 5..7 join and leave groups meanwhile (never posting: their membership changes).
    this.running.push(
      (async () => {
        for (let i = 0; i < 40 && !this.stopping; i++) {
          const u = this.people[5 + (i % 3)] as TestUser;
          const g = this.groups[i % this.groups.length] as string;
          const join = i % 2 === 0;
          const r = join
            ? await timedRequest(this.c.router.url, 'POST', `/groups/${g}/members`, u.token, { userId: u.id })
            : await timedRequest(this.c.router.url, 'DELETE', `/groups/${g}/members/${u.id}`, u.token);
          if (r.status >= 500 || r.status === 0)
            this.fiveHundreds.push(`${join ? 'join' : 'leave'} ${g}: ${r.status}`);
          await sleep(rand(20, 60));
        }
      })(),
    );
    // Users 5..7 join the sharded conversation meanwhile, and join again (same answer).
    this.running.push(
      (async () => {
        for (let i = 0; i < 6 && !this.stopping; i++) {
          await this.joinBig(this.people[5 + (i % 3)] as TestUser);
          await sleep(rand(50, 150));
        }
      })(),
    );
  }

  private async joinBig(u: TestUser): Promise<void> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const r = await timedRequest(this.c.router.url, 'POST', `/groups/${this.big}/members`, u.token, {
        userId: u.id,
      });
      if (r.status === 200) {
        const was = this.placed.get(u.id);
        if (was !== undefined) expect(r.body.groupId, `${u.id} placed again elsewhere`).toBe(was);
        this.placed.set(u.id, r.body.groupId);
        return;
      }
      if (r.status >= 500 || r.status === 0) this.fiveHundreds.push(`join ${this.big}: ${r.status}`);
      await sleep(100);
    }
    throw new Error(`${u.id} could not join ${this.big}`);
  }

  private async post(u: TestUser, g: string, clientMsgId: string): Promise<void> {
    const until = Date.now() + 60_000;
    const started = performance.now();
    for (;;) {
      const r = await postOnce(this.c.router.url, g, u.token, { contents: `from ${u.id}`, clientMsgId });
      if (r.status === 200 || r.status === 201) {
        this.acked.get(g)?.add(clientMsgId);
        this.latencies.push(performance.now() - started);
        return;
      }
      if (r.status >= 500)
        this.fiveHundreds.push(`post ${g} ${clientMsgId}: ${r.status} ${JSON.stringify(r.body)}`);
      if (Date.now() > until) throw new Error(`post ${g} ${clientMsgId} kept failing: ${r.status}`);
      await sleep(100);
    }
  }

  /** Posts acknowledged so far. */
  get ackedSoFar(): number {
    return [...this.acked.values()].reduce((a, s) => a + s.size, 0);
  }

  /** Posters, joiners and leavers start nothing new; what is under way completes. */
  stop(): void {
    this.stopping = true;
  }

  async finish(): Promise<LoadResult> {
    await Promise.all(this.running);
    return {
      acked: this.ackedSoFar,
      fiveHundreds: this.fiveHundreds,
      latencies: this.latencies,
    };
  }

  /** Stored history, epochs, subscribers: every guarantee checked. */
  async verify(): Promise<void> {
    const owner = this.people[0] as TestUser;
    const stored = new Map<string, Message[]>();
    for (const g of this.groups) {
      const all = await readAll(this.c.router.url, g, owner.token);
      expect(chainProblems(all, g)).toEqual([]);
      const ids = all.map((m) => m.clientMsgId);
      expect(new Set(ids).size, `${g}: a clientMsgId stored twice`).toBe(ids.length);
      for (const id of this.acked.get(g) ?? []) expect(ids, `${g}: acknowledged ${id} missing`).toContain(id);
      expect(
        all.every((m) => m.epoch === this.epochs.get(g)),
        `${g}: epoch changed`,
      ).toBe(true);
      stored.set(g, all);
      const row = await api(this.c.router.url, 'GET', `/groups/${g}`, owner.token);
      expect(row.body.epoch).toBe(this.epochs.get(g));
      expect(row.body.lastMsgId).toBe(all.length);
    }
    for (const p of this.people) {
      const r = await api(this.c.router.url, 'GET', `/users/${p.id}`, p.token);
      expect(r.status, `profile ${p.id}`).toBe(200);
      expect(r.body.name).toBe(`Name ${p.id}`);
    }
    // The roster moved with its parent: a repeated join answers the same conversation,
    // and every conversation lists exactly the users placed in it.
    for (const p of this.people.filter((x) => this.placed.has(x.id) && x !== owner)) await this.joinBig(p);
    const byConv = new Map<string, string[]>();
    for (const [u, conv] of this.placed) byConv.set(conv, [...(byConv.get(conv) ?? []), u].sort());
    for (const [conv, members] of byConv) {
      const asUser = this.people.find((x) => x.id === members[0]) as TestUser;
      const r = await api(this.c.router.url, 'GET', `/groups/${conv}/members?limit=100`, asUser.token);
      expect(r.status, `${conv}: ${JSON.stringify(r.body)}`).toBe(200);
      expect((r.body.members as { userId: string }[]).map((m) => m.userId).sort(), conv).toEqual(members);
    }
    const key = (m: Message) => `${m.msgId}:${m.clientMsgId}`;
    const complete = () =>
      this.subscribers.every((s) => s.messages.length >= (stored.get(s.conn.groupId)?.length ?? 0)) &&
      this.inboxes.every((i) =>
        this.groups.every((g) => (i.got.get(g)?.length ?? 0) >= (stored.get(g)?.length ?? 0)),
      );
    for (const until = Date.now() + 60_000; !complete() && Date.now() < until; ) await sleep(100);
    for (const s of this.subscribers)
      expect(s.messages.map(key), `GroupConnection of ${s.conn.groupId}`).toEqual(
        stored.get(s.conn.groupId)?.map(key),
      );
    for (const i of this.inboxes)
      for (const g of this.groups)
        expect(
          i.got.get(g)?.map(key),
          `InboxConnection of ${i.user} (${i.inbox.mode}/${i.inbox.state} on shard ${i.inbox.shard}, SDK lastMsgId ${i.inbox.lastMsgId(g)}, syncing ${(i.inbox as unknown as { groups: Map<string, { seq?: { syncing?: boolean; ahead?: Map<unknown, unknown> } }> }).groups.get(g)?.seq?.syncing}), group ${g}`,
        ).toEqual(stored.get(g)?.map(key));
  }

  close(): void {
    this.stopping = true;
    for (const s of this.subscribers) s.conn.close();
    for (const i of this.inboxes) i.inbox.close();
  }
}
