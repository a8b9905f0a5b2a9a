/**
 * Helpers for the reliability suites (test/reliability): ids placed on a chosen shard,
 * users and groups, posting with retries, reading a whole history, checking a chain of
 * msgIds, SDK clients that record what they were delivered, a TCP front that fails over
 * between routers, a second router over a cluster's shards, RSS samples, and the
 * one-line JSON summary every scenario prints.
 */
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import { ChatApi } from '../../client/api.js';
import { type ConnectionState, GroupConnection } from '../../client/group-connection.js';
import type { Message } from '../../client/types.js';
import { api, type Cluster } from './cluster.js';
import {
  CLI,
  childEnv,
  defaultRegistry,
  freePorts,
  type ManagedProcess,
  type ProcessRegistry,
  REPO_ROOT,
  startProcess,
} from './processes.js';
import { loadShardFunction } from './shardchat.js';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const rand = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));

let seq = 0;
/** An id unique to this run. */
export const uid = (prefix: string) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++seq}`;

/** The cluster's shard function (default spec): the shard of an id among S. */
export async function shardOf(S: number): Promise<(id: string) => number> {
  const { ShardFunction, DEFAULT_SHARD_SPEC } = await loadShardFunction();
  const sf = new ShardFunction(DEFAULT_SHARD_SPEC);
  return (id) => sf.shardOfKey(id, S);
}

/** `n` fresh ids with `prefix` that the shard function puts on `shard`. */
export function idsOn(of: (id: string) => number, shard: number, prefix: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n && i < 100_000; i++) {
    const id = uid(prefix);
    if (of(id) === shard) out.push(id);
  }
  if (out.length < n) throw new Error(`could not find ${n} ids on shard ${shard}`);
  return out;
}

export interface TestUser {
  id: string;
  token: string;
}

export async function users(c: Cluster, prefix: string, n: number): Promise<TestUser[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const id = uid(prefix);
      return { id, token: await c.token(id) };
    }),
  );
}

/** Creates `groupId` owned by `owner` and joins `members` (all through the router). */
export async function makeGroup(
  c: Cluster,
  groupId: string,
  owner: TestUser,
  members: TestUser[],
  capacity = 1000,
): Promise<void> {
  const created = await api(c.router.url, 'PUT', `/groups/${groupId}`, owner.token, {
    subject: groupId,
    capacity,
  });
  if (created.status !== 201)
    throw new Error(`create ${groupId}: ${created.status} ${JSON.stringify(created.body)}`);
  for (const m of members) {
    if (m.id === owner.id) continue;
    const joined = await api(c.router.url, 'POST', `/groups/${groupId}/members`, m.token, { userId: m.id });
    if (joined.status !== 200)
      throw new Error(`join ${groupId}: ${joined.status} ${JSON.stringify(joined.body)}`);
  }
}

export interface PostResult {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary JSON answers
  body: any;
  headers: Headers | undefined;
  ms: number;
}

/** One POST of a message with a timeout; status 0 when it failed at the network level. */
export async function postOnce(
  base: string,
  groupId: string,
  token: string,
  body: { contents: string; clientMsgId: string },
  timeoutMs = 10_000,
): Promise<PostResult> {
  return timedRequest(base, 'POST', `/groups/${groupId}/messages`, token, body, timeoutMs);
}

/** One request with a timeout, its parsed body and its duration; status 0 on a network error. */
export async function timedRequest(
  base: string,
  method: string,
  p: string,
  token: string | undefined,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<PostResult> {
  const started = performance.now();
  try {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${base}${p}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = text;
    }
    return { status: res.status, body: parsed, headers: res.headers, ms: performance.now() - started };
  } catch {
    return { status: 0, body: undefined, headers: undefined, ms: performance.now() - started };
  }
}

/** Every message of a group, read with after= paging. */
export async function readAll(base: string, groupId: string, token: string): Promise<Message[]> {
  const all: Message[] = [];
  for (let page = 0; page < 10_000; page++) {
    const after = all.length ? (all[all.length - 1] as Message).msgId : 0;
    const r = await api(base, 'GET', `/groups/${groupId}/messages?after=${after}&limit=200`, token);
    if (r.status !== 200) throw new Error(`read ${groupId}: ${r.status} ${JSON.stringify(r.body)}`);
    const msgs = r.body.messages as Message[];
    all.push(...msgs);
    if (msgs.length < 200) return all;
  }
  throw new Error('too many pages');
}

/** Problems with a delivered or stored history: msgIds must be 1..n in order, each once, prevMsgId = msgId - 1. */
export function chainProblems(messages: Message[], what: string): string[] {
  const problems: string[] = [];
  messages.forEach((m, i) => {
    if (m.msgId !== i + 1) problems.push(`${what}: position ${i} holds msgId ${m.msgId}`);
    if (m.prevMsgId !== m.msgId - 1) problems.push(`${what}: msgId ${m.msgId} has prevMsgId ${m.prevMsgId}`);
  });
  return problems.slice(0, 20);
}

/** A GroupConnection with a fast backoff that records what it was delivered. */
export interface SdkClient {
  userId: string;
  api: ChatApi;
  conn: GroupConnection;
  messages: Message[];
  states: ConnectionState[];
  resets: number;
}

export function sdkClient(baseUrl: string, user: TestUser, groupId: string): SdkClient {
  const chat = new ChatApi({ baseUrl, token: user.token, timeoutMs: 10_000 });
  const conn = new GroupConnection({
    api: chat,
    groupId,
    WebSocket,
    backoff: { minMs: 50, maxMs: 500, factor: 2 },
    ackTimeoutMs: 3000,
    maxSendAttempts: 1000,
  });
  const cl: SdkClient = { userId: user.id, api: chat, conn, messages: [], states: [], resets: 0 };
  conn.on('message', (m) => cl.messages.push(m));
  conn.on('state', (s) => cl.states.push(s));
  conn.on('reset', () => {
    cl.resets++;
  });
  return cl;
}

/** Waits (bounded) until a client was delivered `n` messages. */
export async function deliveredAtLeast(cl: SdkClient, n: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cl.messages.length >= n) return true;
    await sleep(25);
  }
  return cl.messages.length >= n;
}

// --- measurements ---

/** VmRSS of a process in KiB, from /proc (Linux). */
export function rssKiB(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

export const round1 = (n: number) => Math.round(n * 10) / 10;

/**
 * Prints the one-line JSON summary of a scenario (RELIABILITY.md copies its numbers) and
 * appends it to test-artifacts/reliability/summary.jsonl.
 */
export function summary(scenario: string, data: Record<string, unknown>): void {
  const line = JSON.stringify({ scenario, ...data });
  console.log(`RELIABILITY ${line}`);
  try {
    const dir = path.join(REPO_ROOT, 'test-artifacts', 'reliability');
    mkdirSync(dir, { recursive: true });
    appendFileSync(path.join(dir, 'summary.jsonl'), `${new Date().toISOString()} ${line}\n`);
  } catch {
    // the summary on stdout is what counts
  }
}

// --- a second router, and a front that fails over between routers ---

export interface ExtraRouter {
  port: number;
  adminPort: number;
  url: string;
  adminUrl: string;
  proc: ManagedProcess;
}

/** Starts another router process with the cluster's configuration file and secrets, on new ports. */
export async function startSecondRouter(
  c: Cluster,
  registry: ProcessRegistry = defaultRegistry,
  env: NodeJS.ProcessEnv = {},
): Promise<ExtraRouter> {
  const [port, adminPort] = (await freePorts(2)) as [number, number];
  const proc = await startProcess({
    name: `router2:${port}`,
    args: [CLI, 'router', '--config', c.configPath],
    env: childEnv({
      ...c.env,
      ...env,
      SHARDCHAT__router__port: String(port),
      SHARDCHAT__router__adminPort: String(adminPort),
    }),
    waitForPorts: [port, adminPort],
    registry,
  });
  return {
    port,
    adminPort,
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    proc,
  };
}

/**
 * A TCP front for clients that know one address: each new connection goes to the first
 * of `ports` that accepts it (like a load balancer with health by connect). Bytes are
 * piped both ways; when either side closes, so does the other.
 */
export class FailoverFront {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** Connections relayed per backend port. */
  readonly relayed = new Map<number, number>();
  port = 0;

  constructor(private readonly ports: number[]) {
    this.server = net.createServer((client) => this.accept(client));
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private track(s: net.Socket): void {
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
    s.on('error', () => {});
  }

  private accept(client: net.Socket): void {
    this.track(client);
    client.pause();
    const tryPort = (i: number) => {
      const port = this.ports[i];
      if (port === undefined || client.destroyed) {
        client.destroy();
        return;
      }
      const up = net.connect({ port, host: '127.0.0.1' });
      let connected = false;
      up.once('error', () => {
        if (!connected) tryPort(i + 1);
      });
      up.once('connect', () => {
        connected = true;
        this.track(up);
        this.relayed.set(port, (this.relayed.get(port) ?? 0) + 1);
        up.setNoDelay(true);
        client.setNoDelay(true);
        client.pipe(up);
        up.pipe(client);
        client.once('close', () => up.destroy());
        up.once('close', () => client.destroy());
        client.resume();
      });
    };
    tryPort(0);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
