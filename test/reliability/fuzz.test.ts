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
import { clientFrame, RawConnection, type RawResponse, serverFrames } from '../helpers/http.js';
import { defaultRegistry, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  idsOn,
  makeGroup,
  postOnce,
  readAll,
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

/** Sends raw bytes on a fresh connection: the status, the JSON error code (if any), `connection: close`. */
async function errorAnswer(
  port: number,
  bytes: string | Buffer,
  method = 'GET',
): Promise<{ status: number; code: string | undefined; close: boolean; text: string }> {
  const conn = await RawConnection.open(port);
  try {
    await conn.write(bytes).catch(() => undefined);
    const r = await conn.readResponse({ method, timeoutMs: 8000 });
    let code: string | undefined;
    if (isErrorJson(r)) code = (JSON.parse(r.text) as { error: { code: string } }).error.code;
    return {
      status: r.status,
      code,
      close: (r.headers.connection ?? []).some((v) => v.toLowerCase() === 'close'),
      text: r.text.slice(0, 200),
    };
  } finally {
    conn.destroy();
  }
}

/** Opens a WebSocket with raw bytes, sends `frame`, and returns the close code the server sends back. */
async function closeCodeAfter(port: number, target: string, frame: Buffer): Promise<number | undefined> {
  const conn = await RawConnection.open(port);
  try {
    await conn.write(
      `GET ${target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    const r = await conn.readResponse({ timeoutMs: 5000 });
    expect(r.status, r.text).toBe(101);
    await conn.write(frame);
    const closeFrame = () => serverFrames(conn.pending).frames.find((f) => f.opcode === 8);
    await waitFor(() => closeFrame() !== undefined || conn.isClosed, {
      timeoutMs: 10_000,
      what: `a close frame on ${target}`,
    });
    const payload = closeFrame()?.payload;
    return payload && payload.length >= 2 ? payload.readUInt16BE(0) : undefined;
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

  let unknownMethods = 0;
  let doubleSlashTargets = 0;
  let misdirectedByHeader = 0;
  it('random requests through the router: no crash, no 5xx, JSON errors', async () => {
    const bad: string[] = [];
    await fc.assert(
      fc.asyncProperty(methodArb, pathArb, headersArb, bodyArb, async (method, path, h, body) => {
        const out = await exchange(c.router.port, requestBytes(method, path, h, body), method);
        count(stats.router, String(out.status));
        // Methods Node's parser does not know (the router forwards any token) and targets
        // starting with `//` were answered without JSON once (RELIABILITY.md, fixed):
        // counted here to show they were exercised, held to the same rule as the rest.
        if (!http.METHODS.includes(method)) unknownMethods++;
        if (path.startsWith('//')) doubleSlashTargets++;
        // docs/architecture.md section 2: an x-group-id header that routes the request to another shard
        // than the one owning the id in the path gets 421 from that shard, which the router
        // answers 503 shard_misdirected (JSON, Retry-After). Documented; counted apart.
        if (
          h.xgroup !== null &&
          out.status === 503 &&
          out.json &&
          out.head.includes('"code":"shard_misdirected"')
        ) {
          misdirectedByHeader++;
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
        // Every error is JSON, also those of Node's own HTTP parser (the shard's
        // clientError handler) and of targets Express cannot route.
        const ok =
          out.status !== 'closed' && out.status < 500 && (out.status < 400 || method === 'HEAD' || out.json);
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
    expect(r.status).toBe(400);
    expect(r.json).toBe(true);
    expect(r.head).toContain('"code":"malformed_json"');
    await healthy();
    summary('fuzz-huge', results);
  }, 60_000);

  it('answers unknown methods, `//` targets and malformed heads with JSON errors (router, shard, admin port)', async () => {
    const shard = c.shards[0] as Cluster['shards'][0];
    const ports = { router: c.router.port, shard: shard.port, admin: shard.adminPort };
    const seen: Record<string, string> = {};
    const auth = `Authorization: Bearer ${member.token}\r\n`;
    for (const [name, port] of Object.entries(ports)) {
      // Methods Node's parser does not know: the router refuses them itself (issue 11), the
      // shard's parser refuses them (clientError), always with a JSON body; the shard and its
      // admin port close the connection.
      for (const m of ['get', 'FOO', 'Post']) {
        const r = await errorAnswer(port, `${m} /groups/${groupId} HTTP/1.1\r\nHost: x\r\n${auth}\r\n`, m);
        expect(r.status, `${name} ${m}: ${r.text}`).toBe(400);
        expect(r.code, `${name} ${m}: ${r.text}`).toBe('bad_method');
        if (name !== 'router') expect(r.close, `${name} ${m}`).toBe(true);
        seen[`${name} ${m}`] = `${r.status} ${r.code}`;
      }
      // Targets starting with `//`: `//a#@b` has no path for Express's router at all. The
      // router refuses the empty segment before hashing (400 ambiguous_path, issue 11).
      for (const t of ['//a#@b/members/..', '//x2W9x#y@z/members', `//groups/${groupId}`]) {
        const r = await errorAnswer(port, `GET ${t} HTTP/1.1\r\nHost: x\r\n${auth}Connection: close\r\n\r\n`);
        const want =
          name === 'router' ? { status: 400, code: 'ambiguous_path' } : { status: 404, code: 'not_found' };
        expect(r.status, `${name} ${t}: ${r.text}`).toBe(want.status);
        expect(r.code, `${name} ${t}: ${r.text}`).toBe(want.code);
        seen[`${name} ${t}`] = `${r.status} ${r.code}`;
      }
    }
    for (const [name, port] of Object.entries(ports)) {
      if (name === 'router') continue; // the router's own limits are tested above
      // A head over the shard's maxHeaderSize (16 KiB): 431 JSON.
      let r = await errorAnswer(
        port,
        `GET /groups/${groupId} HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(32 * 1024)}\r\n\r\n`,
      );
      expect(r.status, `${name}: ${r.text}`).toBe(431);
      expect(r.code).toBe('headers_too_large');
      expect(r.close).toBe(true);
      seen[`${name} 32KiB head`] = `${r.status} ${r.code}`;
      // A header line without a colon: 400 JSON.
      r = await errorAnswer(port, `GET /groups/${groupId} HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n`);
      expect(r.status, `${name}: ${r.text}`).toBe(400);
      expect(r.code).toBe('bad_request');
      expect(r.close).toBe(true);
      seen[`${name} bad header line`] = `${r.status} ${r.code}`;
    }
    await healthy();
    summary('fuzz-malformed', seen);
  }, 60_000);

  it('refuses invalid UTF-8 (and UTF-16) in JSON bodies with 400 malformed_json, on the API and /internal, storing nothing', async () => {
    const shard = c.shards[0] as Cluster['shards'][0];
    const post = (port: number, body: Buffer, contentType = 'application/json', extra = '') =>
      errorAnswer(
        port,
        Buffer.concat([
          Buffer.from(
            `POST /groups/${groupId}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${member.token}\r\n${extra}Content-Type: ${contentType}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
          ),
          body,
        ]),
        'POST',
      );
    const badUtf8 = (id: string) =>
      Buffer.concat([
        Buffer.from('{"contents":"ok '),
        Buffer.from([0xc3, 0x28, 0xff, 0xed, 0xa0, 0x80]),
        Buffer.from(`","clientMsgId":"${id}"}`),
      ]);
    const seen: Record<string, string> = {};
    for (const [name, port] of [
      ['router', c.router.port],
      ['shard', shard.port],
    ] as const) {
      const r = await post(port, badUtf8(`u8-${name}`));
      expect(r.status, r.text).toBe(400);
      expect(r.code).toBe('malformed_json');
      seen[`${name} utf-8`] = `${r.status} ${r.code}`;
      // A lone surrogate in a UTF-16LE body.
      const r16 = await post(
        port,
        Buffer.from(`{"contents":"x\uD800y","clientMsgId":"u16-${name}"}`, 'utf16le'),
        'application/json; charset=utf-16le',
      );
      expect(r16.status, r16.text).toBe(400);
      expect(r16.code).toBe('malformed_json');
      seen[`${name} utf-16le`] = `${r16.status} ${r16.code}`;
    }
    // Well-formed UTF-16 is still read (and the 4-byte UTF-8 of an emoji is fine).
    const ok16 = await post(
      c.router.port,
      Buffer.from('{"contents":"utf-16 \u00e9 \ud83d\udca5","clientMsgId":"ok-u16"}', 'utf16le'),
      'application/json; charset=utf-16le',
    );
    expect(ok16.status, ok16.text).toBe(201);
    // The admin port's /internal/* bodies (with the right token) are checked the same way.
    const internal = badUtf8('u8-internal');
    const r = await errorAnswer(
      shard.adminPort,
      Buffer.concat([
        Buffer.from(
          `POST /internal/groups/${groupId}/messages HTTP/1.1\r\nHost: x\r\nx-shardchat-internal-token: ${c.env.SHARDCHAT_INTERNAL_TOKEN}\r\nx-shardchat-shard: 0/${S}\r\nContent-Type: application/json\r\nContent-Length: ${internal.length}\r\nConnection: close\r\n\r\n`,
        ),
        internal,
      ]),
      'POST',
    );
    expect(r.status, r.text).toBe(400);
    expect(r.code).toBe('malformed_json');
    seen['internal utf-8'] = `${r.status} ${r.code}`;
    const stored = await readAll(c.router.url, groupId, member.token);
    const bad = stored.filter((m) => /^(u8|u16)-/.test(m.clientMsgId ?? '') || m.contents.includes('\uFFFD'));
    expect(bad).toEqual([]);
    expect(stored.find((m) => m.clientMsgId === 'ok-u16')?.contents).toBe('utf-16 \u00e9 \ud83d\udca5');
    summary('fuzz-utf8', seen);
  }, 60_000);

  it('closes group and inbox WebSockets that send invalid UTF-8 text with 1007, storing nothing', async () => {
    const shard = c.shards[0] as Cluster['shards'][0];
    const frame = (id: string) =>
      clientFrame(
        1,
        Buffer.concat([
          Buffer.from('{"type":"message","groupId":"'),
          Buffer.from(groupId),
          Buffer.from('","contents":"'),
          Buffer.from([0xc3, 0x28, 0xff]),
          Buffer.from(`","clientMsgId":"${id}"}`),
        ]),
      );
    const codes: Record<string, number | undefined> = {
      groupViaRouter: await closeCodeAfter(
        c.router.port,
        `/groups/${groupId}/ws?token=${member.token}`,
        frame('ws-u8-router'),
      ),
      groupOnShard: await closeCodeAfter(
        shard.port,
        `/groups/${groupId}/ws?token=${member.token}`,
        frame('ws-u8-shard'),
      ),
      inboxViaRouter: await closeCodeAfter(
        c.router.port,
        `/users/${member.id}/ws?token=${member.token}`,
        frame('ws-u8-inbox'),
      ),
    };
    for (const [k, v] of Object.entries(codes)) expect(v, k).toBe(1007);
    const stored = await readAll(c.router.url, groupId, member.token);
    expect(stored.filter((m) => (m.clientMsgId ?? '').startsWith('ws-u8-'))).toEqual([]);
    await healthy();
    summary('fuzz-ws-utf8', codes);
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
      routerUnknownMethodRequests: unknownMethods,
      routerDoubleSlashTargets: doubleSlashTargets,
      routerMisdirectedByHeader: misdirectedByHeader,
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
