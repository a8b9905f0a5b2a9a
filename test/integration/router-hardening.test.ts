/**
 * Router hardening (GitHub issue 11): the router (built CLI, `npm run build` first) in
 * front of small misbehaving upstreams written here with `net.createServer`
 * (test/helpers/raw-upstream.ts), driven over raw TCP. One block per defect of the
 * issue, then the choices it settles (methods, repeated Content-Length, bare-LF heads,
 * a repeated key header). Paths and head sizes are also checked against real shards.
 */
import http from 'node:http';
import type net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Cluster, startCluster } from '../helpers/cluster.js';
import { clientFrame, metricValue, RawConnection, request } from '../helpers/http.js';
import { freePort, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  httpResponse,
  RawUpstream,
  type Reply,
  SWITCHING,
  type UpstreamConn,
  upgradeRequest,
} from '../helpers/raw-upstream.js';
import {
  type Backend,
  loadShardFunction,
  type RouterProcess,
  routerConfig,
  type ShardFunctionApi,
  startRouter,
} from '../helpers/shardchat.js';

const registry = useProcessCleanup();
let dir: string;
let api: ShardFunctionApi;
const upstreams: RawUpstream[] = [];
const servers: net.Server[] = [];

beforeAll(async () => {
  dir = await registry.tempDir();
  api = await loadShardFunction();
});

afterEach(async () => {
  await Promise.all(upstreams.splice(0).map((u) => u.close()));
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.close(() => resolve());
          (s as http.Server).closeAllConnections?.();
        }),
    ),
  );
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function upstream(reply: Reply): Promise<RawUpstream> {
  const u = await RawUpstream.start(reply);
  upstreams.push(u);
  return u;
}

/** A router (scope: this test) in front of these upstreams, S = their number. */
function routerFor(targets: { url: string }[], router: Record<string, unknown> = {}): Promise<RouterProcess> {
  return startRouter(dir, routerConfig(targets as Backend[], { router }), { scope: 'test' });
}

/** A group key that lands on `shard` among S. */
function keyOn(shard: number, S: number, prefix = 'k'): string {
  const sf = new api.ShardFunction(api.DEFAULT_SHARD_SPEC);
  for (let i = 0; i < 10_000; i++) {
    const key = `${prefix}${i}`;
    const r = sf.route(`/groups/${key}/messages`, {}, S);
    if (r.kind === 'shard' && r.shard === shard) return key;
  }
  throw new Error(`no key for shard ${shard}`);
}

async function metric(r: RouterProcess, name: string, labels: Record<string, string>): Promise<number> {
  const res = await request(`${r.adminUrl}/metrics`);
  return metricValue(res.text, name, labels) ?? 0;
}

const get = (target: string, extra = '') => `GET ${target} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;

/** Answers every request with 200 and `own:<target>`. */
const own: Reply = (req, conn) => {
  conn.socket.write(httpResponse(200, `own:${req.target}`));
};

function errorCode(text: string): string {
  return (JSON.parse(text) as { error: { code: string; message: string } }).error.code;
}

// --- 1. response desync across clients ---

describe('1. bytes past a response never become another client’s response', () => {
  it('a second response in the same write is not handed to the request queued on that socket', async () => {
    let first = true;
    const up = await upstream((req, conn) => {
      if (first) {
        first = false;
        // Held until B is queued behind A on the only socket, then: A's answer plus an injected one.
        setTimeout(() => conn.socket.write(httpResponse(200, 'ok') + httpResponse(200, 'injected')), 300);
        return;
      }
      conn.socket.write(httpResponse(200, `own:${req.target}`));
    });
    const r = await routerFor([up], { limits: { maxSocketsPerShard: 1 } });
    const a = await RawConnection.open(r.port);
    const b = await RawConnection.open(r.port);
    try {
      await a.write(get('/groups/a/messages'));
      await sleep(100);
      await b.write(get('/groups/b/messages'));
      const ra = await a.readResponse({ timeoutMs: 5000 });
      const rb = await b.readResponse({ timeoutMs: 5000 });
      expect(ra.status).toBe(200);
      expect(ra.text).toBe('ok');
      expect(rb.status).toBe(200);
      expect(rb.text).toBe('own:/groups/b/messages');
      expect(
        await metric(r, 'shardchat_router_upstream_errors_total', { shard: '0', reason: 'overflow' }),
      ).toBe(1);
      // The socket that overflowed was closed by the router, B went on a new one.
      expect(up.conns[0]?.closedByPeer).toBe(true);
      expect(up.requests.find((q) => q.target === '/groups/b/messages')?.conn).toBe(2);
    } finally {
      a.destroy();
      b.destroy();
    }
  });

  it('node:http sending more than its Content-Length (Node 20 sends all of res.end) desyncs nobody', async () => {
    const port = await freePort();
    let first = true;
    const server = http.createServer((req, res) => {
      if (first) {
        first = false;
        setTimeout(() => {
          res.setHeader('content-length', 2);
          res.end('hello');
        }, 300);
        return;
      }
      res.setHeader('content-length', Buffer.byteLength(`own:${req.url}`));
      res.end(`own:${req.url}`);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    const r = await routerFor([{ url: `http://127.0.0.1:${port}` }], { limits: { maxSocketsPerShard: 1 } });
    const a = await RawConnection.open(r.port);
    const b = await RawConnection.open(r.port);
    try {
      await a.write(get('/groups/a/messages'));
      await sleep(100);
      await b.write(get('/groups/b/messages'));
      const ra = await a.readResponse({ timeoutMs: 5000 });
      const rb = await b.readResponse({ timeoutMs: 5000 });
      expect(ra.status).toBe(200);
      expect(ra.text).toBe('he');
      expect(rb.status).toBe(200);
      expect(rb.text).toBe('own:/groups/b/messages');
    } finally {
      a.destroy();
      b.destroy();
    }
  });
});

