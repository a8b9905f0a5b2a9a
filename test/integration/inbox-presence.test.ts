/**
 * Presence across shards (docs/delivery-protocol.md section 6) on real processes: a
 * group on shard 0, two members whose session hosts are shards 1 and 2, each on their
 * inbox only. Each sees the other online through `presence` events and through
 * GET /groups/{g}/presence; `away` propagates; closing an inbox sends `offline` to the
 * other within a bound. A non-member's report is ignored, and a member on the group's
 * own WebSocket and members on inboxes see each other.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { WsClient } from '../helpers/http.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import { type Ev, Inbox, idOn, makeGroup, shardOfFn } from './inbox-helpers.js';

useProcessCleanup();

const S = 3;
/** How long a presence change may take to reach the other inbox. */
const BOUND_MS = 5000;

type Entry = { userId: string; connections: number; status: string };

describe('presence across shards (3 shards)', () => {
  let c: Cluster;
  let g: string; // on shard 0
  let ada: string; // session host 1
  let bob: string; // session host 2
  let cy: string; // session host 1, a member on the group's WebSocket
  let eve: string; // not a member
  const tokens = new Map<string, string>();
  const inboxes: Inbox[] = [];
  const tok = async (id: string) => {
    let t = tokens.get(id);
    if (!t) {
      t = await c.token(id);
      tokens.set(id, t);
    }
    return t;
  };
  const open = async (userId: string) => {
    const box = await Inbox.open(c, userId, await tok(userId));
    inboxes.push(box);
    await box.until((e) => e.some((x) => x.type === 'hello'), 10_000, 'hello');
    return box;
  };
  const presenceOf = async (asUser: string): Promise<Entry[]> => {
    const r = await api(c.router.url, 'GET', `/groups/${g}/presence`, await tok(asUser));
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return (r.body as { presence: Entry[] }).presence;
  };
  const saw = (userId: string, status: string) => (events: Ev[]) =>
    events.some(
      (e) => e.type === 'presence' && e.groupId === g && e.userId === userId && e.status === status,
    );

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), { shards: S });
    const shardOf = await shardOfFn(S);
    g = idOn(shardOf, 'plaza', 0);
    ada = idOn(shardOf, 'ada', 1);
    bob = idOn(shardOf, 'bob', 2);
    cy = idOn(shardOf, 'cy', 1);
    eve = idOn(shardOf, 'eve', 2);
    await makeGroup(c, g, ada, [bob, cy]);
  }, 60_000);
  afterAll(async () => {
    for (const b of inboxes) await b.close();
    await defaultRegistry.cleanup();
  });

  it('each sees the other online (events and GET), away propagates, a closed inbox goes offline within a bound', async () => {
    const a = await open(ada);
    const b = await open(bob);
    expect(a.events[0]).toMatchObject({ shard: 1 });
    expect(b.events[0]).toMatchObject({ shard: 2 });

    a.send({ type: 'follow', groupIds: [g] });
    await b.until(saw(ada, 'online'), BOUND_MS, 'ada online at bob');
    b.send({ type: 'follow', groupIds: [g] });
    await a.until(saw(bob, 'online'), BOUND_MS, 'bob online at ada');
    // Nobody hears about themself.
    expect(a.events.some((e) => e.type === 'presence' && e.userId === ada)).toBe(false);
    expect(b.events.some((e) => e.type === 'presence' && e.userId === bob)).toBe(false);

    for (const who of [ada, bob]) {
      const p = await presenceOf(who);
      expect(p).toEqual(
        expect.arrayContaining([
          { userId: ada, connections: 0, status: 'online' },
          { userId: bob, connections: 0, status: 'online' },
        ]),
      );
      expect(p).toHaveLength(2);
    }

    b.send({ type: 'status', status: 'away' });
    await a.until(saw(bob, 'away'), BOUND_MS, 'bob away at ada');
    expect(await presenceOf(ada)).toContainEqual({ userId: bob, connections: 0, status: 'away' });
    b.send({ type: 'status', status: 'online' });
    await a.until(
      (ev) => ev.filter((e) => e.type === 'presence' && e.userId === bob).at(-1)?.status === 'online',
      BOUND_MS,
      'bob online again',
    );

    const t0 = Date.now();
    await b.close();
    await a.until(saw(bob, 'offline'), BOUND_MS, 'bob offline at ada');
    expect(Date.now() - t0).toBeLessThan(BOUND_MS);
    expect((await presenceOf(ada)).map((e) => e.userId)).toEqual([ada]);

    // unfollow: offline for the others too.
    const b2 = await open(bob);
    b2.send({ type: 'follow', groupIds: [g] });
    await a.until((ev) => countOf(ev, bob, 'online') >= 3, BOUND_MS, 'bob online after reconnecting');
    a.send({ type: 'unfollow', groupIds: [g] });
    await b2.until(saw(ada, 'offline'), BOUND_MS, 'ada offline at bob after unfollow');
    expect((await presenceOf(bob)).map((e) => e.userId)).toEqual([bob]);
    a.send({ type: 'follow', groupIds: [g] });
    await b2.until((ev) => countOf(ev, ada, 'online') >= 1, BOUND_MS, 'ada back');
  });

  it('ignores a non-member’s follow; group WebSocket members and inbox members see each other', async () => {
    const e = await open(eve);
    e.send({ type: 'follow', groupIds: [g] });
    e.send({ type: 'bogus' });
    await e.until((ev) => ev.some((x) => x.type === 'error'), BOUND_MS, 'an error for the bogus event');
    expect((await presenceOf(ada)).map((x) => x.userId)).not.toContain(eve);

    const a = inboxes.find((b) => !b.ws.closeInfo && b.events[0]?.userId === ada) as Inbox;
    const before = countOf(a.events, cy, 'online');
    const ws = new WsClient(`${c.router.wsUrl}/groups/${g}/ws?token=${encodeURIComponent(await tok(cy))}`);
    await ws.opened;
    await a.until((ev) => countOf(ev, cy, 'online') > before, BOUND_MS, 'cy online at ada');
    const p = await presenceOf(cy);
    expect(p).toContainEqual({ userId: cy, connections: 1, status: 'online' });
    expect(p.map((x) => x.userId)).toEqual(expect.arrayContaining([ada, bob, cy]));

    // The group socket hears the inbox users' changes.
    a.send({ type: 'status', status: 'away' });
    for (;;) {
      const m = await ws.nextJson<Ev>(BOUND_MS);
      if (m.type === 'presence' && m.userId === ada && m.status === 'away') break;
    }
    ws.ws.close();
    await a.until((ev) => countOf(ev, cy, 'offline') >= 1, BOUND_MS, 'cy offline at ada');
  });
});

function countOf(events: Ev[], userId: string, status: string): number {
  return events.filter((e) => e.type === 'presence' && e.userId === userId && e.status === status).length;
}
