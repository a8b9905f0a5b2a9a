/**
 * The router against the reference (GitHub issue 11): the same raw client bytes and the
 * same upstream answers through the router and through nginx (Debian's nginx-light,
 * started here with a generated config in a temp dir), comparing what the client gets
 * (statuses, and bodies that come from the upstream) and how many requests reach the
 * upstream. Where the router is deliberately stricter than nginx, the case says so and
 * what each answers is asserted.
 *
 * Skipped (with a message) when nginx is not installed, unless SHARDCHAT_REQUIRE_NGINX=1
 * (.ci/run sets it and installs nginx-light).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawConnection } from '../helpers/http.js';
import { canConnect, freePort, useProcessCleanup, waitFor } from '../helpers/processes.js';
import { httpResponse, RawUpstream, type Reply, upgradeRequest } from '../helpers/raw-upstream.js';
import { type Backend, type RouterProcess, routerConfig, startRouter } from '../helpers/shardchat.js';

function findNginx(): string | undefined {
  const which = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' });
  const onPath = which.stdout.trim();
  if (which.status === 0 && onPath) return onPath;
  return existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : undefined;
}

const NGINX = findNginx();
const REQUIRED = process.env.SHARDCHAT_REQUIRE_NGINX === '1';
if (!NGINX) {
  const message =
    'nginx is not installed (apt-get install nginx-light): the router-vs-nginx differential test';
  if (REQUIRED) throw new Error(`${message} is required here (SHARDCHAT_REQUIRE_NGINX=1)`);
  process.stderr.write(`${message} is skipped\n`);
}

const registry = useProcessCleanup();

/**
 * The upstream's answer by case: the case is the path segment after /groups/; `-next`
 * cases (follow-up requests) and unknown ones get `200 own:<target>`.
 */
const ANSWERS: Record<string, string> = {
  plain: httpResponse(200, 'plain'),
  'overflow-cl': 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA',
  'two-in-one': httpResponse(200, 'one') + httpResponse(200, 'two'),
  'body-204': 'HTTP/1.1 204 No Content\r\n\r\nsurprise',
  'body-304': 'HTTP/1.1 304 Not Modified\r\ncontent-length: 3\r\n\r\nabc',
  'head-body': 'HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody',
  'chunked-after':
    'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n',
  'refused-upgrade': httpResponse(403, 'no'),
};

const reply: Reply = (req, conn) => {
  const c = /^\/groups\/([^/]+)/.exec(req.target)?.[1] ?? '';
  conn.socket.write(ANSWERS[c] ?? httpResponse(200, `own:${req.target}`));
};

interface Case {
  name: string;
  /** The client's bytes, written at once. */
  send: string;
  /** Methods of the responses to read, in order. */
  reads: string[];
  /** The router refuses where nginx forwards: what each answers, and why. */
  stricter?: { router: number[]; nginx: number[]; why: string };
}