// --- 2. overflow: the complete response, then that upstream socket is gone ---

describe('2. an upstream that sends more than the response: deliver it, drop the socket', () => {
  const shapes: { name: string; method: string; answer: string; status: number; body: string }[] = [
    {
      name: 'a body longer than its Content-Length',
      method: 'GET',
      answer: 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA',
      status: 200,
      body: 'ok',
    },
    {
      name: 'a 204 with a body',
      method: 'GET',
      answer: 'HTTP/1.1 204 No Content\r\n\r\nsurprise',
      status: 204,
      body: '',
    },
    {
      name: 'a 304 with a body',
      method: 'GET',
      answer: 'HTTP/1.1 304 Not Modified\r\ncontent-length: 3\r\n\r\nabc',
      status: 304,
      body: '',
    },
    {
      name: 'a HEAD answered with a body',
      method: 'HEAD',
      answer: 'HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody',
      status: 200,
      body: '',
    },
    {
      name: 'two responses in one write',
      method: 'GET',
      answer: httpResponse(200, 'one') + httpResponse(200, 'two'),
      status: 200,
      body: 'one',
    },
    {
      name: 'bytes after a chunked body',
      method: 'GET',
      answer: 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n',
      status: 200,
      body: 'abc',
    },
  ];

  it.each(shapes)(
    '$name: the client gets it, its next request is answered, the socket is closed and counted',
    async ({ method, answer, status, body }) => {
      const up = await upstream((req, conn) => {
        if (req.target.startsWith('/groups/bad/')) conn.socket.write(answer);
        else conn.socket.write(httpResponse(200, `own:${req.target}`));
      });
      // upstreamMs far above the reads' bounds: an answer that depends on a timeout fails the test.
      const r = await routerFor([up], { timeouts: { upstreamMs: 20_000 } });
      const c = await RawConnection.open(r.port);
      try {
        await c.write(`${method} /groups/bad/x HTTP/1.1\r\nHost: x\r\n\r\n`);
        const first = await c.readResponse({ method, timeoutMs: 3000 });
        expect(first.status).toBe(status);
        expect(first.text).toBe(body);
        await c.write(get('/groups/good/x'));
        const next = await c.readResponse({ timeoutMs: 3000 });
        expect(next.status).toBe(200);
        expect(next.text).toBe('own:/groups/good/x');
        // The upstream socket that overflowed: closed by the router, never reused.
        await waitFor(() => up.conns[0]?.closedAt !== undefined, {
          timeoutMs: 3000,
          what: 'the socket closed',
        });
        expect(up.conns[0]?.closedByPeer).toBe(true);
        expect(up.conns[0]?.requests).toBe(1);
        expect(
          await metric(r, 'shardchat_router_upstream_errors_total', { shard: '0', reason: 'overflow' }),
        ).toBe(1);
      } finally {
        c.destroy();
      }
    },
  );
});

// --- 3 to 5. upgrades ---

const GET_WS = (key: string) => `/groups/${key}/ws`;

