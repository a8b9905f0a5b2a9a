/**
 * The shard function (docs/architecture.md section 1): one definition used by the router, the
 * shards, the CLI and the client SDK.
 *
 *   key   = first non-empty of: header value, urlPattern capture, onNoMatch rule
 *   key   = percent-decoded key
 *   shard = assign(xxh64(key), S)
 */
import { type Assignment, assign } from './assignment.js';
import { xxh64 } from './hash.js';

export interface ShardSpec {
  /** A JavaScript regular expression applied to the raw path (no query string). */
  urlPattern: string;
  /** Header whose value is the key when present; '' turns the rule off. */
  header: string;
  /** What a request that yields no key becomes. */
  onNoMatch: 'path' | 'reject' | number;
  assignment: Assignment;
}

export const DEFAULT_SHARD_SPEC: ShardSpec = {
  urlPattern: '^/(?:groups|users)/([^/]+)',
  header: 'x-group-id',
  onNoMatch: 'path',
  assignment: 'modulo',
};

/** Where a request goes, before the hash is taken. */
export type KeyResult =
  | { kind: 'key'; key: string; rule: 'header' | 'urlPattern' | 'path' }
  | { kind: 'fixed'; shard: number }
  | { kind: 'reject' }
  | { kind: 'malformed'; raw: string };

export type RouteResult =
  | { kind: 'shard'; shard: number; key: string; hash: bigint; rule: 'header' | 'urlPattern' | 'path' }
  | { kind: 'fixed'; shard: number }
  | { kind: 'reject' }
  | { kind: 'malformed'; raw: string };

/** The path of a request target: origin-form up to '?', or the path of an absolute-form URL. */
export function pathOf(target: string): string {
  let path = target;
  if (path.charCodeAt(0) !== 47 /* '/' */) {
    const scheme = path.indexOf('://');
    if (scheme > 0) {
      // The authority ends at the first '/', '?' or '#'; a target without a path has '/'.
      let i = scheme + 3;
      while (i < path.length) {
        const c = path.charCodeAt(i);
        if (c === 47 || c === 63 || c === 35) break;
        i++;
      }
      path = i < path.length && path.charCodeAt(i) === 47 ? path.slice(i) : '/';
    }
  }
  const q = path.indexOf('?');
  const hash = path.indexOf('#');
  let end = path.length;
  if (q !== -1) end = q;
  if (hash !== -1 && hash < end) end = hash;
  return end === path.length ? path : path.slice(0, end);
}

/** Percent-decodes a key; undefined when an escape is malformed (or not UTF-8). */
export function decodeKey(raw: string): string | undefined {
  if (raw.indexOf('%') === -1) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

export class ShardFunction {
  readonly spec: ShardSpec;
  private readonly pattern: RegExp;
  private readonly named: boolean;
  private readonly header: string;

  constructor(spec: ShardSpec) {
    this.spec = { ...spec };
    this.pattern = new RegExp(spec.urlPattern);
    this.named = /\(\?<key>/.test(spec.urlPattern);
    this.header = spec.header.toLowerCase();
  }

  /** Extracts the key of a request from its path and headers (docs/architecture.md section 1, step 1). */
  keyOf(path: string, headers?: Readonly<Record<string, string | string[] | undefined>>): KeyResult {
    let v: string | undefined;
    if (this.header && headers) {
      const value = headers[this.header];
      v = Array.isArray(value) ? value[0] : value;
    }
    return this.keyWith(path, v);
  }

  /** The urlPattern's capture in a path, as it appears there (not decoded); undefined without a match. */
  pathKey(path: string): string | undefined {
    const m = this.pattern.exec(path);
    if (!m) return undefined;
    return (this.named ? m.groups?.key : m[1]) || undefined;
  }

  /** Key extraction given the value of the key header (if the request has it). */
  keyWith(path: string, headerValue: string | undefined): KeyResult {
    let raw: string | undefined;
    let rule: 'header' | 'urlPattern' | 'path' = 'header';
    if (this.header && headerValue) raw = headerValue;
    if (!raw) {
      const m = this.pattern.exec(path);
      if (m) {
        const captured = this.named ? m.groups?.key : m[1];
        if (captured) {
          raw = captured;
          rule = 'urlPattern';
        }
      }
    }
    if (!raw) {
      const onNoMatch = this.spec.onNoMatch;
      if (onNoMatch === 'reject') return { kind: 'reject' };
      if (typeof onNoMatch === 'number') return { kind: 'fixed', shard: onNoMatch };
      raw = path;
      rule = 'path';
    }
    const key = decodeKey(raw);
    if (key === undefined) return { kind: 'malformed', raw };
    return { kind: 'key', key, rule };
  }

  /** The shard of a key among `shards` shards (docs/architecture.md section 1, steps 2 and 3). */
  shardOfKey(key: string, shards: number): number {
    return assign(xxh64(key), shards, this.spec.assignment);
  }

  /** Key extraction, hash and assignment for one request. */
  route(
    path: string,
    headers: Readonly<Record<string, string | string[] | undefined>> | undefined,
    shards: number,
  ): RouteResult {
    return this.routeKey(this.keyOf(path, headers), shards);
  }

  /** Like route(), given the value of the key header (if the request has it). */
  routeWith(path: string, headerValue: string | undefined, shards: number): RouteResult {
    return this.routeKey(this.keyWith(path, headerValue), shards);
  }

  private routeKey(k: KeyResult, shards: number): RouteResult {
    if (k.kind !== 'key') return k;
    const hash = xxh64(k.key);
    return {
      kind: 'shard',
      shard: assign(hash, shards, this.spec.assignment),
      key: k.key,
      hash,
      rule: k.rule,
    };
  }
}
