/**
 * The router serving the web UI's static files (router.webDir, local mode): real
 * router processes started through the built CLI (`npm run build` first) in front of
 * a real test backend (test/fixtures/backend.mjs), on free loopback ports. `/`,
 * `/index.html` and `/app/...` are answered by the router from memory; every other
 * path still goes to the shards.
 */

import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { echoOf, errorOf, type HttpResponse, metricValue, RawConnection, request } from '../helpers/http.js';
import { runCli, useProcessCleanup, writeYamlConfig } from '../helpers/processes.js';
import {
  type Backend,
  type RouterProcess,
  routerConfig,
  startBackends,
  startRouter,
} from '../helpers/shardchat.js';

const registry = useProcessCleanup();

const CSP =
  "default-src 'self'; img-src * data:; connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

const INDEX_HTML =
  '<!doctype html><html><head><script src="/app/app.js"></script></head><body>chat</body></html>';
const APP_JS = 'export const answer = 42;\n';
const STYLE_CSS = 'body { color: #222; }\n';
const SECRET = 'top secret outside webDir';

let dir: string;
let webDir: string;
let backends: Backend[];
/** webDir set, one backend. */
let web: RouterProcess;
/** No webDir, the same backend. */
let plain: RouterProcess;

const etagOf = (text: string) => `"${createHash('sha1').update(text).digest('base64url')}"`;

beforeAll(async () => {
  dir = await registry.tempDir();
  webDir = path.join(dir, 'web');
  await mkdir(path.join(webDir, 'nested', 'deep'), { recursive: true });
  await writeFile(path.join(webDir, 'index.html'), INDEX_HTML);
  await writeFile(path.join(webDir, 'app.js'), APP_JS);
  await writeFile(path.join(webDir, 'nested', 'deep', 'style.css'), STYLE_CSS);
  // Next to webDir, never to be served.
  await writeFile(path.join(dir, 'secret.txt'), SECRET);
  backends = await startBackends(1, 'web-shard');
  [web, plain] = await Promise.all([
    startRouter(dir, routerConfig(backends, { router: { webDir } })),
    startRouter(dir, routerConfig(backends)),
  ]);
}, 60_000);

function expectJsonError(res: HttpResponse, status: number, code: string): void {
  expect(res.status, res.text).toBe(status);
  expect(String(res.headers['content-type'])).toMatch(/^application\/json/);
  expect(errorOf(res).error.code).toBe(code);
}

const rawGet = (target: string, method = 'GET', extra = '') =>
  `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${extra}\r\n`;