describe('3. nothing is smuggled behind a refused upgrade', () => {
  it('a request written after the upgrade is parsed, routed by its own key and stamped', async () => {
    const ups: RawUpstream[] = [];
    for (let i = 0; i < 2; i++) {
      ups.push(
        await upstream((req, conn) => {
          if (req.headers.upgrade) conn.socket.write(httpResponse(403, 'no'));
          else conn.socket.write(httpResponse(200, `own${i}:${req.target}`));
        }),
      );
    }
    const r = await routerFor(ups);
    const k0 = keyOn(0, 2);
    const k1 = keyOn(1, 2);
    const c = await RawConnection.open(r.port);
    try {
      await c.write(
        upgradeRequest(GET_WS(k0)) +
          get(`/groups/${k1}/messages`, 'X-Shardchat-Shard: 0/2\r\nX-Forwarded-For: 6.6.6.6\r\n'),
      );
      const refused = await c.readResponse({ timeoutMs: 3000 });
      expect(refused.status).toBe(403);
      expect(refused.text).toBe('no');
      const second = await c.readResponse({ timeoutMs: 3000 });
      expect(second.status).toBe(200);
      expect(second.text).toBe(`own1:/groups/${k1}/messages`);
      expect(ups[0]?.requests.map((q) => q.target)).toEqual([GET_WS(k0)]);
      const smuggled = ups[1]?.requests.find((q) => q.target === `/groups/${k1}/messages`);
      expect(smuggled?.headers['x-shardchat-shard']).toEqual(['1/2']);
      expect(smuggled?.headers['x-forwarded-for']).toEqual(['6.6.6.6, 127.0.0.1']);
      expect(smuggled?.headers['x-request-id']).toHaveLength(1);
    } finally {
      c.destroy();
    }
  });
});

describe('4. a refused upgrade holds no sockets', () => {
  it('5 refused upgrades: upstream sockets closed at once, none counted, the next request answered', async () => {
    const up = await upstream((req, conn) => {
      // A keep-alive refusal; this upstream never closes a socket itself.
      if (req.headers.upgrade) conn.socket.write(httpResponse(401, 'who?'));
      else conn.socket.write(httpResponse(200, `own:${req.target}`));
    });
    const r = await routerFor([up], { timeouts: { upstreamMs: 30_000 } });
    const clients: RawConnection[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const c = await RawConnection.open(r.port);
        clients.push(c);
        await c.write(upgradeRequest(GET_WS(`g${i}`)));
        const res = await c.readResponse({ timeoutMs: 3000 });
        expect(res.status).toBe(401);
        expect(res.text).toBe('who?');
      }
      await waitFor(() => up.open.length === 0, {
        timeoutMs: 3000,
        what: 'the router to close the refused upgrades’ upstream sockets',
      });
      expect(up.conns.filter((c) => c.closedByPeer)).toHaveLength(5);
      expect(await metric(r, 'shardchat_router_websockets', { shard: '0' })).toBe(0);
      // Each client connection goes on as an ordinary keep-alive connection.
      for (const [i, c] of clients.entries()) {
        await c.write(get(`/groups/g${i}/messages`));
        const res = await c.readResponse({ timeoutMs: 3000 });
        expect(res.status).toBe(200);
        expect(res.text).toBe(`own:/groups/g${i}/messages`);
      }
    } finally {
      for (const c of clients) c.destroy();
    }
  });

  it('a refusal framed by the close of the connection ends at that close', async () => {
    const up = await upstream((_req, conn) => {
      conn.socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n\r\nclosed-framed');
    });
    const r = await routerFor([up]);
    const c = await RawConnection.open(r.port);
    try {
      await c.write(upgradeRequest(GET_WS('g')));
      const res = await c.readResponse({ timeoutMs: 3000 });
      expect(res.status).toBe(403);
      expect(res.text).toBe('closed-framed');
    } finally {
      c.destroy();
    }
  });
});

