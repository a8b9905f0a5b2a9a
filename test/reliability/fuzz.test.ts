/**
 * Bad input (fast-check, bounded runs and time): random methods, paths, ids, queries,
 * headers and bodies (JSON, not JSON, invalid UTF-8, truncated), huge inputs, and random
 * WebSocket frames, sent as raw bytes to the router and straight to a shard. Nothing may
 * crash (processes alive, /healthz 200), nothing may answer 5xx (no shard is down here;
 * only the router's documented 501/505 for unsupported framing or versions), every error
 * through the router is JSON {error: {code, message}}, and the RSS of the router and the
 * shards grows by less than a stated bound.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cluster, startCluster } from '../helpers/cluster.js';
import { clientFrame, RawConnection, type RawResponse } from '../helpers/http.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import {
  idsOn,
  makeGroup,
  postOnce,
  rssKiB,
  shardOf,
  summary,
  type TestUser,
  users,
} from '../helpers/reliability.js';

useProcessCleanup();

const S = 2;
const HTTP_RUNS = 300;
const SHARD_RUNS = 200;
const WS_RUNS = 80;
const TIME_LIMIT_MS = 20_000;
/** Allowed RSS growth of each process over the whole suite. */
const RSS_BOUND_KIB = 100 * 1024;

const idPiece = fc.constantFrom(
  'a',
  'Z',
  '0',
  '-',
  '_',
  '.',
  '~',
  '~1',
  '%',
  '%2F',
  '%2f',
  '%2e%2e',
  '..',
  '/',
  "'",
  '"',
  ';',
  '--',
  ' OR 1=1',
  '%00',
  '%zz',
  '%C3%A9',
  'é',
  '💥',
  '\\',
  '*',
  '#',
  '%20',
  '\u0000',
  '\uFFFD',
);
const idArb = fc.oneof(
  fc.array(idPiece, { maxLength: 10 }).map((a) => a.join('')),
  fc.string({ maxLength: 40 }),
  fc.constantFrom(
    '..',
    '../..',
    '..%2F..%2Fetc%2Fpasswd',
    "x' OR '1'='1",
    'x;DROP TABLE messages;--',
    'a'.repeat(200),
    '',
  ),
);
const queryArb = fc.oneof(
  fc.constant(''),
  fc.constantFrom(
    'after=-1',
    'limit=0',
    'limit=abc',
    'after=1e9',
    'before=0',
    'after=0&limit=999999',
    'wait=abc',
    'wait=-1',
    'after=1&after=2',
    'token=x',
  ),
  fc.string({ maxLength: 30 }),
);
const pathArb = fc
  .tuple(
    fc.constantFrom('groups', 'users', 'internal', 'metrics', 'healthz', '', 'app', 'x', 'groups/'),
    idArb,
    fc.constantFrom('', 'messages', 'members', 'ws', 'presence', 'token', 'members/u', 'x/y/z', 'members/..'),
    queryArb,
  )
  .map(([a, id, rest, q]) => `/${a}/${id}${rest ? `/${rest}` : ''}${q ? `?${q}` : ''}`);
