/**
 * The shard's chat API (docs/architecture.md sections 2 and 4) through the router, against a real
 * cluster of three shard processes: message ids under concurrency, idempotent posts,
 * paging, long polls, authentication, authorization, bad input, ownership (421) and
 * the shard's metrics.
 */
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Message } from '../../shard/storage/store.js';
import { api, type Cluster, type ShardProc, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import { loadShardFunction } from '../helpers/shardchat.js';

useProcessCleanup();

/** Starting a cluster of real processes can be slow on a loaded machine. */
const CLUSTER_START_MS = 90_000;

/** A stored message as the API returns it. */
type Msg = Message;

let seq = 0;
/** An id unique to this run and test. */
const uid = (prefix: string) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++seq}`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The shard function the cluster uses (default spec): shard of an id among S. */
async function ownerFn(S: number): Promise<(id: string) => number> {
  const { ShardFunction, DEFAULT_SHARD_SPEC } = await loadShardFunction();
  const sf = new ShardFunction(DEFAULT_SHARD_SPEC);
  return (id) => sf.shardOfKey(id, S);
}

/** A user with a token. */
async function user(c: Cluster, prefix: string): Promise<{ id: string; token: string }> {
  const id = uid(prefix);
  return { id, token: await c.token(id) };
}

/** Creates a group owned by `owner` and joins `others`. */
async function group(
  c: Cluster,
  owner: { id: string; token: string },
  others: { id: string; token: string }[] = [],
  id = uid('g'),
): Promise<string> {
  const created = await api(c.router.url, 'PUT', `/groups/${id}`, owner.token, { subject: id });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  for (const o of others) {
    const joined = await api(c.router.url, 'POST', `/groups/${id}/members`, o.token, { userId: o.id });
    expect(joined.status, JSON.stringify(joined.body)).toBe(200);
    expect(joined.body).toEqual({ groupId: id });
  }
  return id;
}

/** Every message of a group, read with after= paging. */
async function readAll(c: Cluster, groupId: string, token: string, pageSize = 50): Promise<Msg[]> {
  const all: Msg[] = [];
  for (let page = 0; page < 1000; page++) {
    const after = all.length ? (all[all.length - 1] as Msg).msgId : 0;
    const r = await api(
      c.router.url,
      'GET',
      `/groups/${groupId}/messages?after=${after}&limit=${pageSize}`,
      token,
    );
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const msgs = r.body.messages as Msg[];
    all.push(...msgs);
    if (msgs.length < pageSize) return all;
  }
  throw new Error('too many pages');
}

type Answer = Awaited<ReturnType<typeof api>>;

function expectError(r: Answer, status: number, code?: string) {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.headers.get('content-type') ?? '').toMatch(/application\/json/);
  expect(typeof r.body?.error?.code).toBe('string');
  expect(typeof r.body?.error?.message).toBe('string');
  if (code) expect(r.body.error.code).toBe(code);
}

/** Metric value for `name{shard="<ordinal>"...}` from a Prometheus text page. */
function metric(text: string, name: string, ordinal: number): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!line.includes(`shard="${ordinal}"`)) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('messages through the router', () => {
  let c: Cluster;
  let owner: (id: string) => number;
  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir());
    owner = await ownerFn(3);
  }, CLUSTER_START_MS);
  afterAll(() => defaultRegistry.cleanup());

  let concurrentGroup = '';

  it('gives 200 concurrent posts msgIds 1..200 with a consistent prevMsgId chain', async () => {
    const users = await Promise.all([1, 2, 3, 4].map(() => user(c, 'poster')));
    const [first, ...rest] = users as [(typeof users)[0], ...typeof users];
    const g = await group(c, first, rest);
    concurrentGroup = g;
    const posts = Array.from({ length: 200 }, (_, i) => ({
      u: users[i % users.length] as (typeof users)[0],
      clientMsgId: `c-${i}`,
      contents: `message ${i}`,
    }));
    const answers = await Promise.all(
      posts.map((p) =>
        api(c.router.url, 'POST', `/groups/${g}/messages`, p.u.token, {
          contents: p.contents,
          clientMsgId: p.clientMsgId,
        }),
      ),
    );
    for (const a of answers) expect(a.status, JSON.stringify(a.body)).toBe(201);
    const ids = answers.map((a) => a.body.msgId as number).sort((a, b) => a - b);
    expect(ids).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    for (const a of answers) expect(a.body.prevMsgId).toBe(a.body.msgId - 1);
    const epochs = new Set(answers.map((a) => a.body.epoch));
    expect(epochs.size).toBe(1);

    const stored = await readAll(c, g, first.token, 50);
    expect(stored.map((m) => m.msgId)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    for (const m of stored) {
      expect(m.prevMsgId).toBe(m.msgId - 1);
      expect(m.groupId).toBe(g);
      expect(m.epoch).toBe([...epochs][0]);
    }
    // Each acknowledgement names the stored message with its contents and author.
    posts.forEach((p, i) => {
      const a = answers[i] as (typeof answers)[0];
      const m = stored[a.body.msgId - 1] as Msg;
      expect(m).toMatchObject({ userId: p.u.id, clientMsgId: p.clientMsgId, contents: p.contents });
      expect(m.ts).toBe(a.body.ts);
    });
    const info = await api(c.router.url, 'GET', `/groups/${g}`, first.token);
    expect(info.body).toMatchObject({ lastMsgId: 200, memberCount: 4, epoch: [...epochs][0] });
  }, 60_000);

  it('stores a retried clientMsgId once, per user', async () => {
    const alice = await user(c, 'alice');
    const bob = await user(c, 'bob');
    const g = await group(c, alice, [bob]);
    const body = { contents: 'once', clientMsgId: 'retry-1' };
    const a1 = await api(c.router.url, 'POST', `/groups/${g}/messages`, alice.token, body);
    expect(a1.status).toBe(201);
    const a2 = await api(c.router.url, 'POST', `/groups/${g}/messages`, alice.token, body);
    expect(a2.status).toBe(200);
    expect(a2.body).toEqual(a1.body);
    // Different contents with the same clientMsgId: still the first message.
    const a3 = await api(c.router.url, 'POST', `/groups/${g}/messages`, alice.token, {
      ...body,
      contents: 'changed',
    });
    expect(a3.status).toBe(200);
    expect(a3.body).toEqual(a1.body);
    const b1 = await api(c.router.url, 'POST', `/groups/${g}/messages`, bob.token, body);
    expect(b1.status).toBe(201);
    expect(b1.body.msgId).toBe(a1.body.msgId + 1);
    const stored = await readAll(c, g, alice.token);
    expect(stored.map((m) => [m.msgId, m.userId, m.contents])).toEqual([
      [1, alice.id, 'once'],
      [2, bob.id, 'once'],
    ]);
    expect(stored[0]?.ts).toBe(a1.body.ts);
  });

  it('stores one message for concurrent posts of the same clientMsgId', async () => {
    const alice = await user(c, 'alice');
    const g = await group(c, alice);
    const body = { contents: 'dup', clientMsgId: 'same' };
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => api(c.router.url, 'POST', `/groups/${g}/messages`, alice.token, body)),
    );
    expect(answers.filter((a) => a.status === 201)).toHaveLength(1);
    expect(answers.filter((a) => a.status === 200)).toHaveLength(19);
    for (const a of answers) expect(a.body).toEqual((answers[0] as Answer).body);
    const stored = await readAll(c, g, alice.token);
    expect(stored.map((m) => m.msgId)).toEqual([1]);
  });

  it('pages with after= and before= and checks its parameters', async () => {
    const alice = await user(c, 'alice');
    const g = await group(c, alice);
    for (let i = 1; i <= 30; i++) {
      const r = await api(c.router.url, 'POST', `/groups/${g}/messages`, alice.token, {
        contents: `m${i}`,
        clientMsgId: `p${i}`,
      });
      expect(r.body.msgId).toBe(i);
    }
    const get = (q: string) => api(c.router.url, 'GET', `/groups/${g}/messages?${q}`, alice.token);
    const ids = (r: Answer) => (r.body.messages as Msg[]).map((m) => m.msgId);
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

    expect(ids(await get('after=10&limit=5'))).toEqual(range(11, 15));
    expect(ids(await get('after=0&limit=3'))).toEqual(range(1, 3));
    expect(ids(await get('after=27&limit=10'))).toEqual(range(28, 30));
    expect(ids(await get('after=30&limit=10'))).toEqual([]);
    expect(ids(await get('after=25'))).toEqual(range(26, 30));
    expect(ids(await get('limit=200'))).toEqual(range(1, 30));
    expect(ids(await get('before=10&limit=3'))).toEqual(range(7, 9));
    expect(ids(await get('before=3&limit=10'))).toEqual(range(1, 2));
    expect(ids(await get('before=1&limit=10'))).toEqual([]);
    expect(ids(await get('before=31&limit=4'))).toEqual(range(27, 30));
    expect((await get('before=10&limit=3')).body.messages[0]).toMatchObject({
      groupId: g,
      msgId: 7,
      prevMsgId: 6,
      userId: alice.id,
      contents: 'm7',
      clientMsgId: 'p7',
    });

    expectError(await get('limit=201'), 400);
    expectError(await get('after=1&before=5'), 400);
    for (const q of [
      'after=abc',
      'after=-1',
      'after=1.5',
      'after=',
      'after=1e3',
      'before=0',
      'before=x',
      'limit=0',
      'limit=-5',
      'limit=ten',
      'wait=x',
      'wait=-1',
      'after=99999999999999999999',
    ]) {
      expectError(await get(q), 400);
    }
  });

  it('long-polls until a message arrives, or answers an empty list after the wait', async () => {
    const alice = await user(c, 'alice');
    const bob = await user(c, 'bob');
    const g = await group(c, alice, [bob]);
    const first = await api(c.router.url, 'POST', `/groups/${g}/messages`, alice.token, {
      contents: 'first',
      clientMsgId: 'lp-1',
    });
    const last = first.body.msgId as number;
    const polled = api(c.router.url, 'GET', `/groups/${g}/messages?after=${last}&wait=5`, alice.token);
    await sleep(300);
    const posted = await api(c.router.url, 'POST', `/groups/${g}/messages`, bob.token, {
      contents: 'news',
      clientMsgId: 'lp-2',
    });
    expect(posted.status).toBe(201);
    const r = await polled;
    expect(r.status).toBe(200);
    expect(r.body.messages).toHaveLength(1);
    expect(r.body.messages[0]).toMatchObject({
      msgId: last + 1,
      prevMsgId: last,
      userId: bob.id,
      contents: 'news',
      clientMsgId: 'lp-2',
    });

    const started = Date.now();
    const empty = await api(
      c.router.url,
      'GET',
      `/groups/${g}/messages?after=${last + 1}&wait=1`,
      alice.token,
    );
    expect(empty.status).toBe(200);
    expect(empty.body).toEqual({ messages: [] });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it('exposes the shard metrics and health on the admin port', async () => {
    expect(concurrentGroup).not.toBe('');
    const ordinal = owner(concurrentGroup);
    const shard = c.shards[ordinal] as ShardProc;
    const res = await fetch(`${shard.adminUrl}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(metric(text, 'shardchat_shard_messages_total', ordinal)).toBeGreaterThanOrEqual(200);
    expect(metric(text, 'shardchat_shard_groups', ordinal)).toBeGreaterThanOrEqual(1);
    expect(metric(text, 'shardchat_shard_members', ordinal)).toBeGreaterThanOrEqual(4);
    expect(metric(text, 'shardchat_shard_connections', ordinal)).toBeGreaterThanOrEqual(0);
    expect(metric(text, 'shardchat_shard_write_duration_seconds_count', ordinal)).toBeGreaterThanOrEqual(1);
    expect(metric(text, 'shardchat_shard_db_bytes', ordinal)).toBeGreaterThan(0);
    for (const s of c.shards) {
      expect((await fetch(`${s.adminUrl}/healthz`)).status).toBe(200);
      expect((await fetch(`${s.adminUrl}/readyz`)).status).toBe(200);
      const internal = await fetch(`${s.adminUrl}/internal/anything`, { method: 'POST' });
      expect(internal.status).toBe(401);
      expect(((await internal.json()) as { error: { code: string } }).error.code).toBeTypeOf('string');
      const wrongToken = await fetch(`${s.adminUrl}/internal/anything`, {
        headers: { 'x-shardchat-internal-token': 'nope' },
      });
      expect(wrongToken.status).toBe(401);
    }
  });
});