describe('5. client bytes between the upgrade head and the 101 are kept', () => {
  const frame = clientFrame(1, Buffer.from('early bird'));

  it('a frame written 200 ms after the head reaches the upstream once the 101 (600 ms) is out', async () => {
    let tunnelConn: UpstreamConn | undefined;
    const up = await upstream((_req, conn, u) => {
      u.tunnel(conn);
      tunnelConn = conn;
      setTimeout(() => conn.socket.write(SWITCHING), 600);
    });
    const r = await routerFor([up]);
    const c = await RawConnection.open(r.port);
    try {
      await c.write(upgradeRequest(GET_WS('g')));
      await sleep(200);
      await c.write(frame);
      const res = await c.readResponse({ method: 'HEAD', timeoutMs: 3000 });
      expect(res.status).toBe(101);
      await waitFor(() => tunnelConn && tunnelConn.tunnelBytes.length >= frame.length, {
        timeoutMs: 3000,
        what: 'the early frame at the upstream',
      });
      expect(tunnelConn?.tunnelBytes.equals(frame)).toBe(true);
      expect(await metric(r, 'shardchat_router_websockets', { shard: '0' })).toBe(1);
    } finally {
      c.destroy();
    }
  });

  it('1 MiB written before the 101 arrives whole and in order (read with backpressure, not dropped)', async () => {
    let tunnelConn: UpstreamConn | undefined;
    const up = await upstream((_req, conn, u) => {
      u.tunnel(conn);
      tunnelConn = conn;
      setTimeout(() => conn.socket.write(SWITCHING), 500);
    });
    const r = await routerFor([up]);
    const c = await RawConnection.open(r.port);
    const payload = Buffer.alloc(1 << 20);
    for (let i = 0; i < payload.length; i++) payload[i] = i % 251;
    try {
      c.socket.write(upgradeRequest(GET_WS('g')));
      c.socket.write(payload);
      const res = await c.readResponse({ method: 'HEAD', timeoutMs: 5000 });
      expect(res.status).toBe(101);
      await waitFor(() => tunnelConn && tunnelConn.tunnelBytes.length >= payload.length, {
        timeoutMs: 10_000,
        what: 'all early bytes at the upstream',
      });
      expect(tunnelConn?.tunnelBytes.equals(payload)).toBe(true);
    } finally {
      c.destroy();
    }
  });
});

// --- 6. paths the router and the shard could read differently ---

describe('6. ambiguous paths are refused before they are hashed', () => {
  const ambiguous = [
    '/groups/g1/../g3/ws',
    '/groups/g1/%2e%2e/g3/ws',
    '/groups/g1/%2E%2e/g3/messages',
    '/groups/g1/.%2E/g3/messages',
    '/groups/g1/..',
    '/groups/./g1/messages',
    '/groups/g1/./messages',
    '/groups/g1/%2e/messages',
    '/groups/g1/.',
    '/groups//g1/messages',
    '/groups/g1//messages',
    '//groups/g1/messages',
    '/groups/a%2Fb/messages',
    '/groups/a%2fb/ws',
    '/groups/a%5Cb/messages',
    '/groups/a\\..\\g3/ws',
    '/x/../groups/g3/ws',
  ];

  it('400 ambiguous_path for dot segments, empty segments and encoded slashes, nothing forwarded', async () => {
    const up = await upstream(own);
    const r = await routerFor([up, { url: up.url }]);
    const c = await RawConnection.open(r.port);
    try {
      for (const p of ambiguous) {
        for (const raw of [get(p), upgradeRequest(p)]) {
          await c.write(raw);
          const res = await c.readResponse({ timeoutMs: 3000 });
          expect(res.status, p).toBe(400);
          expect(res.headers['content-type']?.[0], p).toMatch(/^application\/json/);
          expect(errorCode(res.text), p).toBe('ambiguous_path');
        }
      }
      expect(up.requests).toEqual([]);
      expect(await metric(r, 'shardchat_router_misdirected_total', { shard: '0' })).toBe(0);
    } finally {
      c.destroy();
    }
  });

  it('ids with dots, dots in the query and a double-encoded dot are not ambiguous', async () => {
    const up = await upstream(own);
    const r = await routerFor([up]);
    const c = await RawConnection.open(r.port);
    try {
      for (const p of [
        '/groups/g.1/messages',
        '/groups/..a/messages',
        '/groups/.hidden/messages',
        '/groups/g1./messages',
        '/groups/g1/messages?x=/../&y=//&z=%2F',
        '/groups/%252e%252e/messages',
        '/groups/lobby%7E1/messages',
      ]) {
        await c.write(get(p));
        const res = await c.readResponse({ timeoutMs: 3000 });
        expect(res.status, p).toBe(200);
        expect(res.text, p).toBe(`own:${p}`);
      }
    } finally {
      c.destroy();
    }
  });
});

