/**
 * The HTTP side of the SDK: one method per route of docs/architecture.md section 4, JSON in and out,
 * errors as ShardChatError with the server's code. Works with the global `fetch` of
 * browsers and Node (or one passed in).
 */
import { ShardChatError } from './errors.js';
import type { Ack, Group, Message, PresenceEntry, User } from './types.js';

export type TokenSource = string | (() => string | Promise<string>);

export interface ApiOptions {
  /** The router's address, e.g. `http://127.0.0.1:8080`; '' in a page served by the router. */
  baseUrl: string;
  token?: TokenSource;
  fetch?: typeof fetch;
  /** Per-request timeout (default 15 s); long-polls add their wait to it. */
  timeoutMs?: number;
}

/** What a response said about where it was served: `x-shardchat-shard: <ordinal>/<S>`. */
export interface Served<T> {
  body: T;
  shard?: number;
}

const enc = encodeURIComponent;

/** `?after=&limit=` of a list paged by id, or '' when neither is given. */
function pageQuery(after: string | undefined, limit: number | undefined): string {
  const q = new URLSearchParams();
  if (after) q.set('after', after);
  if (limit) q.set('limit', String(limit));
  const qs = q.toString();
  return qs ? `?${qs}` : '';
}

export class ChatApi {
  readonly baseUrl: string;
  private readonly fetchFn: typeof fetch;
  private readonly timeoutMs: number;
  token: TokenSource | undefined;

  constructor(o: ApiOptions) {
    this.baseUrl = o.baseUrl.replace(/\/+$/, '');
    this.fetchFn = o.fetch ?? globalThis.fetch.bind(globalThis);
    this.timeoutMs = o.timeoutMs ?? 15_000;
    this.token = o.token;
  }

  async currentToken(): Promise<string | undefined> {
    const t = this.token;
    return typeof t === 'function' ? await t() : t;
  }

