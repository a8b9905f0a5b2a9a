/**
 * The wire protocol's core shapes and rules (docs/architecture.md section 4), shared by
 * the router, the shards, the CLI and the client SDK. Nothing here may need Node.js: the
 * browser bundle imports it.
 */

/** A stored message, as every API answer, event and delivery record carries it. */
export interface Message {
  groupId: string;
  msgId: number;
  prevMsgId: number;
  epoch: string;
  ts: number;
  userId: string;
  contents: string;
  clientMsgId: string;
}

/** What every error answer holds (the HTTP status tells the class). */
export interface ErrorBody {
  error: { code: string; message: string };
}

/** The router's stamp on every forwarded request: `<ordinal>/<S>`. */
export const SHARD_HEADER = 'x-shardchat-shard';
/**
 * The shard map a shard serves by, on every answer of a shard and its readiness probe:
 * `<version>:<shards>:<assignment>` (common/placement.ts, docs/architecture.md section 7).
 */
export const MAP_HEADER = 'x-shardchat-map';
/** The close code of a WebSocket whose key moved to another shard: reconnect at once. */
export const CLOSE_MOVED = 4012;
/** Shard-to-shard calls carry the internal token in this header. */
export const INTERNAL_TOKEN_HEADER = 'x-shardchat-internal-token';
/** Headers starting with this are the router's and the shards' own: clients' copies never pass. */
export const RESERVED_HEADER_PREFIX = 'x-shardchat-';

/** An id a client chooses (users, groups): no '~', which is reserved for sub-conversations. */
export const CLIENT_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;
/** A sub-conversation `{parent}~k` (k from 1 to 999999). */
const SUB_ID = /^([A-Za-z0-9_-][A-Za-z0-9._-]{0,127})~([1-9][0-9]{0,5})$/;
/** The idempotency key of a message, unique per (group, user). */
export const CLIENT_MSG_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export function isClientId(id: string): boolean {
  return CLIENT_ID.test(id);
}

/** A group id as it may appear in a path: a client id or `{clientId}~k`. */
export function isGroupId(id: string): boolean {
  return CLIENT_ID.test(id) || SUB_ID.test(id);
}

/** The parent and k of a sub-conversation id, or undefined. */
export function parseSubId(id: string): { parent: string; k: number } | undefined {
  const m = SUB_ID.exec(id);
  return m ? { parent: m[1] as string, k: Number(m[2]) } : undefined;
}

export function subId(parent: string, k: number): string {
  return `${parent}~${k}`;
}

export function isClientMsgId(v: unknown): v is string {
  return typeof v === 'string' && CLIENT_MSG_ID.test(v);
}

/** How a group's messages reach its clients: pushed one by one, or announced by ticks and read (pull). */
export type DeliveryMode = 'push' | 'pull';