describe('serving the web UI', () => {
  it('GET / returns index.html with text/html, the CSP, no-cache and nosniff', async () => {
    const res = await request(`${web.url}/`);
    expect(res.status).toBe(200);
    expect(res.text).toBe(INDEX_HTML);
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(res.headers['content-security-policy']).toBe(CSP);
    expect(res.headers['cache-control']).toBe('no-cache');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers.etag).toBe(etagOf(INDEX_HTML));
    expect(res.headers['content-length']).toBe(String(Buffer.byteLength(INDEX_HTML)));
    expect(backends[0]?.proc.output()).not.toMatch(/^request GET \/ /m);
  });

  it('/index.html and query strings give the same file', async () => {
    for (const p of ['/index.html', '/?v=1', '/index.html?x=y']) {
      const res = await request(`${web.url}${p}`);
      expect(res.status, p).toBe(200);
      expect(res.text, p).toBe(INDEX_HTML);
      expect(res.headers['content-security-policy']).toBe(CSP);
    }
  });

  it('/app/app.js has a javascript type, a strong ETag, a cache lifetime; If-None-Match gives 304', async () => {
    const res = await request(`${web.url}/app/app.js?build=7`);
    expect(res.status).toBe(200);
    expect(res.text).toBe(APP_JS);
    expect(String(res.headers['content-type'])).toMatch(/^text\/javascript/);
    expect(res.headers['cache-control']).toBe('public, max-age=3600');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['content-security-policy']).toBeUndefined();
    const etag = String(res.headers.etag);
    expect(etag).toBe(etagOf(APP_JS));
    expect(etag).toMatch(/^"[A-Za-z0-9_-]+"$/);

    const cached = await request(`${web.url}/app/app.js`, { headers: { 'if-none-match': etag } });
    expect(cached.status).toBe(304);
    expect(cached.body.length).toBe(0);
    expect(cached.headers.etag).toBe(etag);

    const listed = await request(`${web.url}/app/app.js`, {
      headers: { 'if-none-match': `"other", ${etag}` },
    });
    expect(listed.status).toBe(304);

    const stale = await request(`${web.url}/app/app.js`, { headers: { 'if-none-match': '"stale"' } });
    expect(stale.status).toBe(200);
    expect(stale.text).toBe(APP_JS);
  });

  it('files in nested directories are served under /app/', async () => {
    const res = await request(`${web.url}/app/nested/deep/style.css`);
    expect(res.status).toBe(200);
    expect(res.text).toBe(STYLE_CSS);
    expect(String(res.headers['content-type'])).toMatch(/^text\/css/);
    expect(res.headers['cache-control']).toBe('public, max-age=3600');
  });

  it('HEAD has the headers and no body', async () => {
    const conn = await RawConnection.open(web.port);
    try {
      await conn.write(rawGet('/app/app.js', 'HEAD'));
      const res = await conn.readResponse({ method: 'HEAD' });
      expect(res.status).toBe(200);
      expect(res.headers['content-length']).toEqual([String(APP_JS.length)]);
      expect(res.headers.etag).toEqual([etagOf(APP_JS)]);
      expect(res.body.length).toBe(0);
      // Nothing follows the head: the next response starts right after it.
      await conn.write(rawGet('/'));
      const next = await conn.readResponse();
      expect(next.status).toBe(200);
      expect(next.text).toBe(INDEX_HTML);
    } finally {
      conn.destroy();
    }
  });

  it('keep-alive: several requests, static and forwarded, on one connection', async () => {
    const conn = await RawConnection.open(web.port);
    try {
      await conn.write(rawGet('/'));
      const a = await conn.readResponse();
      expect(a.status).toBe(200);
      expect(a.text).toBe(INDEX_HTML);
      expect(a.headers.connection).toBeUndefined();

      await conn.write(rawGet('/app/app.js'));
      const b = await conn.readResponse();
      expect(b.status).toBe(200);
      expect(b.text).toBe(APP_JS);

      await conn.write(rawGet('/app/app.js', 'GET', `If-None-Match: ${etagOf(APP_JS)}\r\n`));
      const c = await conn.readResponse();
      expect(c.status).toBe(304);

      await conn.write(rawGet('/app/missing.js'));
      const d = await conn.readResponse();
      expect(d.status).toBe(404);

      await conn.write(rawGet('/groups/g1/messages'));
      const e = await conn.readResponse();
      expect(e.status).toBe(200);
      expect(JSON.parse(e.text).url).toBe('/groups/g1/messages');

      // Pipelined: both answered, in order.
      await conn.write(rawGet('/app/nested/deep/style.css') + rawGet('/index.html'));
      const f = await conn.readResponse();
      const g = await conn.readResponse();
      expect(f.text).toBe(STYLE_CSS);
      expect(g.text).toBe(INDEX_HTML);
      expect(conn.isClosed).toBe(false);
    } finally {
      conn.destroy();
    }
  });

  it('an unknown file under /app/ is a 404 JSON error', async () => {
    for (const p of ['/app/missing.js', '/app/', '/app/nested', '/app/nested/deep/', '/app/INDEX.HTML']) {
      expectJsonError(await request(`${web.url}${p}`), 404, 'not_found');
    }
  });

  it('traversal shapes are 404 and never reach a file outside webDir', async () => {
    const shapes = [
      '/app/../secret.txt',
      '/app/../../secret.txt',
      '/app/%2e%2e/secret.txt',
      '/app/%2E%2E/secret.txt',
      '/app/%2e%2e%2fsecret.txt',
      '/app/..%2fsecret.txt',
      '/app/nested/../../secret.txt',
      '/app/nested/%2e%2e/%2e%2e/secret.txt',
      '/app/./app.js',
      '/app//app.js',
      '/app/..\\secret.txt',
      '/app/%5c..%5csecret.txt',
      '/app/nested\\deep\\style.css',
      '/app/app.js%00',
      '/app/%00',
      '/app/%zz',
    ];
    const conn = await RawConnection.open(web.port);
    try {
      for (const p of shapes) {
        await conn.write(rawGet(p));
        const res = await conn.readResponse();
        expect(res.status, p).toBe(404);
        expect(res.headers['content-type']?.[0], p).toMatch(/^application\/json/);
        expect((JSON.parse(res.text) as { error: { code: string } }).error.code, p).toBe('not_found');
        expect(res.text).not.toContain(SECRET);
      }
    } finally {
      conn.destroy();
    }
    expect(backends[0]?.proc.output()).not.toContain('secret');
  });

  it('other methods on these paths are 405 with allow: GET, HEAD', async () => {
    for (const [method, p] of [
      ['POST', '/'],
      ['PUT', '/index.html'],
      ['DELETE', '/app/app.js'],
      ['OPTIONS', '/app/missing.js'],
    ] as const) {
      const res = await request(`${web.url}${p}`, { method, body: method === 'POST' ? '{}' : undefined });
      expectJsonError(res, 405, 'method_not_allowed');
      expect(res.headers.allow, `${method} ${p}`).toBe('GET, HEAD');
    }
  });

  it('group paths and everything else still reach the backend', async () => {
    for (const p of ['/groups/g1/messages', '/users/alice/token', '/app', '/favicon.ico', '/apps/x']) {
      const res = await request(`${web.url}${p}`);
      expect(res.status, p).toBe(200);
      const echo = echoOf(res);
      expect(echo.name).toBe('web-shard-0');
      expect(echo.url).toBe(p);
    }
    const post = await request(`${web.url}/groups/g1/messages`, { method: 'POST', body: 'hi' });
    expect(echoOf(post).body).toBe('hi');
  });

  it('static answers are counted like router-answered requests (shard "none")', async () => {
    await request(`${web.url}/`);
    const text = (await request(`${web.adminUrl}/metrics`)).text;
    const v = metricValue(text, 'shardchat_router_requests_total', { shard: 'none', code: '200' });
    expect(v).toBeGreaterThan(0);
  });

  it('without webDir, GET / goes to the shard function as before', async () => {
    for (const p of ['/', '/index.html', '/app/app.js']) {
      const res = await request(`${plain.url}${p}`);
      expect(res.status, p).toBe(200);
      const echo = echoOf(res);
      expect(echo.name).toBe('web-shard-0');
      expect(echo.url).toBe(p);
    }
  });
});

describe('loading webDir at start', () => {
  it('a missing webDir stops the router at start with a clear message', async () => {
    const missing = path.join(dir, 'no-such-dir');
    const cfg = routerConfig(backends, {
      router: { webDir: missing, host: '127.0.0.1', port: 0, adminPort: 0 },
    });
    const file = await writeYamlConfig(dir, cfg, 'missing-webdir.yaml');
    const run = await runCli(['router', '--config', file], { timeoutMs: 20_000 });
    expect(run.signal).toBeNull();
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('router.webDir');
    expect(run.stderr).toContain(missing);
    expect(run.stderr).toContain('does not exist');
  });

  it('more than 500 files stop the router at start', async () => {
    const many = path.join(dir, 'many');
    await mkdir(many);
    await Promise.all(Array.from({ length: 501 }, (_, i) => writeFile(path.join(many, `f${i}.txt`), 'x')));
    const cfg = routerConfig(backends, {
      router: { webDir: many, host: '127.0.0.1', port: 0, adminPort: 0 },
    });
    const file = await writeYamlConfig(dir, cfg, 'many-webdir.yaml');
    const run = await runCli(['router', '--config', file], { timeoutMs: 20_000 });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('more than 500 files');
  });
});