  /** Sends one request; resolves with the JSON body and the shard that served it. */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    o: { auth?: boolean; extraTimeoutMs?: number } = {},
  ): Promise<Served<T>> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (o.auth !== false) {
      const token = await this.currentToken();
      if (token) headers.authorization = `Bearer ${token}`;
    }
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.timeoutMs + (o.extraTimeoutMs ?? 0));
    let res: Response;
    try {
      res = await this.fetchFn(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctl.signal,
      });
    } catch (err) {
      clearTimeout(timer);
      const aborted = ctl.signal.aborted;
      throw new ShardChatError(
        0,
        aborted ? 'timeout' : 'network',
        aborted ? `${method} ${path}: no answer in time` : `${method} ${path}: ${(err as Error).message}`,
      );
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new ShardChatError(0, 'network', `${method} ${path}: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    let json: unknown;
    try {
      json = text === '' ? {} : JSON.parse(text);
    } catch {
      json = undefined;
    }
    const shardHeader = res.headers.get('x-shardchat-shard');
    const shard = shardHeader ? Number.parseInt(shardHeader, 10) : undefined;
    if (!res.ok) {
      const e = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
      const retryAfter = Number.parseInt(res.headers.get('retry-after') ?? '', 10);
      throw new ShardChatError(
        res.status,
        e?.code ?? `http_${res.status}`,
        e?.message ?? `${method} ${path}: HTTP ${res.status}`,
        Number.isFinite(retryAfter) ? retryAfter : undefined,
      );
    }
    if (json === undefined)
      throw new ShardChatError(res.status, 'bad_response', `${method} ${path}: not JSON`);
    return { body: json as T, shard: Number.isFinite(shard) ? shard : undefined };
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await this.request<T>(method, path, body)).body;
  }

  /** `POST /users/{id}/token`: only where the server has `auth.devTokens` on (local mode). */
  async devToken(userId: string): Promise<string> {
    const r = await this.request<{ token: string }>('POST', `/users/${enc(userId)}/token`, undefined, {
      auth: false,
    });
    return r.body.token;
  }

  putUser(userId: string, profile: { name: string; email?: string; photoUrl?: string }): Promise<User> {
    return this.call('PUT', `/users/${enc(userId)}`, profile);
  }

  getUser(userId: string): Promise<User> {
    return this.call('GET', `/users/${enc(userId)}`);
  }

  /**
   * `GET /users/{id}/groups`: the groups the user is a member of (only your own), by
   * group id, a page after `after`; `next` when more follow. Sub-conversations are
   * listed as the conversation the user was placed in.
   */
  userGroups(
    userId: string,
    after?: string,
    limit?: number,
  ): Promise<{ groups: { groupId: string; joinedAt: number }[]; next?: string }> {
    return this.call('GET', `/users/${enc(userId)}/groups${pageQuery(after, limit)}`);
  }

  putGroup(
    groupId: string,
    g: { subject: string; capacity?: number; overflow?: 'reject' | 'shard'; closed?: boolean },
  ): Promise<Group> {
    return this.call('PUT', `/groups/${enc(groupId)}`, g);
  }

  getGroup(groupId: string): Promise<Served<Group>> {
    return this.request('GET', `/groups/${enc(groupId)}`);
  }

  /** Joins; resolves with the conversation the user was placed in (the group or one of its `~k`). */
  async join(groupId: string, userId: string): Promise<string> {
    const r = await this.call<{ groupId: string }>('POST', `/groups/${enc(groupId)}/members`, { userId });
    return r.groupId;
  }

  async leave(groupId: string, userId: string): Promise<void> {
    await this.call('DELETE', `/groups/${enc(groupId)}/members/${enc(userId)}`);
  }

  members(
    groupId: string,
    after?: string,
    limit?: number,
  ): Promise<{ members: { userId: string; joinedAt: number }[]; next?: string }> {
    return this.call('GET', `/groups/${enc(groupId)}/members${pageQuery(after, limit)}`);
  }

  post(groupId: string, contents: string, clientMsgId: string): Promise<Ack> {
    return this.call('POST', `/groups/${enc(groupId)}/messages`, { contents, clientMsgId });
  }

  /** Messages after `after` in msgId order; `waitSeconds` long-polls when there is none yet. */
  async messagesAfter(
    groupId: string,
    after: number,
    limit?: number,
    waitSeconds?: number,
  ): Promise<Message[]> {
    const q = new URLSearchParams({ after: String(after) });
    if (limit) q.set('limit', String(limit));
    if (waitSeconds) q.set('wait', String(waitSeconds));
    const r = await this.request<{ messages: Message[] }>(
      'GET',
      `/groups/${enc(groupId)}/messages?${q}`,
      undefined,
      { extraTimeoutMs: (waitSeconds ?? 0) * 1000 },
    );
    return r.body.messages;
  }

  /** The `limit` messages before `before` (exclusive), oldest first. */
  async messagesBefore(groupId: string, before: number, limit?: number): Promise<Message[]> {
    const q = new URLSearchParams({ before: String(before) });
    if (limit) q.set('limit', String(limit));
    return (await this.call<{ messages: Message[] }>('GET', `/groups/${enc(groupId)}/messages?${q}`))
      .messages;
  }

  async presence(groupId: string): Promise<PresenceEntry[]> {
    return (await this.call<{ presence: PresenceEntry[] }>('GET', `/groups/${enc(groupId)}/presence`))
      .presence;
  }

  /** The WebSocket address of a group, with the token as `?token=` (browsers cannot set headers). */
  async groupSocketUrl(groupId: string): Promise<string> {
    return this.socketUrl(`/groups/${enc(groupId)}/ws`);
  }

  /** The address of a user's inbox WebSocket (on the user's session host), with the token as `?token=`. */
  async userSocketUrl(userId: string): Promise<string> {
    return this.socketUrl(`/users/${enc(userId)}/ws`);
  }

  private async socketUrl(path: string): Promise<string> {
    const base = this.baseUrl || (globalThis as { location?: { origin: string } }).location?.origin || '';
    const url = new URL(`${base}${path}`);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const token = await this.currentToken();
    if (token) url.searchParams.set('token', token);
    return url.toString();
  }
}
