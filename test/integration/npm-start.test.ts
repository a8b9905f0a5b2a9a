/**
 * The README's quick start on a fresh copy of the repository: `npm ci`, then `npm start`
 * (the embedded default), wait for the printed address, load the page over HTTP, find
 * the seeded demo, and stop it with Ctrl-C (SIGINT to the process group): every
 * process exits and the ports are free again.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { cp, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ChatApi } from '../../client/index.js';
import { freeLocalBase, groupAlive, killGroup } from '../helpers/local.js';
import { canConnect, defaultRegistry, REPO_ROOT, useProcessCleanup } from '../helpers/processes.js';

useProcessCleanup();

/** The files a fresh clone would have: tracked and new files, not what .gitignore names. */
function projectFiles(): string[] | undefined {
  try {
    const out = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '-z'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return out.split('\0').filter(Boolean);
  } catch {
    return undefined; // not a git checkout (CI's copy for the second Node version)
  }
}

const IGNORED = new Set(['node_modules', 'dist', 'data', 'coverage', 'test-artifacts', '.git']);

async function freshCopy(to: string): Promise<void> {
  const files = projectFiles();
  if (files) {
    for (const f of files) {
      await mkdir(path.dirname(path.join(to, f)), { recursive: true });
      await cp(path.join(REPO_ROOT, f), path.join(to, f)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err; // deleted in the working tree but not yet in git
      });
    }
    return;
  }
  await cp(REPO_ROOT, to, {
    recursive: true,
    filter: (src) => !IGNORED.has(path.basename(src)) || path.dirname(src) !== REPO_ROOT,
  });
}

/** npm as the test runner got it (npm_execpath under `npm test`), else the one on PATH. */
function npm(args: string[], cwd: string, detached = false): ChildProcess {
  const execPath = process.env.npm_execpath;
  const [cmd, argv] = execPath?.endsWith('.js') ? [process.execPath, [execPath, ...args]] : ['npm', args];
  return spawn(cmd, argv, {
    cwd,
    detached,
    // JOBS=max: node-gyp compiles better-sqlite3 on every core.
    env: {
      ...process.env,
      JOBS: 'max',
      npm_config_update_notifier: 'false',
      npm_config_fund: 'false',
      npm_config_audit: 'false',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function run(child: ChildProcess, what: string, timeoutMs: number): Promise<string> {
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c));
  child.stderr?.on('data', (c: Buffer) => (out += c));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${what} did not finish within ${timeoutMs} ms\n${out.slice(-4000)}`));
    }, timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${what} exited with ${code}\n${out.slice(-4000)}`));
    });
  });
}

describe('npm start on a fresh copy', () => {
  let started: ChildProcess | undefined;
  afterAll(() => killGroup(started?.pid));

  it('installs, starts router and shards with the web UI and the demo, and stops cleanly on Ctrl-C', async () => {
    const dir = await defaultRegistry.tempDir('file', 'shardchat-fresh-');
    await freshCopy(dir);
    await run(npm(['ci', '--prefer-offline'], dir), 'npm ci', 360_000);

    const base = await freeLocalBase(3);
    const child = npm(['start', '--', '--port', String(base)], dir, true);
    started = child;
    let out = '';
    const ready = new Promise<string>((resolve, reject) => {
      const onData = (c: Buffer) => {
        out += c;
        const m = /ready: open (http:\/\/\S+) in a browser/.exec(out);
        if (m) resolve(m[1] as string);
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('exit', (code) =>
        reject(new Error(`npm start exited early (${code})\n${out.slice(-4000)}`)),
      );
      setTimeout(() => reject(new Error(`no address printed in 120 s\n${out.slice(-4000)}`)), 120_000);
    });
    const url = await ready;
    expect(url).toBe(`http://127.0.0.1:${base}/`);

    const page = await fetch(url);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    const html = await page.text();
    expect(html).toContain('<title>shardchat</title>');
    const app = await fetch(new URL('/app/app.js', url));
    expect(app.status).toBe(200);
    expect((await app.text()).length).toBeGreaterThan(1000);

    // The demo: cafe is full (capacity 4), Erin sits in cafe~1, each with its messages.
    const api = new ChatApi({ baseUrl: url });
    api.token = await api.devToken('alice');
    const cafe = (await api.getGroup('cafe')).body;
    expect(cafe).toMatchObject({ memberCount: 4, capacity: 4, lastMsgId: 4 });
    expect(out).toMatch(/demo conversation cafe on shard \d: alice, bob, carol, dave/);
    expect(out).toMatch(/demo conversation cafe~1 on shard \d: erin/);
    const erin = new ChatApi({ baseUrl: url, token: await api.devToken('erin') });
    expect((await erin.messagesAfter('cafe~1', 0)).map((m) => m.userId)).toEqual(['erin', 'erin']);

    // Ctrl-C: SIGINT to the whole process group, as a terminal sends it. npm itself dies
    // of the signal; shardchat stops its processes, says so and exits.
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const group = child.pid as number;
    process.kill(-group, 'SIGINT');
    await Promise.race([closed, new Promise((r) => setTimeout(r, 30_000))]);
    await expect.poll(() => groupAlive(group), { timeout: 30_000, interval: 200 }).toBe(false);
    expect(out).toContain('shardchat local: stopping');
    expect(out).toContain('shardchat local: stopped cleanly');
    for (const p of [base, base + 1, base + 2, base + 3, base + 1010])
      expect(await canConnect(p)).toBe(false);
  }, 600_000);
});
