/**
 * The groups of each user (docs/architecture.md section 4) on a real 3-shard cluster:
 * `GET /users/{u}/groups` on the user's shard lists the groups the user joined on every
 * shard, sub-conversations included; a leave removes one; the user's inbox is told
 * (`joined`, `left`); and a change made while the user's shard is down, then with the
 * group's shard killed before it could send it, arrives once both are back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { metricValue } from '../helpers/http.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import { Inbox, idOn, shardOfFn } from './inbox-helpers.js';

useProcessCleanup();

const S = 3;

describe('the groups of each user', () => {
  let c: Cluster;
  let shardOf: (id: string) => number;
  const tokens = new Map<string, string>();
  const tok = async (u: string): Promise<string> => {
    let t = tokens.get(u);
    if (!t) {
      t = await c.token(u);
      tokens.set(u, t);
    }
    return t;
  };
  const create = async (g: string, owner: string, extra: object = {}) => {
    const r = await api(c.router.url, 'PUT', `/groups/${g}`, await tok(owner), {
      subject: `About ${g}`,
      ...extra,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  };
  const join = async (g: string, u: string): Promise<string> => {
    const r = await api(c.router.url, 'POST', `/groups/${g}/members`, await tok(u), { userId: u });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.groupId as string;
  };
  const groupsOf = async (u: string, as = u) => {
    const r = await api(c.router.url, 'GET', `/users/${u}/groups`, await tok(as));
    return r;
  };
  const listed = async (u: string): Promise<string[]> => {
    const r = await groupsOf(u);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return (r.body.groups as { groupId: string }[]).map((g) => g.groupId);
  };
  /** Waits (bounded) until the user's groups are exactly `expected` (sorted). */
  const listedBecomes = (u: string, expected: string[]) =>
    waitFor(async () => JSON.stringify(await listed(u)) === JSON.stringify([...expected].sort()), {
      timeoutMs: 15_000,
    }).catch(async () => {
      expect(await listed(u)).toEqual([...expected].sort());
    });

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: S,
      config: { shard: { fanout: { retry: { minMs: 50, maxMs: 500 } } } },
    });
    shardOf = await shardOfFn(S);
  }, 60_000);
  afterAll(() => defaultRegistry.cleanup());

  it('lists the groups a user created and joined on every shard, and forgets one left; the inbox is told', async () => {
    const alice = idOn(shardOf, 'alice', 0);
    const groups = [0, 1, 2].map((s) => idOn(shardOf, 'ug-a', s));
    const inbox = await Inbox.open(c, alice, await tok(alice));
    await inbox.until((e) => e.some((x) => x.type === 'hello'));
    await create(groups[0] as string, alice);
    for (const g of groups.slice(1)) {
      await create(g, 'bob');
      await join(g, alice);
    }
    await listedBecomes(alice, groups);
    const r = await groupsOf(alice);
    for (const g of r.body.groups) expect(g.joinedAt).toBeGreaterThan(Date.now() - 60_000);
    await inbox.until(
      (e) => groups.every((g) => e.some((x) => x.type === 'joined' && x.groupId === g)),
      15_000,
      'joined events',
    );
    // bob's list has his two groups, not alice's
    await listedBecomes('bob', groups.slice(1));

    const left = await api(c.router.url, 'DELETE', `/groups/${groups[2]}/members/${alice}`, await tok(alice));
    expect(left.status).toBe(204);
    await listedBecomes(alice, groups.slice(0, 2));
    await inbox.until(
      (e) => e.some((x) => x.type === 'left' && x.groupId === groups[2]),
      15_000,
      'left event',
    );
    await inbox.close();
  });

  it('is only for the user (403), pages by group id, and refuses a bad limit', async () => {
    const u = 'pager';
    const ids = Array.from({ length: 5 }, (_, i) => `ug-page-${i}`);
    for (const g of ids) await create(g, u);
    await listedBecomes(u, ids);
    expect((await groupsOf(u, 'someone-else')).status).toBe(403);
    const first = await api(c.router.url, 'GET', `/users/${u}/groups?limit=2`, await tok(u));
    expect(first.body.groups.map((g: { groupId: string }) => g.groupId)).toEqual(ids.slice(0, 2));
    expect(first.body.next).toBe(ids[1]);
    const rest = await api(
      c.router.url,
      'GET',
      `/users/${u}/groups?limit=10&after=${first.body.next}`,
      await tok(u),
    );
    expect(rest.body.groups.map((g: { groupId: string }) => g.groupId)).toEqual(ids.slice(2));
    expect(rest.body.next).toBeUndefined();
    const bad = await api(c.router.url, 'GET', `/users/${u}/groups?limit=0`, await tok(u));
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('bad_parameter');
  });

  it('lists the sub-conversation a user was placed in', async () => {
    const parent = 'ug-big';
    await create(parent, 'owner-big', { capacity: 1, overflow: 'shard' });
    const placed = await join(parent, 'late-comer');
    expect(placed).toMatch(/^ug-big~\d+$/);
    await listedBecomes('late-comer', [placed]);
    await listedBecomes('owner-big', [parent]);
  });

  it('the internal route takes only users of its shard and well-formed changes, all or nothing', async () => {
    const post = (shard: number, body: unknown) =>
      fetch(`${c.shards[shard]?.adminUrl}/internal/user-groups`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-shardchat-internal-token': c.env.SHARDCHAT_INTERNAL_TOKEN as string,
        },
        body: JSON.stringify(body),
      });
    const mine = idOn(shardOf, 'int-user', 0);
    const other = idOn(shardOf, 'int-user', 1);
    const change = (userId: string) => ({ userId, groupId: 'int-g', member: true, joinedAt: 1 });
    const misdirected = await post(0, { changes: [change(mine), change(other)] });
    expect(misdirected.status).toBe(421);
    const bad = await post(0, { changes: [{ ...change(mine), member: 'yes' }] });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('bad_field');
    const tooMany = await post(0, { changes: Array.from({ length: 501 }, () => change(mine)) });
    expect(tooMany.status).toBe(400);
    expect(await listed(mine)).toEqual([]);
    expect((await post(0, { changes: [change(mine)] })).status).toBe(200);
    expect(await listed(mine)).toEqual(['int-g']);
  });

  it('keeps a join made while the user shard is down, even across a kill of the group shard, and writes it once both are back', async () => {
    const carol = idOn(shardOf, 'carol', 1);
    const g = idOn(shardOf, 'ug-c', 2);
    await tok(carol); // the token is issued by carol's shard, before it goes down
    await create(g, idOn(shardOf, 'dave', 2));
    await c.shards[1]?.proc.kill();
    // The join is answered by the group's shard alone.
    await join(g, carol);
    // The change waits in the group shard's outbox (counted); the process dies with it unsent.
    const queued = async () =>
      metricValue(
        await (await fetch(`${c.shards[2]?.adminUrl}/metrics`)).text(),
        'shardchat_shard_user_index_queued',
      );
    expect(await queued()).toBe(1);
    await c.shards[2]?.proc.kill();
    await c.restartShard(2);
    await c.restartShard(1);
    await listedBecomes(carol, [g]);
    // Dequeued once the user's shard answered.
    await waitFor(async () => (await queued()) === 0);
  });
});
