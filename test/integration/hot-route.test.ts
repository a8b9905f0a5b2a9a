/**
 * The hot routes (`POST` and `GET /groups/{id}/messages` answered without Express,
 * shard/api/hot-routes.ts) against the Express routes they stand in for: the same requests
 * sent to a real shard once through each (the Express route still takes an id written
 * with a percent-escape, `/groups/h%2D1/messages` for `h-1`), and the answers compared:
 * status, JSON body and the headers a client or the router reads.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import { loadShardFunction } from '../helpers/shardchat.js';

useProcessCleanup();

/** Headers both routes must answer alike (values compared, absent ones too). */
const COMPARED = [
  'content-type',
  'cache-control',
  'retry-after',
  'x-shardchat-shard',
  'x-shardchat-map',
  'etag',
  'x-powered-by',
];

interface Case {
  name: string;
  token?: 'member' | 'stranger' | 'none' | 'bad';
  contentType?: string;
  /** The body as sent (a string goes as is). */
  body?: unknown;
  /** Another group than the members' (e.g. a missing one, or one another shard owns). */
  group?: 'missing' | 'foreign';
}

describe('the hot route answers as the Express route does', () => {
  let c: Cluster;
  let shardUrl: string;
  const tokens: Record<string, string> = {};
  /** Two groups on the same shard (one per route, so that message ids line up), and one on another. */
  let hot: string;
  let cold: string;
  let foreign = '';
  let missing = '';

  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      config: { shard: { limits: { maxBodyBytes: 2048 } } },
    });
    const { ShardFunction, DEFAULT_SHARD_SPEC } = await loadShardFunction();
    const sf = new ShardFunction(DEFAULT_SHARD_SPEC);
    const owner = (id: string) => sf.shardOfKey(id, c.shards.length);
    // Ids with a '-' (written %2D on the Express side) owned by shard 0, and one that is not.
    const onZero = [];
    for (let i = 0; onZero.length < 2; i++) if (owner(`h-${i}`) === 0) onZero.push(`h-${i}`);
    [hot, cold] = onZero as [string, string];
    for (let i = 0; !foreign; i++) if (owner(`f-${i}`) !== 0) foreign = `f-${i}`;
    for (let i = 0; !missing; i++) if (owner(`m-${i}`) === 0) missing = `m-${i}`;
    shardUrl = (c.shards[0] as { url: string }).url;
    for (const u of ['member', 'stranger']) tokens[u] = await c.token(u);
    for (const g of [hot, cold, foreign]) {
      const r = await api(c.router.url, 'PUT', `/groups/${g}`, tokens.member, { subject: g });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    }
  }, 90_000);

  afterAll(async () => {
    await defaultRegistry.cleanup();
  });

  async function send(
    path: string,
    k: Case,
    method = 'POST',
  ): Promise<{ status: number; body: unknown; headers: Record<string, string | null> }> {
    const headers: Record<string, string> = {};
    if (k.token === 'bad') headers.authorization = 'Bearer not-a-token';
    else if (k.token !== 'none') headers.authorization = `Bearer ${tokens[k.token ?? 'member']}`;
    if (k.contentType !== '') headers['content-type'] = k.contentType ?? 'application/json';
    const res = await fetch(`${shardUrl}${path}`, {
      method,
      headers,
      body: k.body === undefined ? undefined : typeof k.body === 'string' ? k.body : JSON.stringify(k.body),
    });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: compared as text
    }
    const h: Record<string, string | null> = {};
    for (const n of COMPARED) h[n] = res.headers.get(n);
    return { status: res.status, body, headers: h };
  }

  /** Timestamps, epochs and the group's id differ between the two groups; everything else must not. */
  const comparable = (
    r: { status: number; body: unknown; headers: Record<string, string | null> },
    groupId: string,
  ) => {
    const b = JSON.parse(JSON.stringify(r.body).replaceAll(groupId, '{group}')) as Record<string, unknown>;
    const stamped = (m: Record<string, unknown>) => ({ ...m, ts: typeof m.ts, epoch: typeof m.epoch });
    const body =
      r.status >= 300 || !b || typeof b !== 'object'
        ? b
        : Array.isArray(b.messages)
          ? { messages: (b.messages as Record<string, unknown>[]).map(stamped) }
          : stamped(b);
    return { status: r.status, body, headers: r.headers };
  };

  const cases: Case[] = [
    { name: 'a message', body: { contents: 'hello', clientMsgId: 'c-1' } },
    { name: 'the same message again (idempotent, 200)', body: { contents: 'hello', clientMsgId: 'c-1' } },
    { name: 'without a token', token: 'none', body: { contents: 'x', clientMsgId: 'c-2' } },
    { name: 'with a bad token', token: 'bad', body: { contents: 'x', clientMsgId: 'c-3' } },
    { name: 'from a non-member', token: 'stranger', body: { contents: 'x', clientMsgId: 'c-4' } },
    { name: 'malformed JSON', body: '{"contents": ' },
    {
      name: 'malformed UTF-8',
      body: Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]).toString('latin1'),
      contentType: 'application/json; charset=latin1',
    },
    { name: 'no content type', contentType: '', body: '{"contents":"x","clientMsgId":"c-5"}' },
    { name: 'text/plain', contentType: 'text/plain', body: '{"contents":"x","clientMsgId":"c-6"}' },
    { name: 'a JSON array', body: [1, 2] },
    { name: 'missing contents', body: { clientMsgId: 'c-7' } },
    { name: 'a bad clientMsgId', body: { contents: 'x', clientMsgId: 'has space' } },
    { name: 'a body over maxBodyBytes', body: { contents: 'x'.repeat(3000), clientMsgId: 'c-8' } },
    { name: 'an unsupported charset', contentType: 'application/json; charset=koi8-r', body: '{}' },
    { name: 'a missing group', group: 'missing', body: { contents: 'x', clientMsgId: 'c-9' } },
    {
      name: 'a group another shard owns (421)',
      group: 'foreign',
      body: { contents: 'x', clientMsgId: 'c-10' },
    },
  ];

  it.each(cases)('POST: $name', async (k) => {
    const hotId = k.group === 'missing' ? missing : k.group === 'foreign' ? foreign : hot;
    const coldId = k.group === 'missing' ? missing : k.group === 'foreign' ? foreign : cold;
    const viaHot = await send(`/groups/${hotId}/messages`, k);
    const viaExpress = await send(`/groups/${coldId.replace('-', '%2D')}/messages`, k);
    const a = comparable(viaHot, hotId);
    const b = comparable(viaExpress, coldId);
    if (k.group === 'foreign') expect(a.status).toBe(421);
    if (k.group === 'missing') expect(a.status).toBe(404);
    expect(a).toEqual(b);
  });

  // Reads, after the posts above wrote the same messages to both groups.
  const reads: (Case & { query: string })[] = [
    { name: 'the first page', query: '' },
    { name: 'after 0, limit 1', query: '?after=0&limit=1' },
    { name: 'limit then after', query: '?limit=2&after=1' },
    { name: 'before 3', query: '?before=3' },
    { name: 'after the last, no wait', query: '?after=1000' },
    { name: 'a long-poll that times out (1 s)', query: '?after=1000&wait=1' },
    { name: 'after and before (400)', query: '?after=1&before=3' },
    { name: 'limit 0 (400)', query: '?limit=0' },
    { name: 'a wait past maxWaitSeconds (400)', query: '?wait=1000' },
    { name: 'without a token', query: '', token: 'none' },
    { name: 'with a bad token', query: '', token: 'bad' },
    { name: 'from a non-member', query: '', token: 'stranger' },
    { name: 'a missing group', query: '', group: 'missing' },
    { name: 'a group another shard owns (421)', query: '', group: 'foreign' },
  ];

  it.each(reads)('GET: $name', async (k) => {
    const hotId = k.group === 'missing' ? missing : k.group === 'foreign' ? foreign : hot;
    const coldId = k.group === 'missing' ? missing : k.group === 'foreign' ? foreign : cold;
    const g = { ...k, contentType: '' };
    const viaHot = await send(`/groups/${hotId}/messages${k.query}`, g, 'GET');
    const viaExpress = await send(`/groups/${coldId.replace('-', '%2D')}/messages${k.query}`, g, 'GET');
    const a = comparable(viaHot, hotId);
    const b = comparable(viaExpress, coldId);
    if (k.group === 'foreign') expect(a.status).toBe(421);
    if (k.group === 'missing') expect(a.status).toBe(404);
    if (k.name === 'the first page')
      expect((a.body as { messages: unknown[] }).messages.length).toBeGreaterThan(0);
    expect(a).toEqual(b);
  });

  it('GET: a long-poll is answered by a message posted while it waits', async () => {
    // Both groups' next msgId, so that the long-polls wait for exactly the next message.
    const last = async (id: string) => {
      const r = await send(
        `/groups/${id}/messages?before=100000&limit=1`,
        { name: 'last', contentType: '' },
        'GET',
      );
      return ((r.body as { messages: { msgId: number }[] }).messages[0]?.msgId ?? 0) as number;
    };
    const [lh, lc] = [await last(hot), await last(cold)];
    expect(lh).toBe(lc);
    const waitFrom = (id: string, after: number) =>
      send(`/groups/${id}/messages?after=${after}&wait=5`, { name: 'poll', contentType: '' }, 'GET');
    const started = Promise.all([waitFrom(hot, lh), waitFrom(cold.replace('-', '%2D'), lc)]);
    await new Promise((r) => setTimeout(r, 300));
    for (const id of [hot, cold])
      await send(`/groups/${id}/messages`, {
        name: 'post',
        body: { contents: 'wake up', clientMsgId: 'wake' },
      });
    const [viaHot, viaExpress] = await started;
    expect(viaHot.status).toBe(200);
    expect((viaHot.body as { messages: { contents: string }[] }).messages.map((m) => m.contents)).toEqual([
      'wake up',
    ]);
    expect(comparable(viaHot, hot)).toEqual(comparable(viaExpress, cold));
  });
});
