/**
 * Security through the router (extending shard-api, shard-ws and router tests): bad
 * tokens (forged, expired, alg:none, wrong key) on every group route and on upgrades;
 * non-members on every group route and upgrade; /internal/* and admin paths unreachable
 * through the router and the shard's public port, refused without or with a wrong
 * internal token on the admin port; request-smuggling shapes refused without forwarding
 * the smuggled request; ids that try path traversal or SQL; the per-connection WebSocket
 * rate limit; the per-user message rate limit shared by a user's WebSockets, HTTP posts and
 * inbox; and a flood of idle connections bounded by router.limits.maxConnections.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cluster, startCluster } from '../helpers/cluster.js';
import { failedUpgrade, RawConnection, WsClient } from '../helpers/http.js';
import { defaultRegistry, REPO_ROOT, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  type ExtraRouter,
  idsOn,
  makeGroup,
  readAll,
  rssKiB,
  shardOf,
  sleep,
  startSecondRouter,
  summary,
  type TestUser,
  timedRequest,
  uid,
  users,
} from '../helpers/reliability.js';

useProcessCleanup();

const S = 2;
const FLOOD = 2000;
const FLOOD_MAX_CONNECTIONS = 64;
/** The per-user message limit here: a burst of 60, then 0.5 per second. */
const USER_BURST = 60;
const USER_RATE = 0.5;

interface Reply {
  type: string;
  clientMsgId?: string;
  code?: string;
  message?: string;
}

/** Reads events until every id in `ids` has its `ack` or `error` (other events are skipped). */
async function repliesTo(ws: WsClient, ids: string[]): Promise<Map<string, Reply>> {
  const want = new Set(ids);
  const got = new Map<string, Reply>();
  for (let i = 0; got.size < want.size && i < 100_000; i++) {
    const e = await ws.nextJson<Reply>(15_000);
    if ((e.type === 'ack' || e.type === 'error') && e.clientMsgId && want.has(e.clientMsgId))
      got.set(e.clientMsgId, e);
  }
  return got;
}

const b64url = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

function listFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p));
    else out.push(p);
  }
  return out;
}