describe('authentication, authorization, bad input and ownership', () => {
  let c: Cluster;
  let owner: (id: string) => number;
  const MAX_BODY = 1024;
  const MAX_MESSAGE = 300;
  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      config: { shard: { limits: { maxBodyBytes: MAX_BODY, maxMessageBytes: MAX_MESSAGE } } },
    });
    owner = await ownerFn(3);
  }, CLUSTER_START_MS);
  afterAll(() => defaultRegistry.cleanup());

  it('answers 401 JSON to missing, forged, expired, unsigned and exp-less tokens', async () => {
    const alice = await user(c, 'alice');
    const g = await group(c, alice);
    const path = `/groups/${g}/messages`;
    const secret = new TextEncoder().encode(c.env.SHARDCHAT_AUTH_SECRET as string);
    const now = Math.floor(Date.now() / 1000);

    // Sanity: a token the test signs itself with the right secret is accepted.
    const good = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(alice.id)
      .setExpirationTime(now + 600)
      .sign(secret);
    expect((await api(c.router.url, 'GET', path, good)).status).toBe(200);

    expectError(await api(c.router.url, 'GET', path), 401);
    expectError(await api(c.router.url, 'GET', path, 'not-a-jwt'), 401);
    const forged = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(alice.id)
      .setExpirationTime(now + 600)
      .sign(randomBytes(32));
    expectError(await api(c.router.url, 'GET', path, forged), 401);
    const expired = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(alice.id)
      .setIssuedAt(now - 7200)
      .setExpirationTime(now - 3600)
      .sign(secret);
    expectError(await api(c.router.url, 'GET', path, expired), 401);
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: alice.id, exp: now + 600 })}.`;
    expectError(await api(c.router.url, 'GET', path, unsigned), 401);
    const noExp = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(alice.id)
      .sign(secret);
    expectError(await api(c.router.url, 'GET', path, noExp), 401);
    const noSub = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(now + 600)
      .sign(secret);
    expectError(await api(c.router.url, 'GET', path, noSub), 401);
    // A write with a bad token stores nothing.
    expectError(
      await api(c.router.url, 'POST', path, forged, { contents: 'x', clientMsgId: 'forged-1' }),
      401,
    );
    expect((await api(c.router.url, 'GET', `/groups/${g}`, alice.token)).body.lastMsgId).toBe(0);
  });

  it('refuses the posts of a member who left or was removed, though the shard has seen them post', async () => {
    const alice = await user(c, 'alice');
    const bob = await user(c, 'bob');
    const g = await group(c, alice, [bob]);
    const post = (id: string) =>
      api(c.router.url, 'POST', `/groups/${g}/messages`, bob.token, { contents: id, clientMsgId: id });
    // Posting makes the shard remember that bob is a member (shard/storage/known-members.ts).
    expect((await post('b1')).status).toBe(201);
    expect((await post('b2')).status).toBe(201);
    expect((await api(c.router.url, 'DELETE', `/groups/${g}/members/${bob.id}`, bob.token)).status).toBe(204);
    expectError(await post('b3'), 403);
    const again = await api(c.router.url, 'POST', `/groups/${g}/members`, bob.token, { userId: bob.id });
    expect(again.status).toBe(200);
    expect((await post('b4')).status).toBe(201);
    // Removed by the owner this time.
    expect((await api(c.router.url, 'DELETE', `/groups/${g}/members/${bob.id}`, alice.token)).status).toBe(
      204,
    );
    expectError(await post('b5'), 403);
    const stored = await readAll(c, g, alice.token);
    expect(stored.map((m) => m.contents)).toEqual(['b1', 'b2', 'b4']);
  });

  it('lets only members read, post, list members and see presence', async () => {
    const alice = await user(c, 'alice');
    const eve = await user(c, 'eve');
    const g = await group(c, alice);
    const base = `/groups/${g}`;
    expectError(await api(c.router.url, 'GET', `${base}/messages`, eve.token), 403);
    expectError(
      await api(c.router.url, 'POST', `${base}/messages`, eve.token, { contents: 'x', clientMsgId: 'e1' }),
      403,
    );
    expectError(await api(c.router.url, 'GET', `${base}/members`, eve.token), 403);
    expectError(await api(c.router.url, 'GET', `${base}/presence`, eve.token), 403);
    // Members may.
    expect((await api(c.router.url, 'GET', `${base}/messages`, alice.token)).status).toBe(200);
    expect((await api(c.router.url, 'GET', `${base}/presence`, alice.token)).body).toEqual({ presence: [] });
    const members = await api(c.router.url, 'GET', `${base}/members`, alice.token);
    expect(members.body.members.map((m: { userId: string }) => m.userId)).toEqual([alice.id]);
    // Any authenticated user sees the group itself.
    expect((await api(c.router.url, 'GET', base, eve.token)).body).toMatchObject({
      groupId: g,
      lastMsgId: 0,
      memberCount: 1,
    });
    // Nothing was posted by the non-member.
    expect((await api(c.router.url, 'GET', `${base}/messages`, alice.token)).body).toEqual({ messages: [] });
  });

  it('lets only the owner update a group', async () => {
    const alice = await user(c, 'alice');
    const bob = await user(c, 'bob');
    const g = await group(c, alice, [bob]);
    expectError(await api(c.router.url, 'PUT', `/groups/${g}`, bob.token, { subject: 'hijacked' }), 403);
    expect((await api(c.router.url, 'GET', `/groups/${g}`, bob.token)).body.subject).toBe(g);
    const updated = await api(c.router.url, 'PUT', `/groups/${g}`, alice.token, { subject: 'renamed' });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ groupId: g, subject: 'renamed', owner: alice.id, memberCount: 2 });
  });

  it('lets users write only their own profile and shows the email only to its owner', async () => {
    const alice = await user(c, 'alice');
    const bob = await user(c, 'bob');
    const profile = { name: 'Alice', email: 'alice@example.com', photoUrl: 'https://example.com/a.png' };
    const created = await api(c.router.url, 'PUT', `/users/${alice.id}`, alice.token, profile);
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ userId: alice.id, ...profile });
    expect((await api(c.router.url, 'PUT', `/users/${alice.id}`, alice.token, profile)).status).toBe(200);
    expectError(await api(c.router.url, 'PUT', `/users/${alice.id}`, bob.token, { name: 'Mallory' }), 403);
    expectError(await api(c.router.url, 'PUT', `/users/${alice.id}`, undefined, { name: 'Mallory' }), 401);
    const mine = await api(c.router.url, 'GET', `/users/${alice.id}`, alice.token);
    expect(mine.body).toMatchObject({ userId: alice.id, name: 'Alice', email: 'alice@example.com' });
    const theirs = await api(c.router.url, 'GET', `/users/${alice.id}`, bob.token);
    expect(theirs.status).toBe(200);
    expect(theirs.body).toMatchObject({ userId: alice.id, name: 'Alice', photoUrl: profile.photoUrl });
    expect(theirs.body).not.toHaveProperty('email');
    expect(JSON.stringify(theirs.body)).not.toContain('alice@example.com');
    expectError(await api(c.router.url, 'GET', `/users/${uid('nobody')}`, bob.token), 404);
  });

  it('refuses to create or join ~k sub-conversations', async () => {
    const alice = await user(c, 'alice');
    const parent = await group(c, alice);
    expectError(await api(c.router.url, 'PUT', `/groups/${parent}~1`, alice.token, { subject: 'sub' }), 409);
    expectError(
      await api(c.router.url, 'POST', `/groups/${parent}~1/members`, alice.token, { userId: alice.id }),
      409,
    );
    expectError(await api(c.router.url, 'GET', `/groups/${parent}~1`, alice.token), 404);
  });

  it('rejects malformed bodies, wrong types, oversized bodies and bad ids', async () => {
    const alice = await user(c, 'alice');
    const g = await group(c, alice);
    const post = `/groups/${g}/messages`;
    expectError(
      await api(c.router.url, 'POST', post, alice.token, '{"contents": "x", '),
      400,
      'malformed_json',
    );
    const text = await fetch(`${c.router.url}${post}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'text/plain' },
      body: 'hello',
    });
    expect(text.status).toBe(415);
    expect(((await text.json()) as { error: { code: string } }).error.code).toBeTypeOf('string');
    const noType = await fetch(`${c.router.url}${post}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice.token}` },
    });
    expect(noType.status).toBe(415);
    const big = await api(c.router.url, 'POST', post, alice.token, {
      contents: 'x'.repeat(MAX_BODY * 2),
      clientMsgId: 'big',
    });
    expectError(big, 413);
    const long = await api(c.router.url, 'POST', post, alice.token, {
      contents: 'y'.repeat(MAX_MESSAGE + 1),
      clientMsgId: 'long',
    });
    expectError(long, 400);
    // Exactly at the limit is fine (multi-byte characters count in bytes).
    expect(
      (
        await api(c.router.url, 'POST', post, alice.token, {
          contents: 'y'.repeat(MAX_MESSAGE),
          clientMsgId: 'fits',
        })
      ).status,
    ).toBe(201);
    expectError(
      await api(c.router.url, 'POST', post, alice.token, {
        contents: 'é'.repeat(MAX_MESSAGE / 2 + 1),
        clientMsgId: 'wide',
      }),
      400,
    );
    for (const bad of [
      [],
      'a string',
      { contents: 'x' },
      { clientMsgId: 'c' },
      { contents: '', clientMsgId: 'c' },
      { contents: 5, clientMsgId: 'c' },
      { contents: 'x', clientMsgId: 'has space' },
      { contents: 'x', clientMsgId: 'c'.repeat(129) },
    ]) {
      expectError(await api(c.router.url, 'POST', post, alice.token, JSON.stringify(bad)), 400);
    }
    // Only the one message at the limit was stored.
    expect((await api(c.router.url, 'GET', `/groups/${g}`, alice.token)).body.lastMsgId).toBe(1);

    expectError(await api(c.router.url, 'GET', '/groups/a%20b', alice.token), 400);
    expectError(await api(c.router.url, 'PUT', '/groups/a%20b', alice.token, { subject: 's' }), 400);
    expectError(await api(c.router.url, 'GET', `/groups/${'a'.repeat(129)}`, alice.token), 400);
    expectError(await api(c.router.url, 'GET', `/groups/${'a'.repeat(129)}/messages`, alice.token), 400);
    expect((await api(c.router.url, 'GET', `/groups/${'a'.repeat(128)}`, alice.token)).status).toBe(404);
    expectError(await api(c.router.url, 'GET', '/groups/.hidden', alice.token), 400);
    expectError(await api(c.router.url, 'GET', `/users/a%7Eb`, alice.token), 400);
    expectError(await api(c.router.url, 'GET', `/groups/${uid('missing')}`, alice.token), 404);
    expectError(await api(c.router.url, 'GET', `/groups/${uid('missing')}/messages`, alice.token), 404);
    expectError(
      await api(c.router.url, 'POST', `/groups/${uid('missing')}/messages`, alice.token, {
        contents: 'x',
        clientMsgId: 'm',
      }),
      404,
    );
    expectError(await api(c.router.url, 'GET', `/groups/${g}/nothing-here`, alice.token), 404);
    expectError(await api(c.router.url, 'GET', '/no/such/route', alice.token), 404);
  });

  it('answers 421 to a request for an id the shard does not own, and writes nothing', async () => {
    const alice = await user(c, 'alice');
    const g = uid('owned');
    const right = owner(g);
    const wrong = c.shards[(right + 1) % 3] as ShardProc;
    const misdirected = await api(wrong.url, 'PUT', `/groups/${g}`, alice.token, { subject: 'x' });
    expectError(misdirected, 421);
    // Ownership is checked before authentication.
    expectError(await api(wrong.url, 'GET', `/groups/${g}/messages`), 421);
    expectError(await api(c.router.url, 'GET', `/groups/${g}`, alice.token), 404);
    // Ownership comes before body parsing: a malformed or oversized body is still misdirected.
    expectError(await api(wrong.url, 'PUT', `/groups/${g}`, alice.token, '{"subject": '), 421);
    expectError(
      await api(wrong.url, 'PUT', `/groups/${g}`, alice.token, { subject: 's'.repeat(MAX_BODY * 2) }),
      421,
    );
    // Even a router header naming the wrong shard does not make it owned.
    const rightShard = c.shards[right] as ShardProc;
    const viaHeader = await fetch(`${wrong.url}/groups/${g}`, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${alice.token}`,
        'content-type': 'application/json',
        'x-shardchat-shard': `${wrong.ordinal}/3`,
      },
      body: JSON.stringify({ subject: 'x' }),
    });
    expect(viaHeader.status).toBe(421);
    // The 421 names the owner and the shard map it was decided by, in the body and the
    // x-shardchat-map header, so that a router holding an older map retries there.
    expect(viaHeader.headers.get('x-shardchat-map')).toBe('1:3:modulo');
    const details = ((await viaHeader.json()) as { error: { details: { owner: number; map: object } } }).error
      .details;
    expect(details).toEqual({ owner: right, map: { version: 1, shards: 3, assignment: 'modulo' } });
    expectError(await api(c.router.url, 'GET', `/groups/${g}`, alice.token), 404);
    // The profile route checks ownership of the user id too.
    const u = uid('profile');
    const uToken = await c.token(u);
    const uWrong = c.shards[(owner(u) + 2) % 3] as ShardProc;
    expectError(await api(uWrong.url, 'PUT', `/users/${u}`, uToken, { name: 'x' }), 421);
    expectError(await api(c.router.url, 'GET', `/users/${u}`, uToken), 404);
    // Straight to the right shard, with the right S, it works.
    const ok = await fetch(`${rightShard.url}/groups/${g}`, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${alice.token}`,
        'content-type': 'application/json',
        'x-shardchat-shard': `${right}/3`,
      },
      body: JSON.stringify({ subject: 'direct' }),
    });
    expect(ok.status).toBe(201);
    expect((await api(c.router.url, 'GET', `/groups/${g}`, alice.token)).body.subject).toBe('direct');
  });
});
