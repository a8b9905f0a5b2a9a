/**
 * Resharding in tests: a cluster's content seeded and read back whole through the
 * router (groups, members, messages, profiles, each user's groups), `shardchat reshard`
 * run as a process,
 * and each shard's map.
 */
import { spawn } from 'node:child_process';
import { expect } from 'vitest';
import { api, type Cluster } from './cluster.js';
import { CLI, childEnv } from './processes.js';

/** What content is written and read through: a cluster's router and its dev tokens (or local mode's). */
export interface ChatTarget {
  router: { url: string };
  token(userId: string): Promise<string>;
}

/** What `shardchat reshard` runs against: a configuration (and the environment with the internal token). */
export interface ReshardTarget {
  configPath: string;
  env?: NodeJS.ProcessEnv;
}

export interface Content {
  groups: Record<
    string,
    { epoch: string; lastMsgId: number; memberCount: number; members: string[]; messages: string[] }
  >;
  /** A user's profile name and, of the groups read, those `GET /users/{u}/groups` lists. */
  users: Record<string, { name: string; groups: string[] }>;
}

/** How long a user's groups may take to show a membership (the outbox is sent at once). */
const INDEX_SETTLE_MS = 10_000;

export interface SeedOptions {
  groups: number;
  messagesPerGroup: number;
  /** Users u0..u{users-1}; every group has the owner and two more members. */
  users: number;
  prefix?: string;
}

export async function tokensFor(c: ChatTarget, users: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const u of users) out.set(u, await c.token(u));
  return out;
}

/** Groups g0.. with members and messages, profiles of every user. */
export async function seed(c: ChatTarget, o: SeedOptions, tokens: Map<string, string>): Promise<string[]> {
  const p = o.prefix ?? '';
  const users = Array.from({ length: o.users }, (_, i) => `${p}u${i}`);
  for (const u of users) if (!tokens.has(u)) tokens.set(u, await c.token(u));
  const tok = (u: string) => tokens.get(u) as string;
  for (const u of users) {
    const r = await api(c.router.url, 'PUT', `/users/${u}`, tok(u), { name: `Name of ${u}` });
    expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
  }
  const groups: string[] = [];
  for (let g = 0; g < o.groups; g++) {
    const id = `${p}g${g}`;
    const owner = users[g % users.length] as string;
    const r = await api(c.router.url, 'PUT', `/groups/${id}`, tok(owner), { subject: `Subject ${id}` });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    for (const m of [users[(g + 1) % users.length], users[(g + 2) % users.length]] as string[]) {
      const j = await api(c.router.url, 'POST', `/groups/${id}/members`, tok(m), { userId: m });
      expect(j.status, JSON.stringify(j.body)).toBe(200);
    }
    for (let i = 0; i < o.messagesPerGroup; i++) {
      const m = await api(c.router.url, 'POST', `/groups/${id}/messages`, tok(owner), {
        contents: `${id} message ${i}`,
        clientMsgId: `${id}-${i}`,
      });
      expect(m.status, JSON.stringify(m.body)).toBe(201);
    }
    groups.push(id);
  }
  return groups;
}

/** Everything the cluster holds of these groups and users, read through the router. */
export async function readContent(
  c: Pick<ChatTarget, 'router'>,
  groups: string[],
  users: string[],
  tokens: Map<string, string>,
  asUser: (groupId: string) => string,
): Promise<Content> {
  const out: Content = { groups: {}, users: {} };
  for (const g of groups) {
    const t = tokens.get(asUser(g)) as string;
    const row = await api(c.router.url, 'GET', `/groups/${g}`, t);
    expect(row.status, `${g}: ${JSON.stringify(row.body)}`).toBe(200);
    const mem = await api(c.router.url, 'GET', `/groups/${g}/members?limit=200`, t);
    expect(mem.status).toBe(200);
    const messages: string[] = [];
    for (let after = 0; ; ) {
      const page = await api(c.router.url, 'GET', `/groups/${g}/messages?after=${after}&limit=200`, t);
      expect(page.status, JSON.stringify(page.body)).toBe(200);
      const list = page.body.messages as {
        msgId: number;
        prevMsgId: number;
        contents: string;
        clientMsgId: string;
        userId: string;
      }[];
      for (const m of list)
        messages.push(`${m.msgId}<${m.prevMsgId} ${m.userId} ${m.clientMsgId} ${m.contents}`);
      if (list.length < 200) break;
      after = (list[list.length - 1] as { msgId: number }).msgId;
    }
    out.groups[g] = {
      epoch: row.body.epoch,
      lastMsgId: row.body.lastMsgId,
      memberCount: row.body.memberCount,
      members: (mem.body.members as { userId: string }[]).map((m) => m.userId).sort(),
      messages,
    };
  }
  for (const u of users) {
    const r = await api(c.router.url, 'GET', `/users/${u}`, tokens.get(u) as string);
    expect(r.status, `${u}: ${JSON.stringify(r.body)}`).toBe(200);
    const expected = groups.filter((g) => out.groups[g]?.members.includes(u));
    const listed = await groupsOfUser(c, u, tokens.get(u) as string, groups, expected);
    expect(listed, `the groups of ${u}`).toEqual(expected);
    out.users[u] = { name: r.body.name, groups: listed };
  }
  return out;
}

/**
 * The user's groups as `GET /users/{u}/groups` lists them (of `among`, in its order),
 * read again while they differ from `expected`, for up to INDEX_SETTLE_MS.
 */
async function groupsOfUser(
  c: Pick<ChatTarget, 'router'>,
  userId: string,
  token: string,
  among: string[],
  expected: string[],
): Promise<string[]> {
  const deadline = Date.now() + INDEX_SETTLE_MS;
  for (;;) {
    const listed = new Set<string>();
    for (let after = ''; ; ) {
      const page = await api(c.router.url, 'GET', `/users/${userId}/groups?limit=1000&after=${after}`, token);
      expect(page.status, `${userId}: ${JSON.stringify(page.body)}`).toBe(200);
      for (const g of page.body.groups as { groupId: string }[]) listed.add(g.groupId);
      if (!page.body.next) break;
      after = page.body.next as string;
    }
    const mine = among.filter((g) => listed.has(g));
    if (JSON.stringify(mine) === JSON.stringify(expected) || Date.now() > deadline) return mine;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** msgIds 1..lastMsgId, each once, each after the one before. */
export function expectContiguous(content: Content): void {
  for (const [g, v] of Object.entries(content.groups)) {
    const ids = v.messages.map((m) => Number(m.split('<')[0]));
    expect(ids, g).toEqual(Array.from({ length: v.lastMsgId }, (_, i) => i + 1));
    v.messages.forEach((m, i) => {
      expect(Number(m.split('<')[1]?.split(' ')[0]), `${g} prevMsgId of ${i + 1}`).toBe(i);
    });
  }
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `shardchat ...args` to its end (bounded), in `env` (plus what node needs). */
export function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: childEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`shardchat ${args.join(' ')} ran over ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs `shardchat reshard ...args --config <cluster config>` to its end (bounded). */
export function runReshard(
  c: ReshardTarget,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 120_000,
): Promise<CliResult> {
  return runCli(['reshard', ...args, '--config', c.configPath], { ...c.env, ...env }, timeoutMs);
}

export interface MapOf {
  version: number;
  shards: number;
  assignment: string;
  migration?: { state: string };
}

/** Shard i's map, from its /readyz. */
export async function mapOf(c: Cluster, i: number): Promise<MapOf> {
  const res = await fetch(`${c.shards[i]?.adminUrl}/readyz`);
  return ((await res.json()) as { map: MapOf }).map;
}