const get = (target: string, extra = '') => `GET ${target} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;
const next = (c: string) => get(`/groups/${c}-next/x`);

const CASES: Case[] = [
  { name: 'plain', send: get('/groups/plain/x'), reads: ['GET'] },
  { name: 'pipelined', send: get('/groups/pipelined/a') + get('/groups/pipelined/b'), reads: ['GET', 'GET'] },
  { name: 'overflow-cl', send: get('/groups/overflow-cl/x') + next('overflow-cl'), reads: ['GET', 'GET'] },
  { name: 'two-in-one', send: get('/groups/two-in-one/x') + next('two-in-one'), reads: ['GET', 'GET'] },
  { name: 'body-204', send: get('/groups/body-204/x') + next('body-204'), reads: ['GET', 'GET'] },
  { name: 'body-304', send: get('/groups/body-304/x') + next('body-304'), reads: ['GET', 'GET'] },
  {
    name: 'head-body',
    send: `HEAD /groups/head-body/x HTTP/1.1\r\nHost: x\r\n\r\n${next('head-body')}`,
    reads: ['HEAD', 'GET'],
  },
  {
    name: 'chunked-after',
    send: get('/groups/chunked-after/x') + next('chunked-after'),
    reads: ['GET', 'GET'],
  },
  {
    name: 'refused-upgrade',
    send: upgradeRequest('/groups/refused-upgrade/ws') + next('refused-upgrade'),
    reads: ['GET', 'GET'],
  },
  {
    name: 'identical-content-length',
    send: 'POST /groups/identical-content-length/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi',
    reads: ['GET'],
  },
  {
    name: 'lower-case-method',
    send: 'get /groups/lower-case-method/x HTTP/1.1\r\nHost: x\r\n\r\n',
    reads: ['GET'],
  },
  {
    name: 'unknown-method',
    send: 'FOO /groups/unknown-method/x HTTP/1.1\r\nHost: x\r\n\r\n',
    reads: ['GET'],
    stricter: {
      router: [400],
      nginx: [200],
      why: 'a method the shard’s parser (llhttp) rejects: 400 bad_method',
    },
  },
  {
    name: 'dot-segment',
    send: get('/groups/dot-segment/../g3/x'),
    reads: ['GET'],
    stricter: {
      router: [400],
      nginx: [200],
      why: 'router and shard could read different ids: 400 ambiguous_path',
    },
  },
  {
    name: 'encoded-dot-segment',
    send: get('/groups/encoded-dot-segment/%2e%2e/g3/x'),
    reads: ['GET'],
    stricter: { router: [400], nginx: [200], why: 'a dot segment, percent-encoded: 400 ambiguous_path' },
  },
  {
    name: 'empty-segment',
    send: get('/groups//empty-segment/x'),
    reads: ['GET'],
    stricter: { router: [400], nginx: [200], why: 'an empty segment: 400 ambiguous_path' },
  },
  {
    name: 'encoded-slash',
    send: get('/groups/encoded-slash%2Fx/messages'),
    reads: ['GET'],
    stricter: { router: [400], nginx: [200], why: 'an encoded / inside the id: 400 ambiguous_path' },
  },
  {
    name: 'repeated-key-header',
    send: get('/groups/repeated-key-header/x', 'X-Group-Id: a\r\nX-Group-Id: b\r\n'),
    reads: ['GET'],
    stricter: { router: [400], nginx: [200], why: 'the router would hash one, the shard see both: 400' },
  },
  {
    name: 'bare-lf-head',
    send: 'GET /groups/bare-lf-head/x HTTP/1.1\nHost: x\n\n',
    reads: ['GET'],
    stricter: { router: [400], nginx: [200], why: 'header lines end with CRLF (nginx accepts a bare LF)' },
  },
];

interface Outcome {
  statuses: number[];
  /** Bodies of the responses that came from the upstream (status 2xx/3xx or the case's own). */
  bodies: string[];
  /** Requests of this case that reached the upstream. */
  upstream: number;
}

async function run(port: number, up: RawUpstream, c: Case): Promise<Outcome> {
  const conn = await RawConnection.open(port);
  const statuses: number[] = [];
  const bodies: string[] = [];
  try {
    await conn.write(c.send);
    for (const method of c.reads) {
      try {
        const res = await conn.readResponse({ method, timeoutMs: 3000 });
        statuses.push(res.status);
        bodies.push(res.text);
      } catch {
        statuses.push(0); // no answer (or a cut connection)
        bodies.push('');
        break;
      }
    }
  } finally {
    conn.destroy();
  }
  // Requests that reach the upstream late (after the client's answers) count too.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const upstream = up.requests.filter((q) => q.target.includes(`/${c.name}`)).length;
  return { statuses, bodies, upstream };
}

describe.skipIf(!NGINX)('the router against nginx: same bytes, same upstream answers', () => {
  let nginx: ChildProcess | undefined;
  let nginxPort = 0;
  let router: RouterProcess;
  let upRouter: RawUpstream;
  let upNginx: RawUpstream;
  const results: Record<string, { router: Outcome; nginx: Outcome }> = {};

  beforeAll(async () => {
    upRouter = await RawUpstream.start(reply);
    upNginx = await RawUpstream.start(reply);
    const dir = await registry.tempDir();
    router = await startRouter(
      dir,
      routerConfig([{ url: upRouter.url } as Backend], {
        router: { timeouts: { upstreamMs: 5000 } },
      }),
    );
    nginxPort = await freePort();
    const work = path.join(dir, 'nginx');
    const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
      .map((k) => {
        mkdirSync(path.join(work, 'tmp', k), { recursive: true });
        return `  ${k}_temp_path ${path.join(work, 'tmp', k)};`;
      })
      .join('\n');
    const conf = path.join(work, 'nginx.conf');
    writeFileSync(
      conf,
      `worker_processes 1;
daemon off;
pid ${path.join(work, 'nginx.pid')};
error_log ${path.join(work, 'error.log')} warn;
events { worker_connections 256; }
http {
  access_log off;
${temp}
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  upstream up { server 127.0.0.1:${upNginx.port}; keepalive 8; }
  server {
    listen 127.0.0.1:${nginxPort};
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 5s;
    }
  }
}
`,
    );
    nginx = spawn(NGINX as string, ['-p', work, '-c', conf, '-e', path.join(work, 'error.log')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    nginx.stderr?.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    await waitFor(() => canConnect(nginxPort), {
      timeoutMs: 10_000,
      what: `nginx on ${nginxPort}: ${stderr}`,
    });
    for (const c of CASES) {
      results[c.name] = {
        router: await run(router.port, upRouter, c),
        nginx: await run(nginxPort, upNginx, c),
      };
    }
  }, 120_000);

  afterAll(async () => {
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((resolve) => nginx?.once('exit', resolve));
      nginx.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
      if (nginx.exitCode === null) nginx.kill('SIGKILL');
    }
    await upRouter?.close();
    await upNginx?.close();
    await router?.proc.stop();
  });

  it.each(CASES.filter((c) => !c.stricter).map((c) => [c.name]))(
    '%s: the same statuses, bodies and upstream requests',
    (name) => {
      const { router: r, nginx: n } = results[name] as { router: Outcome; nginx: Outcome };
      expect(r.statuses, `router ${JSON.stringify(r)} nginx ${JSON.stringify(n)}`).toEqual(n.statuses);
      expect(r.upstream, `router ${JSON.stringify(r)} nginx ${JSON.stringify(n)}`).toBe(n.upstream);
      // Bodies that came from the upstream are compared; the proxies' own error pages differ.
      r.statuses.forEach((status, i) => {
        if (status < 400) expect(r.bodies[i], `${name} response ${i + 1}`).toBe(n.bodies[i]);
      });
      expect(r.statuses).not.toContain(0);
    },
  );

  it.each(CASES.filter((c) => c.stricter).map((c) => [c.name, c.stricter?.why]))(
    '%s: the router is deliberately stricter (%s)',
    (name) => {
      const c = CASES.find((x) => x.name === name) as Case;
      const { router: r, nginx: n } = results[name] as { router: Outcome; nginx: Outcome };
      expect(r.statuses, JSON.stringify(r)).toEqual(c.stricter?.router);
      expect(r.upstream).toBe(0);
      expect(n.statuses, JSON.stringify(n)).toEqual(c.stricter?.nginx);
      expect(n.upstream).toBe(1);
    },
  );
});