describe('6 and 7 against real shards', () => {
  let cluster: Cluster;
  const MAX_HEADER = 16384;

  beforeAll(async () => {
    cluster = await startCluster(await registry.tempDir(), { shards: 2 });
  }, 60_000);

  afterAll(async () => {
    await Promise.all([...cluster.shards.map((s) => s.proc.stop()), cluster.router.proc.stop()]);
  });

  /** The upper-case form of a group's messages path: hashed as a whole path by the router. */
  function upperCasePathOn(id: string): string {
    return `/GROUPS/${id}/messages`;
  }

  it('the shard’s routes are case-sensitive and strict: /GROUPS/{id} is 404 there, never a 421', async () => {
    const sf = new api.ShardFunction(api.DEFAULT_SHARD_SPEC);
    // An id owned by the shard the upper-case path does NOT hash to.
    let id = '';
    for (let i = 0; i < 1000 && !id; i++) {
      const cand = `cs${i}`;
      const byPath = sf.route(upperCasePathOn(cand), {}, 2);
      const owner = sf.route(`/groups/${cand}/messages`, {}, 2);
      if (byPath.kind === 'shard' && owner.kind === 'shard' && byPath.shard !== owner.shard) id = cand;
    }
    const before = await metricOf(cluster.router.adminUrl, 'shardchat_router_misdirected_total');
    for (const p of [upperCasePathOn(id), `/groups/${id}/messages/`, `/Groups/${id}`]) {
      const res = await request(`${cluster.router.url}${p}`);
      expect(res.status, `${p}: ${res.text}`).toBe(404);
      expect(errorCode(res.text)).toBe('not_found');
    }
    expect(await metricOf(cluster.router.adminUrl, 'shardchat_router_misdirected_total')).toBe(before);
  });

  it('the shard refuses ambiguous WebSocket paths itself and reads the id from the raw bytes', async () => {
    const shard = cluster.shards[0] as Cluster['shards'][0];
    for (const p of ['/groups/g1/../g3/ws', '/groups/g1/%2e%2e/g3/ws', '/groups/a%2Fb/ws', '/users//u1/ws']) {
      const c = await RawConnection.open(shard.port);
      try {
        await c.write(upgradeRequest(p));
        const res = await c.readResponse({ timeoutMs: 3000 });
        expect(res.status, p).toBe(400);
        expect(errorCode(res.text), p).toBe('ambiguous_path');
      } finally {
        c.destroy();
      }
    }
    // `//host/...` is not an authority to the shard: no WebSocket there.
    const c = await RawConnection.open(shard.port);
    try {
      await c.write(upgradeRequest('//groups/g1/ws'));
      expect((await c.readResponse({ timeoutMs: 3000 })).status).toBe(400);
    } finally {
      c.destroy();
    }
  });

  /** A head of exactly `size` bytes (request line to the blank line). */
  function headOf(size: number, target: string): string {
    const start = `GET ${target} HTTP/1.1\r\nHost: x\r\nX-Pad: `;
    const end = '\r\n\r\n';
    return `${start}${'p'.repeat(size - start.length - end.length)}${end}`;
  }

  it('7. a head at the router’s maxHeaderBytes reaches the shard; one byte more is 431 at the router', async () => {
    const target = '/groups/headroom/messages';
    let c = await RawConnection.open(cluster.router.port);
    try {
      const at = headOf(MAX_HEADER, target);
      expect(Buffer.byteLength(at)).toBe(MAX_HEADER);
      await c.write(at);
      const res = await c.readResponse({ timeoutMs: 5000 });
      // The shard's own answer (no token): not its head-size refusal.
      expect(res.status, res.text).toBe(401);
      expect(res.headers['x-shardchat-shard']).toBeDefined();
    } finally {
      c.destroy();
    }
    c = await RawConnection.open(cluster.router.port);
    try {
      await c.write(headOf(MAX_HEADER + 1, target));
      const res = await c.readResponse({ timeoutMs: 5000 });
      expect(res.status).toBe(431);
      expect(errorCode(res.text)).toBe('headers_too_large');
    } finally {
      c.destroy();
    }
  });

  it('7. a head the router would forward over the shard’s limit (a huge Host repeated as x-forwarded-host) is 431', async () => {
    const c = await RawConnection.open(cluster.router.port);
    try {
      await c.write(
        `GET /groups/headroom/messages HTTP/1.1\r\nHost: ${'h'.repeat(MAX_HEADER - 200)}\r\n\r\n`,
      );
      const res = await c.readResponse({ timeoutMs: 5000 });
      expect(res.status, res.text).toBe(431);
      expect(errorCode(res.text)).toBe('headers_too_large');
      // The router's answer (with a request id), not the shard's parser refusing the head.
      expect(res.headers['x-request-id']).toHaveLength(1);
      expect(res.text).toContain('would reach the shard');
    } finally {
      c.destroy();
    }
  });
});

