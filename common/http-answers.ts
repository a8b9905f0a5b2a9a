/**
 * JSON answers of the servers' own (docs/architecture.md section 4: `{error: {code,
 * message}}`): on a node:http response (admin ports, internal calls), and written raw on
 * a socket that node:http no longer (or never) manages: refused WebSocket upgrades and
 * requests its parser could not read.
 */
import { type ServerResponse, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

/** An error answer: status, code and message, and extra headers (retry-after, www-authenticate, ...). */
export interface ErrorAnswer {
  status: number;
  code: string;
  message: string;
  headers?: Record<string, string>;
  /** Machine-readable facts beside the message (a 421's owner and shard map). */
  details?: unknown;
}

/** The JSON body of an error answer. */
export function errorBody(e: ErrorAnswer): { error: { code: string; message: string; details?: unknown } } {
  return {
    error: { code: e.code, message: e.message, ...(e.details === undefined ? {} : { details: e.details }) },
  };
}

export function sendError(res: ServerResponse, e: ErrorAnswer): void {
  sendJson(res, e.status, errorBody(e), e.headers);
}

/** An error a request is answered with (thrown by any handler; the status and code go to the client). */
export class ApiError extends Error implements ErrorAnswer {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly details?: unknown,
  ) {
    super(message);
  }
}

export const badRequest = (code: string, message: string) => new ApiError(400, code, message);
export const forbidden = (message: string) => new ApiError(403, 'forbidden', message);
export const notFound = (what: string) => new ApiError(404, 'not_found', `${what} does not exist`);

/** A complete HTTP/1.1 error response with `connection: close`, as one string. */
export function rawErrorResponse(e: ErrorAnswer): string {
  const body = JSON.stringify(errorBody(e));
  let head = `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n`;
  for (const [k, v] of Object.entries(e.headers ?? {})) head += `${k}: ${v}\r\n`;
  return `${head}\r\n${body}`;
}

/**
 * Writes an error answer on a raw socket and ends it; a peer that never closes its side
 * loses the socket after `lingerMs` (0: no bound).
 */
export function writeRawError(socket: Duplex, e: ErrorAnswer, lingerMs = 0): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(rawErrorResponse(e));
  if (lingerMs > 0) {
    const timer = setTimeout(() => socket.destroy(), lingerMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }
}

/**
 * `clientError` of a node:http server: a request Node's parser refuses (a method it does
 * not know such as `get` or `FOO`, a malformed head, a head too large, a timeout) gets a
 * JSON error like every other answer, instead of Node's bare `400 Bad Request`, then the
 * connection is closed.
 */
export function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  // Nothing can be written on a reset or closed socket, nor after an answer began.
  const pending = (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || pending?.headersSent) {
    socket.destroy();
    return;
  }
  writeRawError(socket, clientErrorAnswer(err.code, err.message), 2000);
}

function clientErrorAnswer(code: string | undefined, message: string): ErrorAnswer {
  switch (code) {
    case 'HPE_INVALID_METHOD':
      return {
        status: 400,
        code: 'bad_method',
        message: 'unknown request method (methods are upper case: GET, PUT, POST, DELETE, ...)',
      };
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, code: 'headers_too_large', message: 'the request head is too large' };
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return { status: 413, code: 'body_too_large', message: 'the chunk extensions are too large' };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'ERR_HTTP_HEADERS_TIMEOUT':
      return { status: 408, code: 'request_timeout', message: 'the request did not arrive in time' };
    default:
      return {
        status: 400,
        code: 'bad_request',
        message: `the request is not valid HTTP/1.1 (${code ?? message})`,
      };
  }
}
