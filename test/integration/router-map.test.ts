/**
 * The router and the shard map (router/shard-map.ts): a real router process (the built
 * CLI, `npm run build` first) in front of fake shards (node:http servers in this
 * process, on contiguous free loopback ports so that `{ordinal+N}` templates address any
 * ordinal). The fake shards answer 421 with an `x-shardchat-map` header as the shards
 * do; the router adopts newer maps (from answers and probes) and sends a 421'd request
 * again to the key's owner under the map.
 */
import http from 'node:http';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { errorOf, failedUpgrade, type HttpResponse, metricValue, openWs, request } from '../helpers/http.js';
import { TEST_PORTS, useProcessCleanup, waitFor } from '../helpers/processes.js';
import {
  loadShardFunction,
  type RouterProcess,
  type ShardFunctionApi,
  startRouter,
} from '../helpers/shardchat.js';

const registry = useProcessCleanup();

type Assignment = 'modulo' | 'jump';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * Whether a fake shard answers 421, given what it saw: a map header value (421 with it),
 * null (421 without a map, as a shard before shard maps), undefined (200 echo).
 */
type Misdirect = (seen: Seen, ordinal: number) => string | null | undefined;

/** A stand-in for a shard: a public server (echo, WebSocket hello) and an admin server (/readyz). */
class FakeShard {
  readonly seen: Seen[] = [];
  readonly upgrades: Seen[] = [];
  /** x-shardchat-map on every plain answer, when set. */
  map: string | undefined;
  /** When it returns a map header value or null: 421 (requests and upgrades). */
  misdirect: Misdirect | undefined;
  /** The /readyz answer's x-shardchat-map header, and the full map in its body. */
  readyHeader: string | undefined;
  readyMap: Record<string, unknown> | undefined;
  /** The /readyz status (200 unless a test makes the shard unready). */
  readyStatus = 200;
  private readonly wss = new WebSocketServer({ noServer: true });

  constructor(
    readonly ordinal: number,
    readonly server: http.Server,
    readonly admin: http.Server,
  ) {
    server.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const seen = {
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        };
        this.seen.push(seen);
        const moved = this.misdirect?.(seen, this.ordinal);
        if (moved !== undefined) {
          const text = JSON.stringify({
            error: {
              code: 'misdirected',
              message: `shard ${this.ordinal} does not own this key`,
              details: { owner: -1, map: moved },
            },
          });
          const headers: http.OutgoingHttpHeaders = {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(text),
          };
          if (moved !== null) headers['x-shardchat-map'] = moved;
          res.writeHead(421, headers);
          res.end(text);
          return;
        }
        const text = JSON.stringify({ name: `fake-${this.ordinal}`, ...seen });
        const headers: http.OutgoingHttpHeaders = {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(text),
        };
        if (this.map) headers['x-shardchat-map'] = this.map;
        res.writeHead(200, headers);
        res.end(text);
      });
    });
    server.on('upgrade', (req, socket: net.Socket, head) => {
      const seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: '' };
      this.upgrades.push(seen);
      const moved = this.misdirect?.(seen, this.ordinal);
      if (moved !== undefined) {
        const text = JSON.stringify({ error: { code: 'misdirected', message: 'not mine' } });
        socket.end(
          `HTTP/1.1 421 Misdirected Request\r\ncontent-type: application/json\r\ncontent-length: ${text.length}\r\n${moved === null ? '' : `x-shardchat-map: ${moved}\r\n`}connection: close\r\n\r\n${text}`,
        );
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        ws.send(
          JSON.stringify({ type: 'hello', name: `fake-${this.ordinal}`, headers: req.headers, url: req.url }),
        );
        ws.on('message', (data) => ws.send(`echo:${data.toString()}`));
      });
    });
    admin.on('request', (req, res) => {
      req.resume();
      const body = JSON.stringify({ status: 'ready', ...(this.readyMap ? { map: this.readyMap } : {}) });
      const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/json' };
      if (this.readyHeader) headers['x-shardchat-map'] = this.readyHeader;
      res.writeHead(this.readyStatus, headers);
      res.end(body);
    });
  }

  reset(): void {
    this.seen.length = 0;
    this.upgrades.length = 0;
    this.map = undefined;
    this.misdirect = undefined;
    this.readyHeader = undefined;
    this.readyMap = undefined;
    this.readyStatus = 200;
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    this.server.closeAllConnections();
    this.admin.closeAllConnections();
    await Promise.all([new Promise((r) => this.server.close(r)), new Promise((r) => this.admin.close(r))]);
  }
}

