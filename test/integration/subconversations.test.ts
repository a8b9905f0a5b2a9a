/**
 * Sharded conversations (docs/architecture.md section 5) through the router of a 3-shard cluster:
 * a group with `overflow: shard` fills itself to `capacity`, then sub-conversations
 * `{id}~k` on the shards the shard function names; the parent's shard keeps the roster.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import { loadShardFunction } from '../helpers/shardchat.js';

useProcessCleanup();

const S = 3;

describe('sharded conversations (overflow: shard)', () => {
  let c: Cluster;
  let ownerOf: (id: string) => number;
  const tokens = new Map<string, string>();

  const tok = async (userId: string): Promise<string> => {
    let t = tokens.get(userId);
    if (!t) {
      t = await c.token(userId);
      tokens.set(userId, t);
    }
    return t;
  };
  const create = async (groupId: string, owner: string, capacity: number) => {
    const r = await api(c.router.url, 'PUT', `/groups/${groupId}`, await tok(owner), {
      subject: `Subject of ${groupId}`,
      capacity,
      overflow: 'shard',
    });
    expect(r.status).toBe(201);
  };
  const join = async (groupId: string, userId: string) =>
    api(c.router.url, 'POST', `/groups/${groupId}/members`, await tok(userId), { userId });
  const joined = async (groupId: string, userId: string): Promise<string> => {
    const r = await join(groupId, userId);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.groupId as string;
  };
  const group = async (groupId: string, asUser: string) => {
    const r = await api(c.router.url, 'GET', `/groups/${groupId}`, await tok(asUser));
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body;
  };
  const members = async (groupId: string, asUser: string): Promise<string[]> => {
    const r = await api(c.router.url, 'GET', `/groups/${groupId}/members?limit=100`, await tok(asUser));
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return (r.body.members as { userId: string }[]).map((m) => m.userId).sort();
  };
  /** Conversation → its users, from the join answers. */
  const byConversation = (placed: Map<string, string>): Map<string, string[]> => {
    const out = new Map<string, string[]>();
    for (const [user, conv] of placed) out.set(conv, [...(out.get(conv) ?? []), user].sort());
    return out;
  };
  /** Every conversation's member list and count, read as one of its members, match the placement. */
  const checkConsistent = async (placed: Map<string, string>, capacity: number) => {
    for (const [conv, users] of byConversation(placed)) {
      const asUser = users[0] as string;
      const g = await group(conv, asUser);
      expect(g.memberCount).toBe(users.length);
      expect(g.memberCount).toBeLessThanOrEqual(capacity);
      expect(await members(conv, asUser)).toEqual(users);
    }
  };

  beforeAll(async () => {
    // Internal calls give up quickly, so that a hung shard's join answers 503 within a test.
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: S,
      config: { shard: { internal: { attempts: 2, timeoutMs: 800, backoffMs: 50 } } },
    });
    const sf = await loadShardFunction();
    const fn = new sf.ShardFunction(sf.DEFAULT_SHARD_SPEC);
    ownerOf = (id) => fn.shardOfKey(id, S);
  });
  afterAll(() => defaultRegistry.cleanup());

  const lobby = new Map<string, string>();

  it('fills the parent to capacity, then ~1, ~2, ~3 with the same subject and owner', async () => {
    await create('lobby', 'u0', 3);
    lobby.set('u0', 'lobby');
    for (let i = 1; i <= 9; i++) lobby.set(`u${i}`, await joined('lobby', `u${i}`));
    expect(Object.fromEntries(lobby)).toEqual({
      u0: 'lobby',
      u1: 'lobby',
      u2: 'lobby',
      u3: 'lobby~1',
      u4: 'lobby~1',
      u5: 'lobby~1',
      u6: 'lobby~2',
      u7: 'lobby~2',
      u8: 'lobby~2',
      u9: 'lobby~3',
    });
    await checkConsistent(lobby, 3);
    for (const [k, asUser] of [
      [1, 'u3'],
      [2, 'u6'],
      [3, 'u9'],
    ] as const) {
      const g = await group(`lobby~${k}`, asUser);
      expect(g).toMatchObject({
        subject: 'Subject of lobby',
        owner: 'u0',
        capacity: 3,
        parent: 'lobby',
        overflow: 'reject',
      });
    }
  });

  it('answers a repeated join with the same conversation', async () => {
    for (const u of ['u0', 'u2', 'u4', 'u8', 'u9']) expect(await joined('lobby', u)).toBe(lobby.get(u));
    await checkConsistent(lobby, 3);
  });

  it('keeps each sub-conversation on the shard the shard function names', async () => {
    for (const [k, asUser] of [
      [1, 'u3'],
      [2, 'u6'],
      [3, 'u9'],
    ] as const) {
      const id = `lobby~${k}`;
      const owner = ownerOf(id);
      for (const shard of c.shards) {
        const r = await api(shard.url, 'GET', `/groups/${id}`, await tok(asUser));
        expect(r.status, `${id} on shard ${shard.ordinal}`).toBe(shard.ordinal === owner ? 200 : 421);
        if (shard.ordinal === owner) expect(r.body.groupId).toBe(id);
      }
    }
  });

  it('lets members of lobby~1 post and read there, and nobody else', async () => {
    const posted = await api(c.router.url, 'POST', '/groups/lobby~1/messages', await tok('u3'), {
      contents: 'hello from ~1',
      clientMsgId: 'c1',
    });
    expect(posted.status).toBe(201);
    expect(posted.body).toMatchObject({ msgId: 1, prevMsgId: 0 });
    const read = await api(c.router.url, 'GET', '/groups/lobby~1/messages?after=0', await tok('u5'));
    expect(read.status).toBe(200);
    expect(
      read.body.messages.map((m: { contents: string; userId: string }) => [m.userId, m.contents]),
    ).toEqual([['u3', 'hello from ~1']]);
    // u6 sits in lobby~2, u0 (the owner) in lobby itself
    for (const u of ['u6', 'u0']) {
      expect((await api(c.router.url, 'GET', '/groups/lobby~1/messages?after=0', await tok(u))).status).toBe(
        403,
      );
    }
  });

  it('refuses joining or leaving a sub-conversation directly (409, pointing at the parent)', async () => {
    const j = await join('lobby~1', 'newcomer');
    expect(j.status).toBe(409);
    expect(j.body.error.message).toContain('lobby');
    const l = await api(c.router.url, 'DELETE', '/groups/lobby~1/members/u3', await tok('u3'));
    expect(l.status).toBe(409);
    expect(l.body.error.message).toContain('lobby');
    expect(await members('lobby~1', 'u3')).toEqual(['u3', 'u4', 'u5']);
  });

  it('never overfills a conversation under 10 concurrent joins', async () => {
    await create('crowd', 'c0', 3);
    const users = Array.from({ length: 10 }, (_, i) => `c${i + 1}`);
    await Promise.all(users.map((u) => tok(u)));
    const results = await Promise.all(users.map((u) => join('crowd', u)));
    const placed = new Map<string, string>([['c0', 'crowd']]);
    results.forEach((r, i) => {
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      placed.set(users[i] as string, r.body.groupId);
    });
    const sizes = [...byConversation(placed)].map(([conv, us]) => [conv, us.length]);
    expect(Object.fromEntries(sizes)).toEqual({ crowd: 3, 'crowd~1': 3, 'crowd~2': 3, 'crowd~3': 2 });
    await checkConsistent(placed, 3);
    // every device of every user sees the same place
    const again = await Promise.all(users.map((u) => joined('crowd', u)));
    expect(again).toEqual(users.map((u) => placed.get(u)));
  });

  it('frees a place on leave that the next join fills (in a ~k and in the parent)', async () => {
    await create('seats', 's0', 2);
    const placed = new Map<string, string>([['s0', 'seats']]);
    for (const u of ['s1', 's2', 's3']) placed.set(u, await joined('seats', u));
    expect(Object.fromEntries(placed)).toEqual({ s0: 'seats', s1: 'seats', s2: 'seats~1', s3: 'seats~1' });

    // s3 leaves through the parent: removed from seats~1 and from the roster
    const left = await api(c.router.url, 'DELETE', '/groups/seats/members/s3', await tok('s3'));
    expect(left.status).toBe(204);
    placed.delete('s3');
    expect(await members('seats~1', 's2')).toEqual(['s2']);
    expect((await api(c.router.url, 'GET', '/groups/seats~1/messages', await tok('s3'))).status).toBe(403);
    expect((await api(c.router.url, 'DELETE', '/groups/seats/members/s3', await tok('s3'))).status).toBe(404);

    placed.set('s4', await joined('seats', 's4'));
    expect(placed.get('s4')).toBe('seats~1');
    await checkConsistent(placed, 2);

    // a member of the parent leaves: the parent has room again and comes first
    expect((await api(c.router.url, 'DELETE', '/groups/seats/members/s1', await tok('s1'))).status).toBe(204);
    placed.delete('s1');
    placed.set('s5', await joined('seats', 's5'));
    expect(placed.get('s5')).toBe('seats');
    // everything is full again: the next one opens seats~2
    placed.set('s6', await joined('seats', 's6'));
    expect(placed.get('s6')).toBe('seats~2');
    // s3 comes back and is placed anew (least populated with room: seats~2)
    placed.set('s3', await joined('seats', 's3'));
    expect(placed.get('s3')).toBe('seats~2');
    await checkConsistent(placed, 2);
  });

  it('guards and validates the internal routes on the admin port', async () => {
    const token = c.env.SHARDCHAT_INTERNAL_TOKEN as string;
    const internal = async (
      shard: number,
      method: string,
      path: string,
      body?: unknown,
      withToken = true,
    ) => {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (withToken) headers['x-shardchat-internal-token'] = token;
      const res = await fetch(`${c.shards[shard]?.adminUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as { added?: boolean; removed?: boolean } };
    };
    const id = 'probe~1';
    const owner = ownerOf(id);
    const other = (owner + 1) % S;
    const spec = { subject: 'Probe', owner: 'p0', capacity: 2, parent: 'probe' };
    expect((await internal(owner, 'POST', `/internal/groups/${id}`, spec, false)).status).toBe(401);
    expect((await internal(other, 'POST', `/internal/groups/${id}`, spec)).status).toBe(421);
    expect((await internal(owner, 'POST', '/internal/groups/probe', { ...spec })).status).toBe(400);
    expect(
      (await internal(owner, 'POST', `/internal/groups/${id}`, { ...spec, parent: 'other' })).status,
    ).toBe(400);
    expect((await internal(owner, 'POST', `/internal/groups/${id}`, { ...spec, capacity: 0 })).status).toBe(
      400,
    );
    expect((await internal(owner, 'PUT', `/internal/groups/${id}/members/x`)).status).toBe(404);
    expect((await internal(owner, 'POST', `/internal/groups/${id}`, spec)).status).toBe(201);
    expect((await internal(owner, 'POST', `/internal/groups/${id}`, spec)).status).toBe(200);
    expect((await internal(owner, 'PUT', `/internal/groups/${id}/members/bad~id`)).status).toBe(400);
    expect((await internal(owner, 'PUT', `/internal/groups/${id}/members/x`)).body.added).toBe(true);
    expect((await internal(owner, 'PUT', `/internal/groups/${id}/members/x`)).body.added).toBe(false);
    expect((await internal(owner, 'DELETE', `/internal/groups/${id}/members/x`)).body.removed).toBe(true);
    expect((await internal(owner, 'DELETE', `/internal/groups/${id}/members/x`)).body.removed).toBe(false);
    expect((await internal(other, 'PUT', `/internal/groups/${id}/members/x`)).status).toBe(421);
  });

  it('a join whose sub-conversation shard hung keeps its place: no sub over capacity, no user in two', async () => {
    // Capacity 2: the parent takes its owner and one more, then ~1 and ~2 (on other shards than the parent's).
    let parent = '';
    for (let i = 0; i < 500 && parent === ''; i++) {
      const p = `hang${i}`;
      const s1 = ownerOf(`${p}~1`);
      const s2 = ownerOf(`${p}~2`);
      if (s1 !== ownerOf(p) && s2 !== s1) parent = p;
    }
    expect(parent).not.toBe('');
    const sub1 = `${parent}~1`;
    const hung = c.shards[ownerOf(sub1)];
    for (const u of ['h0', 'h1', 'h2', 'h3', 'h4']) await tok(u);
    await create(parent, 'h0', 2);
    expect(await joined(parent, 'h1')).toBe(parent);
    expect(await joined(parent, 'h2')).toBe(sub1);

    // The sub's shard stops answering while h3 is placed there: the join fails (503), and
    // the shard may still add h3 when it resumes (the answer was lost, not the request).
    hung?.proc.signal('SIGSTOP');
    try {
      const r = await join(parent, 'h3');
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('shard_unavailable');
    } finally {
      hung?.proc.signal('SIGCONT');
    }
    // h3's place in ~1 is held: the next user opens ~2 rather than overfilling ~1.
    expect(await joined(parent, 'h4')).toBe(`${parent}~2`);
    // h3's retry finishes the placement where it began, once.
    expect(await joined(parent, 'h3')).toBe(sub1);
    expect(await joined(parent, 'h3')).toBe(sub1);
    const placed = new Map([
      ['h0', parent],
      ['h1', parent],
      ['h2', sub1],
      ['h3', sub1],
      ['h4', `${parent}~2`],
    ]);
    // The router may have marked the hung shard unready meanwhile: wait for it to serve again.
    await waitFor(
      async () => (await api(c.router.url, 'GET', `/groups/${sub1}`, await tok('h2'))).status === 200,
      { what: `${sub1} through the router` },
    );
    await checkConsistent(placed, 2);
  });

  it('answers 503 when the sub-conversation shard is down, and places consistently after its restart', async () => {
    // a parent whose ~1 lives on another shard than the parent (and than its users)
    let parent = '';
    for (let i = 0; i < 200 && parent === ''; i++) {
      const p = `outage${i}`;
      const subShard = ownerOf(`${p}~1`);
      if (subShard !== ownerOf(p) && subShard !== ownerOf('o0') && subShard !== ownerOf('o1')) parent = p;
    }
    expect(parent).not.toBe('');
    const sub = `${parent}~1`;
    const down = ownerOf(sub);
    await tok('o0');
    await tok('o1');
    await create(parent, 'o0', 1);

    await c.shards[down]?.proc.stop();
    const r = await join(parent, 'o1');
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(r.body.error.code).toBe('shard_unavailable');
    // nothing recorded: the parent still has only its owner
    expect((await group(parent, 'o0')).memberCount).toBe(1);

    await c.restartShard(down);
    // the router sees the shard ready again after a good probe
    await waitFor(
      async () => (await api(c.router.url, 'GET', `/groups/${parent}`, await tok('o0'))).status === 200,
      {
        what: 'the parent through the router',
      },
    );
    expect(await joined(parent, 'o1')).toBe(sub);
    expect(await joined(parent, 'o1')).toBe(sub);
    const g = await waitFor(
      async () => {
        const res = await api(c.router.url, 'GET', `/groups/${sub}`, await tok('o1'));
        return res.status === 200 ? res.body : undefined;
      },
      { what: `${sub} through the router` },
    );
    expect(g).toMatchObject({ groupId: sub, memberCount: 1, owner: 'o0', parent });
    expect(await members(sub, 'o1')).toEqual(['o1']);
  });
});
