/** JSON error answers the router gives itself (DESIGN section 4: `{error: {code, message}}`). */
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';

export interface RouterError {
  status: number;
  code: string;
  message: string;
  retryAfter?: number;
}

function body(e: RouterError): string {
  return JSON.stringify({ error: { code: e.code, message: e.message } });
}

export function sendError(res: ServerResponse, e: RouterError, requestId: string | undefined, close = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = body(e);
  const headers: Record<string, string | number> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  };
  if (requestId) headers['x-request-id'] = requestId;
  if (e.retryAfter !== undefined) headers['retry-after'] = e.retryAfter;
  if (close) headers.connection = 'close';
  res.writeHead(e.status, headers);
  res.end(text);
}

/** Writes an error as a raw HTTP/1.1 response on a socket (failed WebSocket upgrades) and closes it. */
export function writeRawError(socket: Duplex, e: RouterError, requestId: string | undefined): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const text = body(e);
  let head = `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\ncache-control: no-store\r\nconnection: close\r\n`;
  if (requestId) head += `x-request-id: ${requestId}\r\n`;
  if (e.retryAfter !== undefined) head += `retry-after: ${e.retryAfter}\r\n`;
  socket.end(`${head}\r\n${text}`);
}