describe('security', () => {
  let c: Cluster;
  let owner: TestUser;
  let member: TestUser;
  let outsider: TestUser;
  let groupId: string;
  const results: Record<string, unknown> = {};
  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: S,
      config: {
        shard: {
          limits: {
            wsMessagesPerSecond: 20,
            wsBurst: 40,
            userMessagesPerSecond: USER_RATE,
            userMessageBurst: USER_BURST,
          },
        },
      },
    });
    [owner, member, outsider] = (await users(c, 'sec', 3)) as [TestUser, TestUser, TestUser];
    groupId = uid('sec');
    await makeGroup(c, groupId, owner, [member]);
  }, 60_000);
  afterAll(async () => {
    summary('security', results);
    await defaultRegistry.cleanup();
  });

  const groupRoutes = (g: string, self: string): [string, string, unknown][] => [
    ['GET', `/groups/${g}`, undefined],
    ['PUT', `/groups/${g}`, { subject: 'x' }],
    ['GET', `/groups/${g}/messages?after=0`, undefined],
    ['POST', `/groups/${g}/messages`, { contents: 'x', clientMsgId: 'sec-1' }],
    ['GET', `/groups/${g}/members`, undefined],
    ['POST', `/groups/${g}/members`, { userId: self }],
    ['DELETE', `/groups/${g}/members/${self}`, undefined],
    ['GET', `/groups/${g}/presence`, undefined],
    ['PUT', `/users/${self}`, { name: 'x' }],
    ['GET', `/users/${self}`, undefined],
  ];

  it('refuses forged, expired, alg:none and wrong-key tokens with 401 JSON on every route and upgrade', async () => {
    const key = new TextEncoder().encode(c.env.SHARDCHAT_AUTH_SECRET as string);
    const now = Math.floor(Date.now() / 1000);
    const [h, p] = owner.token.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    const tokens: Record<string, string> = {
      forged: `${h}.${b64url({ ...claims, sub: outsider.id })}.${owner.token.split('.')[2]}`,
      expired: await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(owner.id)
        .setIssuedAt(now - 7200)
        .setExpirationTime(now - 3600)
        .sign(key),
      algNone: `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ ...claims })}.`,
      wrongKey: await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(owner.id)
        .setExpirationTime(now + 3600)
        .sign(randomBytes(32)),
      hs512: await new SignJWT({})
        .setProtectedHeader({ alg: 'HS512' })
        .setSubject(owner.id)
        .setExpirationTime(now + 3600)
        .sign(new Uint8Array(Buffer.concat([key, key]))),
      noExp: await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(owner.id).sign(key),
      garbage: 'not.a.jwt',
    };
    let checked = 0;
    for (const [kind, token] of Object.entries(tokens)) {
      for (const [method, route, body] of groupRoutes(groupId, owner.id)) {
        const r = await timedRequest(c.router.url, method, route, token, body);
        expect(r.status, `${kind} ${method} ${route}: ${JSON.stringify(r.body)}`).toBe(401);
        expect(typeof r.body?.error?.code).toBe('string');
        checked++;
      }
      const up = await failedUpgrade(
        `${c.router.url}/groups/${groupId}/ws?token=${encodeURIComponent(token)}`,
      );
      expect(up.status, `${kind} upgrade`).toBe(401);
      checked++;
    }
    results.badTokenRequests401 = checked;
  });

  it('refuses non-members with 403 on every group route (and non-owners on owner routes) and upgrade', async () => {
    const t = outsider.token;
    const cases: [string, string, unknown][] = [
      ['GET', `/groups/${groupId}/messages?after=0`, undefined],
      ['POST', `/groups/${groupId}/messages`, { contents: 'x', clientMsgId: 'out-1' }],
      ['GET', `/groups/${groupId}/members`, undefined],
      ['GET', `/groups/${groupId}/presence`, undefined],
      ['PUT', `/groups/${groupId}`, { subject: 'taken over' }],
      ['DELETE', `/groups/${groupId}/members/${member.id}`, undefined],
    ];
    for (const [method, route, body] of cases) {
      const r = await timedRequest(c.router.url, method, route, t, body);
      expect(r.status, `${method} ${route}: ${JSON.stringify(r.body)}`).toBe(403);
    }
    // A member is not the owner either.
    expect(
      (await timedRequest(c.router.url, 'PUT', `/groups/${groupId}`, member.token, { subject: 'x' })).status,
    ).toBe(403);
    expect(
      (await timedRequest(c.router.url, 'DELETE', `/groups/${groupId}/members/${owner.id}`, member.token))
        .status,
    ).toBe(403);
    // Someone else's profile.
    expect((await timedRequest(c.router.url, 'PUT', `/users/${member.id}`, t, { name: 'x' })).status).toBe(
      403,
    );
    const up = await failedUpgrade(`${c.router.url}/groups/${groupId}/ws?token=${t}`);
    expect(up.status).toBe(403);
    // Nothing was written.
    const all = await readAll(c.router.url, groupId, owner.token);
    expect(all.filter((m) => m.userId === outsider.id)).toEqual([]);
    expect((await timedRequest(c.router.url, 'GET', `/groups/${groupId}`, owner.token)).body.subject).toBe(
      groupId,
    );
    results.nonMember403 = cases.length + 4;
  });

  it('keeps /internal/* and admin paths off the router and the public ports', async () => {
    const token = c.env.SHARDCHAT_INTERNAL_TOKEN as string;
    const sub = `${groupId}~9`;
    const spec = { subject: 'x', owner: outsider.id, capacity: 10, parent: groupId };
    const seen: Record<string, number> = {};
    // Through the router (the path is the key: it lands on some shard's public port).
    for (const p of [
      `/internal/groups/${encodeURIComponent(sub)}`,
      `/internal/groups/${encodeURIComponent(sub)}/members/${outsider.id}`,
      `/groups/..%2Finternal%2Fgroups%2Fx`,
      `/groups/${groupId}/../../internal/groups/x`,
      '/metrics',
      '/topology',
      '/readyz',
    ]) {
      for (const method of ['GET', 'POST', 'PUT']) {
        const res = await fetch(`${c.router.url}${p}`, {
          method,
          headers: { 'x-shardchat-internal-token': token, 'content-type': 'application/json' },
          body: method === 'GET' ? undefined : JSON.stringify(spec),
        });
        const text = await res.text();
        seen[res.status] = (seen[res.status] ?? 0) + 1;
        expect([400, 401, 404, 405], `${method} ${p}: ${res.status} ${text.slice(0, 200)}`).toContain(
          res.status,
        );
        expect(text).not.toMatch(/shardchat_|# TYPE/);
      }
    }
    // Straight to each shard's public port, with the right token: not served there.
    for (const s of c.shards) {
      const res = await fetch(`${s.url}/internal/groups/${encodeURIComponent(sub)}`, {
        method: 'POST',
        headers: { 'x-shardchat-internal-token': token, 'content-type': 'application/json' },
        body: JSON.stringify(spec),
      });
      expect([404, 421]).toContain(res.status);
      await res.text();
    }
    // The admin port: no token or a wrong one is 401.
    for (const s of c.shards) {
      for (const hdr of [
        {} as Record<string, string>,
        { 'x-shardchat-internal-token': 'wrong' },
        { 'x-shardchat-internal-token': `${token}x` },
      ]) {
        const res = await fetch(`${s.adminUrl}/internal/groups/${encodeURIComponent(sub)}`, {
          method: 'POST',
          headers: { ...hdr, 'content-type': 'application/json' },
          body: JSON.stringify(spec),
        });
        expect(res.status).toBe(401);
        await res.text();
      }
    }
    // The router's own admin port does not proxy /internal.
    expect((await fetch(`${c.router.adminUrl}/internal/groups/x`)).status).toBe(404);
    // The sub-conversation was never created.
    expect(
      (await timedRequest(c.router.url, 'GET', `/groups/${encodeURIComponent(sub)}`, owner.token)).status,
    ).toBe(404);
    results.internalThroughRouter = seen;
  });

  it('refuses request-smuggling shapes and never forwards the smuggled request', async () => {
    const smuggledIds: string[] = [];
    const smuggle = () => {
      const id = uid('smug');
      smuggledIds.push(id);
      const body = '{"subject":"smuggled"}';
      return `PUT /groups/${id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${owner.token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    };
    const g = `/groups/${groupId}/messages?after=0`;
    const shapes: Record<string, () => string> = {
      clAndTeObsFold: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n${s}`;
      },
      teTab: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n${s}`;
      },
      teSpaceBeforeColon: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n${s}`;
      },
      teXchunked: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${s}`;
      },
      teChunkedIdentity: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${s}`;
      },
      teTwice: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${s}`;
      },
      teChunkedChunked: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n${s}`;
      },
      clPlus: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nContent-Length: +${s.length}\r\n\r\n${s}`;
      },
      clHex: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n${s}`;
      },
      clList: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nContent-Length: 0, ${s.length}\r\n\r\n${s}`;
      },
      clTwoDiffering: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: ${s.length}\r\n\r\n${s}`;
      },
      clNegative: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n${s}`;
      },
      chunkSizeOverflow: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000000001\r\nx\r\n0\r\n\r\n${s}`;
      },
      chunkSizeNegative: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n${s}`;
      },
      chunkBareLf: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n${s}`;
      },
      headerBareLf: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\nContent-Length: 0\r\nX: y\r\n\r\n${s}`;
      },
      headerBareCr: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\rContent-Length: ${s.length}\r\n\r\n${s}`;
      },
      headerNul: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\nContent-Length: 0\r\n\r\n${s}`;
      },
      headerNameSpace: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nContent Length: 0\r\n\r\n${s}`;
      },
      twoHosts: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.1\r\nHost: x\r\nHost: y\r\nContent-Length: 0\r\n\r\n${s}`;
      },
      requestLineTab: () => {
        const s = smuggle();
        return `POST\t${g} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n${s}`;
      },
      http2Version: () => {
        const s = smuggle();
        return `POST ${g} HTTP/2.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n${s}`;
      },
      http10Chunked: () => {
        const s = smuggle();
        return `POST ${g} HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${s}`;
      },
    };
    const outcome: Record<string, string> = {};
    for (const [name, build] of Object.entries(shapes)) {
      const conn = await RawConnection.open(c.router.port);
      try {
        await conn.write(build());
        let status = 'none';
        try {
          const r = await conn.readResponse({ timeoutMs: 1500 });
          status = String(r.status);
          await conn.waitClosed(2000).catch(() => undefined);
          // Whatever came first, a second response (the smuggled request's) never comes.
          expect(conn.pending.toString('latin1'), name).not.toMatch(/HTTP\/1\.1 201/);
        } catch {
          // No answer (e.g. a head that never ends in CRLF CRLF): not forwarded either.
        }
        outcome[name] = `${status}${conn.isClosed ? ' closed' : ' open'}`;
        expect(['400', '501', '505', '431', 'none'], `${name}: ${status}`).toContain(status);
      } finally {
        conn.destroy();
      }
    }
    await sleep(200);
    for (const id of smuggledIds) {
      expect((await timedRequest(c.router.url, 'GET', `/groups/${id}`, owner.token)).status, id).toBe(404);
    }
    results.smuggling = outcome;
  });

  it('ids with ../, %2F, quotes and SQL fragments cannot escape (400/404, no file outside dataDir, no 500)', async () => {
    const watch = [c.dir, os.tmpdir(), REPO_ROOT];
    const before = new Map(watch.map((d) => [d, new Set(d === c.dir ? listFiles(d) : readdirSync(d))]));
    const ids = [
      '..',
      '../..',
      '../../etc/passwd',
      '..%2F..%2Fescape',
      '%2e%2e%2fescape',
      'a/../../escape',
      "x' OR '1'='1",
      'x"; DROP TABLE messages; --',
      "'; DELETE FROM groups; --",
      'escape\\..\\..',
      '%00',
      'a%00b',
      '~1',
      'x~1',
      '.hidden',
      `${'a'.repeat(129)}`,
      'é',
      '%252e%252e%252f',
    ];
    const statuses: Record<string, number> = {};
    for (const id of ids) {
      for (const encoded of [encodeURIComponent(id), id]) {
        for (const [method, suffix, body] of [
          ['PUT', '', { subject: 'x' }],
          ['GET', '/messages?after=0', undefined],
          ['POST', '/messages', { contents: 'x', clientMsgId: "'; DROP TABLE messages; --" }],
        ] as const) {
          const r = await timedRequest(
            c.router.url,
            method,
            `/groups/${encoded}${suffix}`,
            owner.token,
            body,
          );
          statuses[r.status] = (statuses[r.status] ?? 0) + 1;
          expect(r.status, `${method} /groups/${encoded}${suffix}: ${JSON.stringify(r.body)}`).toBeLessThan(
            500,
          );
          expect([400, 404, 405, 409, 421], `${method} ${encoded}${suffix}`).toContain(r.status);
        }
      }
      const u = await timedRequest(c.router.url, 'PUT', `/users/${encodeURIComponent(id)}`, owner.token, {
        name: "x'; --",
      });
      expect(u.status).toBeLessThan(500);
      expect([400, 403, 404]).toContain(u.status);
    }
    // A valid id that looks like a file name is just a row.
    expect(
      (await timedRequest(c.router.url, 'PUT', '/groups/shard-0.sqlite', owner.token, { subject: 'x' }))
        .status,
    ).toBe(201);
    // A valid clientMsgId or contents with SQL is just text.
    const sql = "'); DROP TABLE messages; --";
    const ok = await timedRequest(c.router.url, 'POST', `/groups/${groupId}/messages`, owner.token, {
      contents: sql,
      clientMsgId: 'sql-1',
    });
    expect(ok.status).toBe(201);
    const stored = await readAll(c.router.url, groupId, owner.token);
    expect(stored.some((m) => m.contents === sql)).toBe(true);
    const dataFiles = listFiles(c.dir).filter((f) => !before.get(c.dir)?.has(f));
    for (const f of dataFiles)
      expect(path.relative(c.dataDir, f), f).toMatch(/^shard-\d+\.sqlite(-wal|-shm)?$/);
    for (const d of [os.tmpdir(), REPO_ROOT]) {
      const fresh = readdirSync(d).filter(
        (f) => !before.get(d)?.has(f) && /escape|passwd|DROP|hidden|sqlite/i.test(f),
      );
      expect(fresh, d).toEqual([]);
    }
    results.badIds = statuses;
  });

  it('closes a WebSocket that exceeds the per-connection rate with 4029, storing at most burst + rate x time', async () => {
    const ws = new WsClient(`${c.router.wsUrl}/groups/${groupId}/ws?token=${member.token}`);
    await ws.opened;
    const started = performance.now();
    for (let i = 0; i < 200; i++)
      ws.send(JSON.stringify({ type: 'message', contents: `flood ${i}`, clientMsgId: `flood-${i}` }));
    const closed = await ws.waitClosed(10_000);
    const seconds = (performance.now() - started) / 1000;
    expect(closed.code).toBe(4029);
    await sleep(300);
    const stored = (await readAll(c.router.url, groupId, owner.token)).filter((m) =>
      (m.clientMsgId ?? '').startsWith('flood-'),
    );
    expect(stored.length).toBeLessThanOrEqual(40 + Math.ceil(20 * seconds) + 1);
    expect(stored.length).toBeGreaterThan(0);
    // A new connection of the same user opens (the connection's limit closed only that one;
    // the per-user message limit, tested below, never closes a socket).
    const again = new WsClient(`${c.router.wsUrl}/groups/${groupId}/ws?token=${member.token}`);
    await again.opened;
    again.terminate();
    results.wsRateLimit = {
      sent: 200,
      stored: stored.length,
      closeCode: closed.code,
      seconds: Math.round(seconds * 100) / 100,
    };
  });

  it('limits messages per user across two WebSockets, HTTP and the inbox (429 / error rate_limited), other users unaffected', async () => {
    const of = await shardOf(S);
    // The group on shard 0; the user's session host (inbox) on shard 1, so that inbox posts
    // reach the group's shard over /internal/* and are limited there.
    const [g] = idsOn(of, 0, 'rate', 1) as [string];
    const [uId] = idsOn(of, 1, 'rate-u', 1) as [string];
    const u: TestUser = { id: uId, token: await c.token(uId) };
    const [v] = (await users(c, 'rate-v', 1)) as [TestUser];
    await makeGroup(c, g, u, [v]);
    const open = async (p: string) => {
      const ws = new WsClient(`${c.router.wsUrl}${p}?token=${u.token}`);
      await ws.opened;
      expect((await ws.nextJson<Reply>()).type).toBe('hello');
      return ws;
    };
    const ws1 = await open(`/groups/${g}/ws`);
    const ws2 = await open(`/groups/${g}/ws`);
    const inbox = await open(`/users/${u.id}/ws`);
    const started = performance.now();
    const accepted: string[] = [];
    const limited: string[] = [];
    const note = (id: string, r: Reply | undefined) => {
      expect(r, id).toBeDefined();
      if (r?.type === 'ack') accepted.push(id);
      else {
        expect(r?.code, JSON.stringify(r)).toBe('rate_limited');
        expect(r?.message).toMatch(/too many messages/);
        limited.push(id);
      }
    };
    const wsMessage = (id: string, groupId?: string) =>
      JSON.stringify({ type: 'message', ...(groupId ? { groupId } : {}), contents: id, clientMsgId: id });
    // 1. Half the burst on each socket (each under its own connection limit of 40).
    for (const [ws, name] of [
      [ws1, 'a'],
      [ws2, 'b'],
    ] as const) {
      const ids = Array.from({ length: USER_BURST / 2 }, (_, i) => `rate-${name}-${i}`);
      for (const id of ids) ws.send(wsMessage(id));
      const replies = await repliesTo(ws, ids);
      for (const id of ids) note(id, replies.get(id));
    }
    // 2. The budget is spent: each way in gets rate_limited within a few messages (one at a
    //    time; a token comes back every 2 s).
    const untilLimited = async (name: string, send: (id: string) => Promise<Reply>) => {
      for (let i = 0; i < 8; i++) {
        const id = `rate-${name}-more-${i}`;
        const r = await send(id);
        note(id, r);
        if (r.type === 'error') return r;
      }
      throw new Error(`${name}: no rate_limited answer within 8 messages`);
    };
    const viaWs = (ws: WsClient, groupId?: string) => async (id: string) => {
      ws.send(wsMessage(id, groupId));
      return (await repliesTo(ws, [id])).get(id) as Reply;
    };
    await untilLimited('ws2', viaWs(ws2));
    let http429: Awaited<ReturnType<typeof timedRequest>> | undefined;
    await untilLimited('http', async (id) => {
      const r = await timedRequest(c.router.url, 'POST', `/groups/${g}/messages`, u.token, {
        contents: id,
        clientMsgId: id,
      });
      if (r.status === 201) return { type: 'ack', clientMsgId: id };
      expect(r.status, JSON.stringify(r.body)).toBe(429);
      http429 = r;
      return { type: 'error', clientMsgId: id, ...r.body.error };
    });
    const h = http429 as NonNullable<typeof http429>;
    expect(h.headers?.get('retry-after')).toMatch(/^[1-9]\d*$/);
    expect(h.headers?.get('content-type')).toMatch(/application\/json/);
    await untilLimited('ws1', viaWs(ws1));
    await untilLimited('inbox', viaWs(inbox, g));
    const seconds = (performance.now() - started) / 1000;
    // 3. At most the burst plus what the rate refilled meanwhile was accepted.
    expect(accepted.length).toBeGreaterThanOrEqual(USER_BURST);
    expect(accepted.length).toBeLessThanOrEqual(USER_BURST + Math.ceil(USER_RATE * seconds) + 1);
    // 4. Another user is unaffected, and the limited sockets stay open: ws1 receives it.
    const other = await timedRequest(c.router.url, 'POST', `/groups/${g}/messages`, v.token, {
      contents: 'from v',
      clientMsgId: 'v-1',
    });
    expect(other.status, JSON.stringify(other.body)).toBe(201);
    let delivered = false;
    for (let i = 0; !delivered && i < 1000; i++) {
      const e = await ws1.nextJson<Reply & { userId?: string }>(15_000);
      delivered = e.type === 'message' && e.userId === v.id;
    }
    expect(delivered).toBe(true);
    for (const ws of [ws1, ws2, inbox]) expect(ws.closeInfo).toBeUndefined();
    // 5. Exactly the accepted messages were stored.
    const stored = (await readAll(c.router.url, g, v.token)).filter((m) => m.userId === u.id);
    expect(stored.map((m) => m.clientMsgId).sort()).toEqual([...accepted].sort());
    for (const ws of [ws1, ws2, inbox]) ws.terminate();
    results.userRateLimit = {
      burst: USER_BURST,
      perSecond: USER_RATE,
      sent: accepted.length + limited.length,
      accepted: accepted.length,
      limited: limited.length,
      limitedBy: {
        ws2: limited.filter((id) => id.startsWith('rate-ws2')).length,
        http: limited.filter((id) => id.startsWith('rate-http')).length,
        ws1: limited.filter((id) => id.startsWith('rate-ws1')).length,
        inbox: limited.filter((id) => id.startsWith('rate-inbox')).length,
      },
      httpRetryAfter: h.headers?.get('retry-after'),
      otherUser: other.status,
      socketsClosed: 0,
      seconds: Math.round(seconds * 100) / 100,
    };
  }, 60_000);

  it(`bounds a flood of ${FLOOD} idle connections by maxConnections (${FLOOD_MAX_CONNECTIONS}) and stays responsive`, async () => {
    const r2: ExtraRouter = await startSecondRouter(c, defaultRegistry, {
      SHARDCHAT__router__limits__maxConnections: String(FLOOD_MAX_CONNECTIONS),
      SHARDCHAT__router__timeouts__clientKeepAliveMs: '2000',
    });
    const rssBefore = rssKiB(r2.proc.pid);
    const sockets: net.Socket[] = [];
    let refusedOrReset = 0;
    try {
      const floodStarted = performance.now();
      for (let batch = 0; batch < FLOOD / 500; batch++) {
        await Promise.all(
          Array.from(
            { length: 500 },
            () =>
              new Promise<void>((resolve) => {
                const s = net.connect({ port: r2.port, host: '127.0.0.1' });
                sockets.push(s);
                s.on('error', () => {
                  refusedOrReset++;
                  resolve();
                });
                s.on('connect', () => resolve());
                s.setTimeout(3000, () => resolve());
              }),
          ),
        );
      }
      const connectMs = Math.round(performance.now() - floodStarted);
      await sleep(200);
      // Those beyond the limit were closed by the router at once; the rest stay until
      // clientKeepAliveMs (2 s) ends them.
      const openNow = sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;
      const duringFlood = await timedRequest(
        r2.url,
        'GET',
        `/groups/${groupId}`,
        owner.token,
        undefined,
        1000,
      );
      // Those beyond the limit were closed by the router at once.
      const adminDuring = await timedRequest(r2.adminUrl, 'GET', '/healthz', undefined);
      expect(adminDuring.status).toBe(200);
      const routerAlive = r2.proc.running;
      // Idle connections are closed after clientKeepAliveMs; then real requests go through.
      const recovered = performance.now();
      await waitFor(
        async () =>
          (await timedRequest(r2.url, 'GET', `/groups/${groupId}`, owner.token, undefined, 2000)).status ===
          200,
        {
          timeoutMs: 10_000,
          what: 'a request through the flooded router',
        },
      );
      const servedAfterMs = Math.round(performance.now() - recovered);
      const stillOpen = sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;
      const rssAfter = rssKiB(r2.proc.pid);
      expect(routerAlive).toBe(true);
      expect(rssAfter - rssBefore).toBeLessThan(64 * 1024);
      results.connectionFlood = {
        attempted: FLOOD,
        maxConnections: FLOOD_MAX_CONNECTIONS,
        errors: refusedOrReset,
        connectAllMs: connectMs,
        openAfter200ms: openNow,
        requestDuringFlood: duringFlood.status,
        openWhenServedAgain: stillOpen,
        servedAfterMs,
        rssGrowthKiB: rssAfter - rssBefore,
      };
      expect(openNow).toBeLessThanOrEqual(FLOOD_MAX_CONNECTIONS);
    } finally {
      for (const s of sockets) s.destroy();
      await r2.proc.stop();
    }
  }, 60_000);
});