function listenOn(port: number): Promise<http.Server | undefined> {
  return new Promise((resolve) => {
    const server = http.createServer({ keepAliveTimeout: 10_000 });
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/**
 * `n` fake shards whose public ports are base..base+n-1 and admin ports
 * adminBase..adminBase+n-1 (adminBase = base + n), from this worker's port slice.
 */
async function startFakeShards(n: number): Promise<{ shards: FakeShard[]; base: number; adminBase: number }> {
  const worker = Number(process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID ?? 1);
  const k = (Number.isFinite(worker) && worker > 0 ? worker - 1 : 0) % TEST_PORTS.slices;
  const lo = TEST_PORTS.base + k * TEST_PORTS.slice;
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = lo + Math.floor(Math.random() * (TEST_PORTS.slice - 2 * n));
    const servers: http.Server[] = [];
    for (let i = 0; i < 2 * n; i++) {
      const s = await listenOn(base + i);
      if (!s) break;
      servers.push(s);
    }
    if (servers.length === 2 * n) {
      const shards = Array.from(
        { length: n },
        (_, i) => new FakeShard(i, servers[i] as http.Server, servers[n + i] as http.Server),
      );
      return { shards, base, adminBase: base + n };
    }
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
  throw new Error(`no ${2 * n} contiguous free ports`);
}

// --- the cluster: 4 fake shards; routers configured with 2 ---

const FAKES = 4;
const RETRY_BODY_BYTES = 1024;
let api: ShardFunctionApi;
let dir: string;
let fakes: FakeShard[];
let base: number;
let adminBase: number;

beforeAll(async () => {
  dir = await registry.tempDir();
  api = await loadShardFunction();
  ({ shards: fakes, base, adminBase } = await startFakeShards(FAKES));
}, 60_000);

afterAll(async () => {
  await Promise.all((fakes ?? []).map((f) => f.close()));
});

const fake = (i: number) => fakes[i] as FakeShard;

function resetFakes(): void {
  for (const f of fakes) f.reset();
}

/**
 * A router with S = 2 whose templates address every fake shard (probes only with `probes`,
 * every `probeIntervalMs`, a shard unready after `probeFailureThreshold` failures).
 */
function startMapRouter(
  probes = false,
  probeIntervalMs = 100,
  probeFailureThreshold = 2,
): Promise<RouterProcess> {
  return startRouter(dir, {
    topology: {
      mode: 'static',
      shards: 2,
      targetTemplate: `http://127.0.0.1:{ordinal+${base}}`,
      ...(probes
        ? { adminTemplate: `http://127.0.0.1:{ordinal+${adminBase}}`, probeIntervalMs, probeFailureThreshold }
        : { adminTemplate: '' }),
    },
    router: { limits: { retryBodyBytes: RETRY_BODY_BYTES }, timeouts: { upstreamMs: 5000 } },
    log: { level: 'info' },
  });
}

const owner = (key: string, shards: number, assignment: Assignment = 'modulo') =>
  new api.ShardFunction({ ...api.DEFAULT_SHARD_SPEC, assignment }).shardOfKey(key, shards);

/** A fresh group key whose owners under the given layouts are the given shards. */
function keyWith(owners: Array<[shards: number, assignment: Assignment, owner: number]>): string {
  const prefix = `k${Math.random().toString(36).slice(2, 8)}`;
  for (let i = 0; i < 100_000; i++) {
    const key = `${prefix}-${i}`;
    if (owners.every(([s, a, o]) => owner(key, s, a) === o)) return key;
  }
  throw new Error(`no key for ${JSON.stringify(owners)}`);
}

/** The key of a /groups/<key>/... path a fake shard saw. */
const keyOfUrl = (url: string) => decodeURIComponent(url.split('/')[2] ?? '');

async function metric(r: RouterProcess, name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await request(`${r.adminUrl}/metrics`);
  return metricValue(res.text, name, labels) ?? Number.NaN;
}

async function mapOf(r: RouterProcess): Promise<Record<string, unknown>> {
  const res = await request(`${r.adminUrl}/topology`);
  expect(res.status).toBe(200);
  return (JSON.parse(res.text) as { map: Record<string, unknown> }).map;
}

function json(res: HttpResponse): Record<string, unknown> {
  return JSON.parse(res.text) as Record<string, unknown>;
}

describe('a 421 with a newer map: the request goes again to the owner under it', () => {
  let router: RouterProcess;
  beforeAll(async () => {
    resetFakes();
    router = await startMapRouter();
  }, 60_000);

  it('starts at map version 0 (its configuration)', async () => {
    expect(await mapOf(router)).toEqual({ version: 0, shards: 2, assignment: 'modulo' });
    expect(await metric(router, 'shardchat_router_map_version')).toBe(0);
    expect(await metric(router, 'shardchat_router_map_shards')).toBe(2);
  });

  it('shard 0 answers 421 with map 2:3:modulo: the client gets the third shard’s 200, body intact', async () => {
    resetFakes();
    const key = keyWith([
      [2, 'modulo', 0],
      [3, 'modulo', 2],
    ]);
    fake(0).misdirect = () => '2:3:modulo';
    const body = JSON.stringify({ contents: 'hello', n: 42, pad: 'x'.repeat(500) });
    const res = await request(`${router.url}/groups/${key}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'req-421-a' },
      body,
    });
    expect(res.status).toBe(200);
    const echo = json(res);
    expect(echo.name).toBe('fake-2');
    expect(echo.body).toBe(body);
    expect(echo.method).toBe('POST');
    expect((echo.headers as Record<string, string>)['x-request-id']).toBe('req-421-a');
    expect((echo.headers as Record<string, string>)['x-shardchat-shard']).toBe('2/3');
    // Shard 0 saw the request once, with the same body; shard 1 never.
    expect(fake(0).seen.map((s) => s.body)).toEqual([body]);
    expect(fake(0).seen[0]?.headers['x-shardchat-shard']).toBe('0/2');
    expect(fake(1).seen).toEqual([]);
    expect(fake(2).seen).toHaveLength(1);

    expect(await mapOf(router)).toEqual({ version: 2, shards: 3, assignment: 'modulo' });
    const topo = json(await request(`${router.adminUrl}/topology`));
    expect(topo.shards).toBe(3);
    expect((topo.members as Array<{ target: string }>)[2]?.target).toBe(`http://127.0.0.1:${base + 2}`);
    const ready = json(await request(`${router.adminUrl}/readyz`));
    expect(ready.map).toEqual({ version: 2, shards: 3, assignment: 'modulo' });
    expect(await metric(router, 'shardchat_router_map_version')).toBe(2);
    expect(await metric(router, 'shardchat_router_map_shards')).toBe(3);
    expect(await metric(router, 'shardchat_router_misdirected_retries_total')).toBe(1);
    await router.proc.waitForLine(/router adopted shard map/);
    expect(router.proc.output().match(/router adopted shard map/g)).toHaveLength(1);
    expect(router.proc.output()).toMatch(/"version":2,"shards":3,"assignment":"modulo"/);
  });

  it('after adopting, requests go straight to the owner under the new map', async () => {
    resetFakes();
    const key = keyWith([
      [2, 'modulo', 1],
      [3, 'modulo', 2],
    ]);
    const res = await request(`${router.url}/groups/${key}/messages`);
    expect(json(res).name).toBe('fake-2');
    expect(fake(1).seen).toEqual([]);
  });

  it('a 421 with an equal map whose owner is the answering shard passes through unchanged', async () => {
    resetFakes();
    const key = keyWith([[3, 'modulo', 1]]);
    fake(1).misdirect = () => '2:3:modulo';
    const before = await metric(router, 'shardchat_router_misdirected_retries_total');
    const res = await request(`${router.url}/groups/${key}/messages`, { method: 'POST', body: '{"a":1}' });
    expect(res.status).toBe(421);
    expect(res.headers['x-shardchat-map']).toBe('2:3:modulo');
    const e = errorOf(res) as { error: { code: string; details?: unknown } };
    expect(e.error.code).toBe('misdirected');
    expect(e.error.details).toEqual({ owner: -1, map: '2:3:modulo' });
    expect(fake(1).seen).toHaveLength(1);
    expect(fake(0).seen.length + fake(2).seen.length + fake(3).seen.length).toBe(0);
    expect(await metric(router, 'shardchat_router_misdirected_retries_total')).toBe(before);
  });

  it('a 421 with a stale map passes through unchanged, even where that map names another owner', async () => {
    resetFakes();
    const key = keyWith([
      [3, 'modulo', 1],
      [2, 'modulo', 0],
    ]);
    fake(1).misdirect = () => '1:2:modulo';
    const res = await request(`${router.url}/groups/${key}/messages`);
    expect(res.status).toBe(421);
    expect(res.headers['x-shardchat-map']).toBe('1:2:modulo');
    expect(fake(0).seen).toEqual([]);
    expect(await mapOf(router)).toEqual({ version: 2, shards: 3, assignment: 'modulo' });
  });

  it('a body over router.limits.retryBodyBytes: the 421 passes through, nothing is sent again', async () => {
    resetFakes();
    const key = keyWith([
      [3, 'modulo', 1],
      [4, 'modulo', 3],
    ]);
    fake(1).misdirect = () => '3:4:modulo';
    const big = JSON.stringify({ pad: 'y'.repeat(RETRY_BODY_BYTES) });
    const res = await request(`${router.url}/groups/${key}/messages`, { method: 'POST', body: big });
    expect(res.status).toBe(421);
    expect(res.headers['x-shardchat-map']).toBe('3:4:modulo');
    expect(fake(1).seen.map((s) => s.body)).toEqual([big]);
    expect(fake(3).seen).toEqual([]);
    // The map was adopted all the same: the next request goes to the owner under 3:4.
    fake(1).misdirect = undefined;
    expect(json(await request(`${router.url}/groups/${key}/messages`)).name).toBe('fake-3');
    expect(await mapOf(router)).toEqual({ version: 3, shards: 4, assignment: 'modulo' });
  });

  it('a 421 without a map is still a configuration mismatch: 503 shard_misdirected', async () => {
    resetFakes();
    const key = keyWith([[4, 'modulo', 0]]);
    fake(0).misdirect = () => null;
    const res = await request(`${router.url}/groups/${key}/messages`);
    expect(res.status).toBe(503);
    expect(errorOf(res).error.code).toBe('shard_misdirected');
  });
});

describe('the hop limit', () => {
  let router: RouterProcess;
  beforeAll(async () => {
    resetFakes();
    router = await startMapRouter();
  }, 60_000);

  it('after 3 re-dispatches the last 421 passes to the client', async () => {
    resetFakes();
    // Every shard points elsewhere with an ever newer map: the request would go round forever.
    let version = 1;
    const elsewhere: Misdirect = (seen, ordinal) => {
      const key = keyOfUrl(seen.url);
      for (const [s, a] of [
        [2, 'modulo'],
        [3, 'modulo'],
        [4, 'modulo'],
        [2, 'jump'],
        [3, 'jump'],
        [4, 'jump'],
      ] as Array<[number, Assignment]>) {
        if (owner(key, s, a) !== ordinal) return `${++version}:${s}:${a}`;
      }
      return undefined;
    };
    for (const f of fakes) f.misdirect = elsewhere;
    const key = keyWith([
      [2, 'modulo', 1],
      [3, 'modulo', 2],
      [4, 'modulo', 3],
      [2, 'jump', 1],
    ]);
    const res = await request(`${router.url}/groups/${key}/messages`, { method: 'PUT', body: '{"x":1}' });
    expect(res.status).toBe(421);
    expect(errorOf(res).error.code).toBe('misdirected');
    const attempts = fakes.reduce((n, f) => n + f.seen.length, 0);
    expect(attempts).toBe(4);
    for (const f of fakes) for (const s of f.seen) expect(s.body).toBe('{"x":1}');
    expect(await metric(router, 'shardchat_router_misdirected_retries_total')).toBe(3);
    // The router follows the newest map it saw.
    expect((await mapOf(router)).version).toBe(version);
  });
});

describe('adoption without a 421', () => {
  it('from the header of a plain 200 answer', async () => {
    resetFakes();
    const router = await startMapRouter();
    const key = keyWith([
      [2, 'modulo', 1],
      [3, 'jump', 2],
    ]);
    fake(1).map = '5:3:jump';
    const first = await request(`${router.url}/groups/${key}/messages`);
    expect(json(first).name).toBe('fake-1');
    expect(first.headers['x-shardchat-map']).toBe('5:3:jump');
    await waitFor(async () => (await mapOf(router)).version === 5, { what: 'map version 5' });
    expect(await mapOf(router)).toEqual({ version: 5, shards: 3, assignment: 'jump' });
    expect(json(await request(`${router.url}/groups/${key}/messages`)).name).toBe('fake-2');
    // An older map on a later answer changes nothing.
    fake(2).map = '4:2:modulo';
    expect(json(await request(`${router.url}/groups/${key}/messages`)).name).toBe('fake-2');
    expect((await mapOf(router)).version).toBe(5);
    expect(await metric(router, 'shardchat_router_map_version')).toBe(5);
    await router.proc.stop();
  });

  it('from a readiness probe: header and full map (with its migration) in the /readyz body', async () => {
    resetFakes();
    const router = await startMapRouter(true);
    const migration = {
      from: { shards: 2, assignment: 'modulo' },
      to: { shards: 4, assignment: 'modulo' },
      state: 'copying',
      startedAt: 1_700_000_000_000,
    };
    for (const f of fakes) {
      f.readyHeader = '7:2:modulo';
      f.readyMap = { version: 7, shards: 2, assignment: 'modulo', migration };
    }
    await waitFor(async () => (await mapOf(router)).version === 7, { what: 'map version 7 from a probe' });
    expect(await mapOf(router)).toEqual({ version: 7, shards: 2, assignment: 'modulo', migration });
    const topo = json(await request(`${router.adminUrl}/topology`));
    // The larger side of the migration is addressable (and probed) already.
    expect(topo.shards).toBe(4);
    const ready = json(await request(`${router.adminUrl}/readyz`));
    expect((ready.map as { migration: unknown }).migration).toEqual(migration);
    expect(await metric(router, 'shardchat_router_map_version')).toBe(7);
    expect(await metric(router, 'shardchat_router_map_shards')).toBe(2);
    expect(await metric(router, 'shardchat_router_shard_ready', { shard: '3' })).toBe(1);
    await router.proc.stop();
  });
});

describe('readiness across a map change', () => {
  it('a shard found unready before a newer map names it is tried again at once, not after the next probe round', async () => {
    resetFakes();
    // Probes every 10 minutes: only the probes at start, at resize and at adoption run in this test.
    const router = await startMapRouter(true, 600_000, 1);
    const key = keyWith([
      [2, 'modulo', 1],
      [4, 'jump', 1],
      [4, 'modulo', 3],
    ]);
    // A map with 4 shards (the key still on shard 1) while shard 3 is still starting: its probe fails.
    fake(3).readyStatus = 503;
    fake(1).map = '3:4:jump';
    expect(json(await request(`${router.url}/groups/${key}/messages`)).name).toBe('fake-1');
    await waitFor(async () => (await mapOf(router)).version === 3, { what: 'map version 3' });
    await waitFor(async () => (await metric(router, 'shardchat_router_shard_ready', { shard: '3' })) === 0, {
      what: 'shard 3 unready',
    });
    // Shard 3 started and took the key; the cluster switched to a newer map naming it.
    fake(3).readyStatus = 200;
    fake(1).misdirect = () => '4:4:modulo';
    const res = await request(`${router.url}/groups/${key}/messages`);
    expect(res.status, res.text).toBe(200);
    expect(json(res).name).toBe('fake-3');
    await waitFor(async () => (await metric(router, 'shardchat_router_shard_ready', { shard: '3' })) === 1, {
      what: 'shard 3 ready',
    });
    await router.proc.stop();
  });
});

describe('WebSocket upgrades', () => {
  it('an upgrade answered 421 with a newer map goes to the new owner; its 101 is relayed', async () => {
    resetFakes();
    const router = await startMapRouter();
    const key = keyWith([
      [2, 'modulo', 1],
      [4, 'jump', 3],
    ]);
    fake(1).misdirect = () => '9:4:jump';
    const { client, hello } = await openWs(`${router.wsUrl}/groups/${key}/ws`);
    try {
      expect(hello.name).toBe('fake-3');
      expect(hello.headers['x-shardchat-shard']).toBe('3/4');
      client.send('hi');
      expect((await client.next()).text).toBe('echo:hi');
    } finally {
      client.terminate();
    }
    expect(fake(1).upgrades).toHaveLength(1);
    expect(fake(3).upgrades).toHaveLength(1);
    expect(await mapOf(router)).toEqual({ version: 9, shards: 4, assignment: 'jump' });
    expect(await metric(router, 'shardchat_router_misdirected_retries_total')).toBe(1);
    // A 421 whose map keeps the owner passes to the client.
    fake(3).misdirect = () => '9:4:jump';
    const res = await failedUpgrade(`${router.url}/groups/${key}/ws`);
    expect(res.status).toBe(421);
    await router.proc.stop();
  });
});

describe('an explicit targets list cannot grow', () => {
  it('an owner past the list gets 503 no_shard_address', async () => {
    resetFakes();
    const router = await startRouter(dir, {
      topology: { mode: 'static', targets: [0, 1].map((i) => `http://127.0.0.1:${base + i}`) },
      log: { level: 'info' },
    });
    const key = keyWith([
      [2, 'modulo', 1],
      [4, 'modulo', 3],
    ]);
    fake(1).misdirect = () => '3:4:modulo';
    const res = await request(`${router.url}/groups/${key}/messages`);
    expect(res.status).toBe(503);
    expect(errorOf(res).error).toEqual({
      code: 'no_shard_address',
      message: 'shard 3 has no address: add it to topology.targets',
    });
    fake(1).misdirect = undefined;
    const again = await request(`${router.url}/groups/${key}/messages`);
    expect(again.status).toBe(503);
    expect(errorOf(again).error.code).toBe('no_shard_address');
    expect(fake(1).seen).toHaveLength(1);
    expect((await mapOf(router)).shards).toBe(4);
    expect(json(await request(`${router.adminUrl}/topology`)).shards).toBe(2);
    await router.proc.stop();
  });
});
