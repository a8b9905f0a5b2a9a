/** JSON error answers the router gives itself (DESIGN section 4: `{error: {code, message}}`). */

import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';

export interface RouterError {
  status: number;
  code: string;
  message: string;
  retryAfter?: number;
}

function body(e: RouterError): string {
  return JSON.stringify({ error: { code: e.code, message: e.message } });
}

/** The headers (as [name, value, ...]) and body of an error answer. */
export function errorResponse(
  e: RouterError,
  requestId: string | undefined,
): { headers: string[]; body: Buffer } {
  const text = Buffer.from(body(e));
  const headers = [
    'content-type',
    'application/json; charset=utf-8',
    'content-length',
    String(text.length),
    'cache-control',
    'no-store',
    'date',
    new Date().toUTCString(),
  ];
  if (requestId) headers.push('x-request-id', requestId);
  if (e.retryAfter !== undefined) headers.push('retry-after', String(e.retryAfter));
  return { headers, body: text };
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