const methodArb = fc.constantFrom(
  'GET',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
  'HEAD',
  'TRACE',
  'FOO',
  'get',
);
const bodyArb = fc.oneof(
  fc.constant(undefined),
  fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from(JSON.stringify(v) ?? 'null')),
  fc
    .record(
      {
        contents: fc.oneof(
          fc.string({ maxLength: 50 }),
          fc.integer(),
          fc.constant(null),
          fc.constant('x'.repeat(9000)),
        ),
        clientMsgId: fc.oneof(fc.string({ maxLength: 140 }), fc.integer(), fc.constant("'; DROP TABLE--")),
        subject: fc.oneof(fc.string({ maxLength: 20 }), fc.boolean()),
        userId: idArb,
        name: fc.string({ maxLength: 20 }),
        capacity: fc.oneof(fc.integer(), fc.double(), fc.string()),
      },
      { requiredKeys: [] },
    )
    .map((o) => Buffer.from(JSON.stringify(o))),
  fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  fc.constant(
    Buffer.concat([
      Buffer.from('{"contents":"'),
      Buffer.from([0xff, 0xfe, 0xc3]),
      Buffer.from('","clientMsgId":"bad-utf8"}'),
    ]),
  ),
  fc
    .constantFrom(
      '{"contents":"trunc',
      '{',
      '[',
      '"',
      'null',
      '{"__proto__":{"x":1}}',
      '{"constructor":{"prototype":{}}}',
    )
    .map((s) => Buffer.from(s)),
);
const headersArb = fc.record({
  auth: fc.constantFrom('valid', 'none', 'garbage', 'bearer-empty', 'basic', 'long', 'two'),
  ct: fc.constantFrom(
    'application/json',
    'text/plain',
    'application/json; charset=latin1',
    'application/json; charset=utf-16',
    '',
    'none',
  ),
  xgroup: fc.option(idArb),
  extra: fc.array(fc.tuple(fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/), fc.string({ maxLength: 50 })), {
    maxLength: 4,
  }),
  rawTail: fc.option(fc.uint8Array({ maxLength: 16 }).map((a) => Buffer.from(a))),
});

type HeadersValue = typeof headersArb extends fc.Arbitrary<infer T> ? T : never;

interface Outcome {
  status: number | 'closed';
  json: boolean;
  head: string;
}

function authHeader(kind: string, token: string): string[] {
  switch (kind) {
    case 'valid':
      return [`Authorization: Bearer ${token}`];
    case 'garbage':
      return [`Authorization: Bearer ${randomBytes(12).toString('base64')}.x.y`];
    case 'bearer-empty':
      return ['Authorization: Bearer '];
    case 'basic':
      return ['Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l'];
    case 'long':
      return [`Authorization: Bearer ${'A'.repeat(4000)}`];
    case 'two':
      return [`Authorization: Bearer ${token}`, 'Authorization: Bearer other'];
    default:
      return [];
  }
}

function isErrorJson(r: RawResponse): boolean {
  try {
    const e = (JSON.parse(r.text) as { error?: { code?: unknown; message?: unknown } }).error;
    return typeof e?.code === 'string' && typeof e.message === 'string' && e.code !== '' && e.message !== '';
  } catch {
    return false;
  }
}

/** Sends raw bytes on a fresh connection and reads one response (or notes the close). */
async function exchange(port: number, bytes: Buffer, method: string): Promise<Outcome> {
  const conn = await RawConnection.open(port);
  try {
    await conn.write(bytes).catch(() => undefined);
    const r = await conn.readResponse({ method, timeoutMs: 8000 });
    return { status: r.status, json: isErrorJson(r), head: `${r.statusLine} ${r.text.slice(0, 120)}` };
  } catch (err) {
    if (conn.isClosed && conn.pending.length === 0) return { status: 'closed', json: false, head: '' };
    return { status: 'closed', json: false, head: String((err as Error).message).slice(0, 200) };
  } finally {
    conn.destroy();
  }
}