async function metricOf(adminUrl: string, name: string): Promise<number> {
  const res = await request(`${adminUrl}/metrics`);
  let sum = 0;
  for (const line of res.text.split('\n'))
    if (line.startsWith(`${name}{`)) sum += Number(line.split(' ').pop());
  return sum;
}

// --- the choices the issue settles ---

describe('settled: methods, repeated Content-Length, bare-LF heads, a repeated key header', () => {
  it('methods Node’s parser rejects (get, FOO, Post) are 400 bad_method at the router; known ones pass', async () => {
    const up = await upstream(own);
    const r = await routerFor([up]);
    for (const m of ['get', 'FOO', 'Post', 'G3T']) {
      const c = await RawConnection.open(r.port);
      try {
        await c.write(`${m} /groups/g/messages HTTP/1.1\r\nHost: x\r\n\r\n`);
        const res = await c.readResponse({ timeoutMs: 3000 });
        expect(res.status, m).toBe(400);
        expect(errorCode(res.text), m).toBe('bad_method');
      } finally {
        c.destroy();
      }
    }
    expect(up.requests).toEqual([]);
    const c = await RawConnection.open(r.port);
    try {
      for (const m of ['PATCH', 'OPTIONS', 'PURGE', 'PROPFIND']) {
        await c.write(`${m} /groups/g/messages HTTP/1.1\r\nHost: x\r\n\r\n`);
        const res = await c.readResponse({ timeoutMs: 3000 });
        expect(res.status, m).toBe(200);
      }
    } finally {
      c.destroy();
    }
    expect(up.requests.map((q) => q.method)).toEqual(['PATCH', 'OPTIONS', 'PURGE', 'PROPFIND']);
  });

  it('two identical Content-Length headers are 400, as nginx answers', async () => {
    const up = await upstream(own);
    const r = await routerFor([up]);
    const c = await RawConnection.open(r.port);
    try {
      await c.write(
        'POST /groups/g/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi',
      );
      const res = await c.readResponse({ timeoutMs: 3000 });
      expect(res.status).toBe(400);
      expect(errorCode(res.text)).toBe('bad_request');
      await c.waitClosed(3000);
    } finally {
      c.destroy();
    }
    expect(up.requests).toEqual([]);
  });

  it('a head with bare-LF line endings is 400 at once, not after the head timeout', async () => {
    const up = await upstream(own);
    const r = await routerFor([up], { timeouts: { requestMs: 60_000 } });
    for (const raw of [
      'GET /groups/g/messages HTTP/1.1\nHost: x\n\n',
      'GET /groups/g/messages HTTP/1.1\r\nHost: x\n\n',
    ]) {
      const c = await RawConnection.open(r.port);
      try {
        const t0 = Date.now();
        await c.write(raw);
        const res = await c.readResponse({ timeoutMs: 3000 });
        expect(res.status).toBe(400);
        expect(errorCode(res.text)).toBe('bad_request');
        expect(Date.now() - t0).toBeLessThan(2000);
      } finally {
        c.destroy();
      }
    }
    expect(up.requests).toEqual([]);
  });

  it('two x-group-id headers are 400; one routes as before', async () => {
    const up = await upstream(own);
    const r = await routerFor([up]);
    const c = await RawConnection.open(r.port);
    try {
      await c.write(get('/groups/g/messages', 'X-Group-Id: a\r\nx-group-id: b\r\n'));
      let res = await c.readResponse({ timeoutMs: 3000 });
      expect(res.status).toBe(400);
      expect(errorCode(res.text)).toBe('repeated_key_header');
      await c.write(upgradeRequest('/groups/g/ws', 'X-Group-Id: a\r\nX-Group-Id: a\r\n'));
      res = await c.readResponse({ timeoutMs: 3000 });
      expect(res.status).toBe(400);
      expect(errorCode(res.text)).toBe('repeated_key_header');
      await c.write(get('/groups/g/messages', 'X-Group-Id: a\r\n'));
      res = await c.readResponse({ timeoutMs: 3000 });
      expect(res.status).toBe(200);
    } finally {
      c.destroy();
    }
    expect(up.requests).toHaveLength(1);
  });
});
