/**
 * The request head the router sends to a shard: the client's method, target and
 * end-to-end headers; hop-by-hop headers dropped (RFC 9110 section 7.6.1); forwarding
 * headers, a request id and `x-shardchat-shard: <ordinal>/<S>` added. Client-sent
 * `x-shardchat-*` headers never pass.
 */
import { randomUUID } from 'node:crypto';
import type { ParsedRequest } from './request-parser.js';

const DROP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'expect',
  'content-length',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-request-id',
]);

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface HeadOptions {
  shardHeader: string;
  /** Host for requests that have none (HTTP/1.0): the shard's own address. */
  defaultHost: string;
  remoteAddress: string;
  bodyLength: number | undefined;
  upgrade: boolean;
  /** The request id when the client sent none (a request sent again keeps its first one); default: a new one. */
  requestId?: string;
}

export interface BuiltHead {
  head: string;
  requestId: string;
}

export function buildRequestHead(req: ParsedRequest, o: HeadOptions): BuiltHead {
  const raw = req.headers;
  const tokens = req.connectionTokens;
  let xff: string | undefined;
  let xfp: string | undefined;
  let xfh: string | undefined;
  let host: string | undefined;
  let requestId: string | undefined;
  let head = `${req.method} ${req.target} HTTP/1.1\r\n`;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const lower = name.toLowerCase();
    if (DROP.has(lower)) {
      if (lower === 'x-forwarded-for') xff = xff === undefined ? value : `${xff}, ${value}`;
      else if (lower === 'x-forwarded-proto') xfp ??= value;
      else if (lower === 'x-forwarded-host') xfh ??= value;
      else if (lower === 'x-request-id' && requestId === undefined && REQUEST_ID.test(value))
        requestId = value;
      continue;
    }
    if (lower.startsWith('x-shardchat-')) continue;
    // Headers the client names in Connection are hop-by-hop too, but never Host.
    if (tokens.length > 0 && lower !== 'host' && tokens.includes(lower)) continue;
    if (lower === 'host') host = value;
    head += `${name}: ${value}\r\n`;
  }
  // The shard speaks HTTP/1.1, which requires a Host (an HTTP/1.0 client may omit it).
  if (host === undefined) head += `host: ${o.defaultHost}\r\n`;
  requestId ??= o.requestId ?? randomUUID();
  const remote = o.remoteAddress;
  head += `x-forwarded-for: ${xff === undefined ? remote : `${xff}, ${remote}`}\r\nx-forwarded-proto: ${xfp ?? 'http'}\r\n`;
  const fwdHost = xfh ?? host;
  if (fwdHost !== undefined) head += `x-forwarded-host: ${fwdHost}\r\n`;
  head += `x-request-id: ${requestId}\r\nx-shardchat-shard: ${o.shardHeader}\r\n`;
  if (o.upgrade) head += 'connection: upgrade\r\nupgrade: websocket\r\n';
  if (o.bodyLength !== undefined) head += `content-length: ${o.bodyLength}\r\n`;
  return { head: `${head}\r\n`, requestId };
}

/** The client's request id when well formed (for answers the router gives itself). */
export function clientRequestId(req: ParsedRequest | undefined): string {
  if (req) {
    for (let i = 0; i < req.headers.length; i += 2) {
      if (
        (req.headers[i] as string).toLowerCase() === 'x-request-id' &&
        REQUEST_ID.test(req.headers[i + 1] as string)
      ) {
        return req.headers[i + 1] as string;
      }
    }
  }
  return randomUUID();
}