describe('bad input fuzzing (router and shard)', () => {
  let c: Cluster;
  let member: TestUser;
  let groupId: string;
  const rss: Record<string, number> = {};
  const procs = () => ({
    router: c.router.proc.pid,
    ...Object.fromEntries(c.shards.map((s) => [`shard${s.ordinal}`, s.proc.pid])),
  });
  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: S,
      config: { shard: { limits: { maxWaitSeconds: 1 } } },
    });
    const of = await shardOf(S);
    [member] = (await users(c, 'fuzz', 1)) as [TestUser];
    [groupId] = idsOn(of, 0, 'fuzz', 1) as [string];
    await makeGroup(c, groupId, member, []);
    for (const [k, pid] of Object.entries(procs())) rss[k] = rssKiB(pid);
  }, 60_000);
  afterAll(() => defaultRegistry.cleanup());

  const stats = { router: new Map<string, number>(), shard: new Map<string, number>() };
  const count = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

  async function healthy(): Promise<void> {
    for (const p of [c.router.proc, ...c.shards.map((s) => s.proc)]) expect(p.running, p.name).toBe(true);
    for (const url of [c.router.adminUrl, ...c.shards.map((s) => s.adminUrl)]) {
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
    }
  }

  function requestBytes(method: string, path: string, h: HeadersValue, body: Buffer | undefined): Buffer {
    const lines = [
      `${method} ${path} HTTP/1.1`,
      'Host: fuzz',
      'Connection: close',
      ...authHeader(h.auth, member.token),
    ];
    if (h.ct !== 'none') lines.push(`Content-Type: ${h.ct}`);
    if (h.xgroup !== null) lines.push(`X-Group-Id: ${h.xgroup}`);
    for (const [k, v] of h.extra) lines.push(`${k}: ${v}`);
    if (body !== undefined) lines.push(`Content-Length: ${body.length}`);
    const head = Buffer.from(`${lines.join('\r\n')}\r\n`, 'utf8');
    // Raw bytes (obs-text, controls, invalid UTF-8) in one more header line.
    const raw = h.rawTail
      ? Buffer.concat([
          Buffer.from('X-Raw: '),
          h.rawTail.filter((b: number) => b !== 10 && b !== 13),
          Buffer.from('\r\n'),
        ])
      : Buffer.alloc(0);
    return Buffer.concat([head, raw, Buffer.from('\r\n'), body ?? Buffer.alloc(0)]);
  }

  let knownNonJson = 0;
  let knownHtml404 = 0;
  it('random requests through the router: no crash, no 5xx, JSON errors', async () => {
    const bad: string[] = [];
    await fc.assert(
      fc.asyncProperty(methodArb, pathArb, headersArb, bodyArb, async (method, path, h, body) => {
        const out = await exchange(c.router.port, requestBytes(method, path, h, body), method);
        count(stats.router, String(out.status));
        // Known shard bug (RELIABILITY.md): a method Node's HTTP parser does not know
        // (lower-case `get`, `FOO`) is forwarded by the router (any token is a method) and
        // the shard's Node server answers a bare 400 without a JSON body.
        if (!http.METHODS.includes(method) && out.status === 400 && !out.json) {
          knownNonJson++;
          return true;
        }
        // Known shard bug (RELIABILITY.md): a target that starts with `//` is read by
        // Express as an authority (no path), and its default HTML 404 answers.
        if (path.startsWith('//') && out.status === 404 && !out.json) {
          knownHtml404++;
          return true;
        }
        const ok =
          out.status === 'closed'
            ? false
            : (out.status < 500 || out.status === 501 || out.status === 505) &&
              (out.status < 400 || method === 'HEAD' || out.json);
        if (!ok && bad.length < 10)
          bad.push(`${method} ${JSON.stringify(path)} ${JSON.stringify(h)} -> ${out.status} ${out.head}`);
        return true;
      }),
      { numRuns: HTTP_RUNS, interruptAfterTimeLimit: TIME_LIMIT_MS },
    );
    expect(bad).toEqual([]);
    await healthy();
  }, 60_000);

  it('random requests straight to a shard: no crash, no 5xx', async () => {
    const bad: string[] = [];
    const shard = c.shards[0] as Cluster['shards'][0];
    await fc.assert(
      fc.asyncProperty(methodArb, pathArb, headersArb, bodyArb, async (method, path, h, body) => {
        const out = await exchange(shard.port, requestBytes(method, path, h, body), method);
        count(stats.shard, String(out.status));
        // Node's own HTTP parser answers malformed requests 400 without a body (the router
        // never forwards those); everything that reaches the API must be JSON.
        const ok =
          out.status !== 'closed' &&
          out.status < 500 &&
          (out.status < 400 ||
            method === 'HEAD' ||
            out.json ||
            out.status === 400 ||
            (path.startsWith('//') && out.status === 404));
        if (!ok && bad.length < 10)
          bad.push(`${method} ${JSON.stringify(path)} ${JSON.stringify(h)} -> ${out.status} ${out.head}`);
        return true;
      }),
      { numRuns: SHARD_RUNS, interruptAfterTimeLimit: TIME_LIMIT_MS },
    );
    expect(bad).toEqual([]);
    await healthy();
  }, 60_000);

  it('huge and truncated inputs', async () => {
    const port = c.router.port;
    const results: Record<string, number | string> = {};
    const auth = `Authorization: Bearer ${member.token}`;
    // A 2 MiB body (router limit 1 MiB): 413 JSON.
    const big = Buffer.alloc(2 * 1024 * 1024, 0x61);
    let r = await exchange(
      port,
      Buffer.concat([
        Buffer.from(
          `POST /groups/${groupId}/messages HTTP/1.1\r\nHost: x\r\n${auth}\r\nContent-Type: application/json\r\nContent-Length: ${big.length}\r\n\r\n`,
        ),
        big,
      ]),
      'POST',
    );
    results.body2MiB = r.status;
    expect(r.status).toBe(413);
    expect(r.json).toBe(true);
    // A 100 KiB header section: 431.
    r = await exchange(
      port,
      Buffer.from(`GET /groups/${groupId} HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(100 * 1024)}\r\n\r\n`),
      'GET',
    );
    results.header100KiB = r.status;
    expect(r.status).toBe(431);
    // A 20 KiB path: 414.
    // A 10 KiB path (over maxPathBytes, under maxHeaderBytes): 414; 20 KiB: the head is too large, 431.
    r = await exchange(
      port,
      Buffer.from(`GET /groups/${'p'.repeat(10 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`),
      'GET',
    );
    results.path10KiB = r.status;
    expect(r.status).toBe(414);
    expect(r.json).toBe(true);
    r = await exchange(
      port,
      Buffer.from(`GET /groups/${'p'.repeat(20 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`),
      'GET',
    );
    results.path20KiB = r.status;
    expect(r.status).toBe(431);
    // A message body over the shard's 64 KiB limit (under the router's): 413 from the shard.
    const mid = Buffer.from(JSON.stringify({ contents: 'm'.repeat(100 * 1024), clientMsgId: 'mid' }));
    r = await exchange(
      port,
      Buffer.concat([
        Buffer.from(
          `POST /groups/${groupId}/messages HTTP/1.1\r\nHost: x\r\n${auth}\r\nContent-Type: application/json\r\nContent-Length: ${mid.length}\r\n\r\n`,
        ),
        mid,
      ]),
      'POST',
    );
    results.body100KiB = r.status;
    expect(r.status).toBe(413);
    expect(r.json).toBe(true);
    // Truncated: heads and bodies cut short, then the client goes away.
    for (const cut of [
      `POST /groups/${groupId}/messages HTTP/1.1\r\nHost: x\r\n${auth}\r\nContent-Length: 1000\r\n\r\n{"contents":`,
      `POST /groups/${groupId}/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc`,
      `GET /groups/${groupId} HTTP/1.1\r\nHost: x\r\nAuthor`,
      'GET /gro',
    ]) {
      for (const target of [port, (c.shards[0] as Cluster['shards'][0]).port]) {
        const conn = await RawConnection.open(target);
        await conn.write(cut);
        await new Promise((res) => setTimeout(res, 20));
        conn.destroy();
      }
    }
    // Invalid UTF-8 in a JSON body: 400 JSON, nothing stored.
    const badUtf8 = Buffer.concat([
      Buffer.from('{"contents":"'),
      Buffer.from([0xc3, 0x28, 0xff]),
      Buffer.from('","clientMsgId":"u8"}'),
    ]);
    r = await exchange(
      port,
      Buffer.concat([
        Buffer.from(
          `POST /groups/${groupId}/messages HTTP/1.1\r\nHost: x\r\n${auth}\r\nContent-Type: application/json\r\nContent-Length: ${badUtf8.length}\r\n\r\n`,
        ),
        badUtf8,
      ]),
      'POST',
    );
    results.invalidUtf8Body = r.status;
    expect(r.status).toBeLessThan(500);
    await healthy();
    summary('fuzz-huge', results);
  }, 60_000);

  it('random WebSocket frames on a group socket through the router', async () => {
    const port = c.router.port;
    const closes = new Map<string, number>();
    const frameArb = fc.oneof(
      fc
        .record({
          opcode: fc.constantFrom(0, 1, 2, 3, 8, 9, 10, 11, 15),
          payload: fc.oneof(
            fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
            fc.jsonValue({ maxDepth: 2 }).map((v) => Buffer.from(JSON.stringify(v) ?? 'null')),
            fc.constantFrom(
              Buffer.from([0xff, 0xfe, 0xfd]),
              Buffer.from('{"type":"message","contents":"\uD800","clientMsgId":"x"}'),
              Buffer.from('{"type":"message"}'),
              Buffer.from('{"type":"typing","x":1}'),
              Buffer.alloc(20_000, 0x41),
            ),
          ),
          fin: fc.boolean(),
          masked: fc.boolean(),
        })
        .map(({ opcode, payload, fin, masked }) => {
          const f = clientFrame(opcode, payload, fin);
          if (masked) return f;
          // Unmasked client frame (a protocol error): clear the mask bit, drop the key.
          const len7 = (f[1] as number) & 0x7f;
          const hl = len7 === 126 ? 4 : len7 === 127 ? 10 : 2;
          const out = Buffer.concat([f.subarray(0, hl), f.subarray(hl + 4)]);
          out[1] = (out[1] as number) & 0x7f;
          return out;
        }),
      fc.uint8Array({ minLength: 1, maxLength: 64 }).map((a) => Buffer.from(a)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(frameArb, { minLength: 1, maxLength: 4 }), async (frames) => {
        const conn = await RawConnection.open(port);
        try {
          await conn.write(
            `GET /groups/${groupId}/ws?token=${member.token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
          );
          const r = await conn.readResponse({ timeoutMs: 5000 });
          expect(r.status).toBe(101);
          for (const f of frames) await conn.write(f).catch(() => undefined);
          await new Promise((res) => setTimeout(res, 30));
          closes.set(
            conn.isClosed ? 'closed' : 'open',
            (closes.get(conn.isClosed ? 'closed' : 'open') ?? 0) + 1,
          );
        } finally {
          conn.destroy();
        }
        return true;
      }),
      { numRuns: WS_RUNS, interruptAfterTimeLimit: TIME_LIMIT_MS },
    );
    await healthy();
    // The group still works.
    const r = await postOnce(c.router.url, groupId, member.token, {
      contents: 'after fuzz',
      clientMsgId: 'after-fuzz',
    });
    expect(r.status).toBe(201);

    const growth: Record<string, number> = {};
    for (const [k, pid] of Object.entries(procs())) {
      growth[k] = rssKiB(pid) - (rss[k] as number);
      expect(growth[k]).toBeLessThan(RSS_BOUND_KIB);
    }
    summary('fuzz', {
      routerRequests: [...stats.router.values()].reduce((a, b) => a + b, 0),
      routerStatuses: Object.fromEntries(stats.router),
      routerNonJson400UnknownMethod: knownNonJson,
      routerHtml404DoubleSlash: knownHtml404,
      shardRequests: [...stats.shard.values()].reduce((a, b) => a + b, 0),
      shardStatuses: Object.fromEntries(stats.shard),
      wsConnections: [...closes.values()].reduce((a, b) => a + b, 0),
      wsAfterFrames: Object.fromEntries(closes),
      rssGrowthKiB: growth,
      crashes: 0,
      unexpected5xx: 0,
    });
  }, 60_000);
});
