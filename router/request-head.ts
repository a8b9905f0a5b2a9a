/**
 * The request head the router sends to a shard: the client's method, target and
 * end-to-end headers; hop-by-hop headers dropped (RFC 9110 section 7.6.1); forwarding
 * headers, a request id and `x-shardchat-shard: <ordinal>/<S>` added. Client-sent
 * `x-shardchat-*` headers never pass.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

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

/** The client's request id when it is well formed, else a new one. */
export function requestIdOf(req: IncomingMessage): string {
  const v = req.headers['x-request-id'];
  return typeof v === 'string' && REQUEST_ID.test(v) ? v : randomUUID();
}

export interface HeadOptions {
  shardHeader: string;
  requestId: string;
  bodyLength: number | undefined;
  upgrade: boolean;
}

export function buildRequestHead(req: IncomingMessage, o: HeadOptions): string {
  const raw = req.rawHeaders;
  const h = req.headers;
  let connectionTokens: Set<string> | undefined;
  const conn = h.connection;
  if (conn && conn !== 'keep-alive' && conn !== 'close' && !(o.upgrade && /^upgrade$/i.test(conn))) {
    connectionTokens = new Set(conn.toLowerCase().split(',').map((t) => t.trim()));
  }
  let head = `${req.method} ${req.url} HTTP/1.1\r\n`;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = name.length > 0 ? name.toLowerCase() : name;
    if (DROP.has(lower) || lower.startsWith('x-shardchat-')) continue;
    if (connectionTokens?.has(lower) && !(o.upgrade && lower === 'upgrade')) continue;
    head += `${name}: ${raw[i + 1]}\r\n`;
  }
  const remote = req.socket.remoteAddress ?? '';
  const xff = h['x-forwarded-for'];
  head += `x-forwarded-for: ${xff ? `${xff}, ${remote}` : remote}\r\n`;
  head += `x-forwarded-proto: ${typeof h['x-forwarded-proto'] === 'string' ? h['x-forwarded-proto'] : 'http'}\r\n`;
  const fwdHost = h['x-forwarded-host'] ?? h.host;
  if (typeof fwdHost === 'string') head += `x-forwarded-host: ${fwdHost}\r\n`;
  head += `x-request-id: ${o.requestId}\r\nx-shardchat-shard: ${o.shardHeader}\r\n`;
  if (o.upgrade) head += 'connection: upgrade\r\nupgrade: websocket\r\n';
  if (o.bodyLength !== undefined) head += `content-length: ${o.bodyLength}\r\n`;
  return `${head}\r\n`;
}
