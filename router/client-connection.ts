/**
 * One client connection to the router: reads requests with the strict request parser
 * (one at a time; pipelined requests wait their turn), reads bounded bodies whole,
 * hands each request to the router, and writes the response the exchange produces,
 * head and body gathered into as few writes as possible.
 */

import { STATUS_CODES } from 'node:http';
import type net from 'node:net';
import { ChunkedDecoder, ChunkedError } from './chunked.js';
import type { DeadlineSweeper, Expirable } from './deadlines.js';
import type { RouterError } from './errors.js';
import { errorResponse } from './errors.js';
import { headerValue, type ParsedRequest, parseRequestHead, RequestError } from './request-parser.js';
import type { Framing } from './response-parser.js';

export interface ClientLimits {
  maxHeaderBytes: number;
  maxHeaders: number;
  maxBodyBytes: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveMs: number;
}

export interface ClientOwner {
  readonly limits: ClientLimits;
  readonly draining: boolean;
  readonly clock: DeadlineSweeper;
  /** A complete request (with its whole body) to answer. */
  dispatch(conn: ClientConnection, req: ParsedRequest, body: Buffer | undefined): void;
  /**
   * A WebSocket upgrade. The connection stays in charge (and holds what the client sends
   * meanwhile) until the owner either answers it like any request or, on a 101, takes the
   * socket over with takeOver().
   */
  upgrade(conn: ClientConnection, req: ParsedRequest): void;
  /** The router answered a malformed request itself. */
  rejected(status: number): void;
  clientClosed(conn: ClientConnection): void;
}

/** What the connection tells the exchange that is answering its current request. */
export interface ExchangeHooks {
  onClientClose(): void;
}

enum Phase {
  Head = 0,
  Body = 1,
  Busy = 2,
  Detached = 3,
  Closed = 4,
}

const CRLFCRLF = Buffer.from('\r\n\r\n');
const GATHER_LIMIT = 65536;

/**
 * Pieces of output (latin1 strings and buffers) as one buffer, so that a response goes
 * out in one plain write: cheaper than a corked writev for the small answers that make
 * up most of a chat's traffic. Large bodies are not copied twice.
 */
function gather(pieces: Array<string | Buffer>): Buffer {
  let size = 0;
  for (const p of pieces) size += p.length;
  if (size > GATHER_LIMIT) {
    return Buffer.concat(
      pieces.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)),
      size,
    );
  }
  const buf = Buffer.allocUnsafe(size);
  let off = 0;
  for (const p of pieces) off += typeof p === 'string' ? buf.write(p, off, 'latin1') : p.copy(buf, off);
  return buf;
}
const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';

/** Whether bytes hold a LF that does not end a CRLF. */
function hasBareLf(buf: Buffer): boolean {
  for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) {
    if (i === 0 || buf[i - 1] !== 13) return true;
  }
  return false;
}

export class ClientConnection implements Expirable {
  readonly remoteAddress: string;
  private phase = Phase.Head;
  private buf: Buffer | undefined;
  private headStartedAt = 0;
  private req: ParsedRequest | undefined;
  private bodyChunks: Buffer[] = [];
  private bodySize = 0;
  private bodyRemaining = 0;
  private chunked: ChunkedDecoder | undefined;
  private readonly onChunk = (c: Buffer) => this.addBody(c);
  private out: Array<string | Buffer> = [];
  private keepAlive = true;
  private chunkedOut = false;
  private responseDone = false;
  private hooks: ExchangeHooks | undefined;
  /** Whether a response head has been produced for the current request. */
  headSent = false;
  /** Whether that head has been written to the socket: the answer can no longer change. */
  committed = false;
  /** The status of the last response head produced. */
  status = 0;
  /** Whether a write waits for the client to read (see onceDrain). */
  private stalled = false;
  /** When the current wait (idle, head, body, a stalled or last flush) ends; see DeadlineSweeper. */
  deadline = 0;

  constructor(
    readonly socket: net.Socket,
    private readonly owner: ClientOwner,
  ) {
    this.remoteAddress = socket.remoteAddress ?? '';
    socket.setNoDelay(true);
    this.deadline = owner.clock.now + owner.limits.keepAliveMs;
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  get idle(): boolean {
    return this.phase === Phase.Head && this.buf === undefined;
  }

  /** The exchange now answering this connection's request. */
  setHooks(hooks: ExchangeHooks | undefined): void {
    this.hooks = hooks;
  }

  // --- reading requests ---

  private readonly onData = (chunk: Buffer): void => {
    if (this.phase === Phase.Busy) {
      // A pipelined request: keep it until the current response is done, and stop reading.
      this.buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
      this.socket.pause();
      return;
    }
    if (this.phase >= Phase.Detached) return;
    if (this.phase === Phase.Head && this.buf === undefined) this.headStartedAt = this.owner.clock.now;
    this.buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    this.process();
  };

  private process(): void {
    const limits = this.owner.limits;
    while (this.buf !== undefined && (this.phase === Phase.Head || this.phase === Phase.Body)) {
      let buf = this.buf;
      if (this.phase === Phase.Head) {
        // Empty lines before a request line are ignored (RFC 9112 section 2.2).
        let start = 0;
        while (start + 1 < buf.length && buf[start] === 13 && buf[start + 1] === 10) start += 2;
        if (start > 0) {
          buf = buf.subarray(start);
          this.buf = buf.length > 0 ? buf : undefined;
          if (this.buf === undefined) return;
        }
        const end = buf.indexOf(CRLFCRLF);
        if (end === -1 || end + 4 > limits.maxHeaderBytes) {
          if (buf.length > limits.maxHeaderBytes || end !== -1) {
            this.reject(
              new RequestError(
                431,
                'headers_too_large',
                `request heads are limited to ${limits.maxHeaderBytes} bytes`,
              ),
            );
            return;
          }
          if (hasBareLf(buf)) {
            // Lines end with CRLF: a head with bare LF line endings would never end.
            this.reject(
              new RequestError(400, 'bad_request', 'header lines must end with CRLF, not a bare LF'),
            );
            return;
          }
          this.armHeadTimer();
          return;
        }
        let req: ParsedRequest;
        try {
          req = parseRequestHead(buf.toString('latin1', 0, end), limits.maxHeaders);
        } catch (err) {
          if (err instanceof RequestError) {
            this.reject(err);
            return;
          }
          throw err;
        }
        this.req = req;
        this.buf = end + 4 < buf.length ? buf.subarray(end + 4) : undefined;
        if (req.upgrade === 'websocket' && req.method === 'GET' && !req.chunked && req.contentLength <= 0) {
          this.busy(req);
          this.owner.upgrade(this, req);
          return;
        }
        if (req.chunked || req.contentLength > 0) {
          if (req.contentLength > limits.maxBodyBytes) {
            this.reject(
              new RequestError(
                413,
                'body_too_large',
                `request bodies are limited to ${limits.maxBodyBytes} bytes`,
              ),
            );
            return;
          }
          this.phase = Phase.Body;
          this.bodyChunks = [];
          this.bodySize = 0;
          if (req.chunked) {
            this.chunked ??= new ChunkedDecoder();
            this.chunked.reset();
          } else {
            this.bodyRemaining = req.contentLength;
          }
          if (req.minor === 1 && headerValue(req, 'expect')?.toLowerCase() === '100-continue') {
            this.socket.write(CONTINUE);
          }
          this.deadline = this.owner.clock.now + limits.requestTimeoutMs;
          continue;
        }
        this.dispatch(undefined);
        return;
      }
      // Phase.Body
      let used: number;
      if (this.chunked && this.req?.chunked) {
        try {
          used = this.chunked.decode(buf, 0, this.onChunk);
        } catch (err) {
          if (err instanceof ChunkedError) {
            this.reject(new RequestError(400, 'bad_request', `malformed chunked body: ${err.message}`));
            return;
          }
          throw err;
        }
      } else {
        used = Math.min(this.bodyRemaining, buf.length);
        this.addBody(buf.subarray(0, used));
        this.bodyRemaining -= used;
      }
      if (this.phase !== Phase.Body) return; // rejected for size
      this.buf = used < buf.length ? buf.subarray(used) : undefined;
      const complete = this.req?.chunked ? this.chunked?.done === true : this.bodyRemaining === 0;
      if (complete) {
        const chunks = this.bodyChunks;
        this.bodyChunks = [];
        this.dispatch(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, this.bodySize));
        return;
      }
    }
  }

  private addBody(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.bodySize += chunk.length;
    if (this.bodySize > this.owner.limits.maxBodyBytes) {
      this.bodyChunks = [];
      this.reject(
        new RequestError(
          413,
          'body_too_large',
          `request bodies are limited to ${this.owner.limits.maxBodyBytes} bytes`,
        ),
      );
      return;
    }
    // Copy: the chunk may be a view into a larger buffer that holds the next request.
    this.bodyChunks.push(Buffer.from(chunk));
  }

  private dispatch(body: Buffer | undefined): void {
    const req = this.req as ParsedRequest;
    this.busy(req);
    this.owner.dispatch(this, req, body);
  }

  /** A request is being answered: what the client sends meanwhile waits (see onData). */
  private busy(req: ParsedRequest): void {
    this.phase = Phase.Busy;
    this.deadline = 0;
    this.keepAlive = req.keepAlive && !this.owner.draining;
    this.headSent = false;
    this.committed = false;
    this.status = 0;
  }

  private armHeadTimer(): void {
    // The whole head must arrive within headersTimeoutMs of its first byte (slowloris).
    const deadline = this.headStartedAt + this.owner.limits.headersTimeoutMs;
    if (deadline <= this.owner.clock.now) {
      this.reject(new RequestError(408, 'request_timeout', 'the request head took too long to arrive'));
      return;
    }
    this.deadline = deadline;
  }

  expire(): void {
    if (this.phase === Phase.Head && this.buf === undefined) {
      // An idle keep-alive connection.
      this.socket.destroy();
    } else if (this.phase === Phase.Head || this.phase === Phase.Body) {
      this.reject(new RequestError(408, 'request_timeout', 'the request took too long to arrive'));
    } else if (this.phase === Phase.Closed || (this.phase === Phase.Busy && this.stalled)) {
      // A client that does not read its response.
      this.socket.destroy();
    }
  }

  private readonly onError = (): void => {
    // 'close' follows.
  };

  private readonly onClose = (): void => {
    const wasBusy = this.phase === Phase.Busy;
    this.phase = Phase.Closed;
    this.owner.clientClosed(this);
    if (wasBusy) {
      const hooks = this.hooks;
      this.hooks = undefined;
      hooks?.onClientClose();
    }
  };

  /** Answers a request the router cannot read, then closes the connection. */
  private reject(e: RequestError): void {
    this.owner.rejected(e.status);
    this.phase = Phase.Busy;
    this.keepAlive = false;
    this.buf = undefined;
    this.respondError({ status: e.status, code: e.code, message: e.message }, undefined);
  }

  /**
   * The shard accepted an upgrade (101): the socket leaves this connection, with the
   * bytes the client sent after the upgrade request (held, unread, since: at most what
   * arrived before reading paused). The socket stays paused; the new owner resumes it.
   */
  takeOver(): { socket: net.Socket; early: Buffer | undefined } {
    const early = this.buf;
    this.buf = undefined;
    this.phase = Phase.Detached;
    this.hooks = undefined;
    const s = this.socket;
    s.off('data', this.onData);
    s.off('error', this.onError);
    s.off('close', this.onClose);
    s.pause();
    this.deadline = 0;
    this.owner.clientClosed(this);
    return { socket: s, early };
  }

  // --- writing responses ---

  respondHead(status: number, message: string, headers: string[], framing: Framing): void {
    const req = this.req;
    const http10 = req?.minor === 0;
    this.chunkedOut = !http10 && (framing === 'chunked' || framing === 'close');
    if (http10 && (framing === 'chunked' || framing === 'close')) this.keepAlive = false;
    let head = `HTTP/1.1 ${status} ${message || STATUS_CODES[status] || ''}\r\n`;
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    if (this.chunkedOut) head += 'transfer-encoding: chunked\r\n';
    if (!this.keepAlive || this.owner.draining) {
      this.keepAlive = false;
      head += 'connection: close\r\n';
    } else if (http10) head += 'connection: keep-alive\r\n';
    this.out.push(`${head}\r\n`);
    this.headSent = true;
    this.status = status;
  }

  respondBody(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.chunkedOut) this.out.push(`${chunk.length.toString(16)}\r\n`, chunk, '\r\n');
    else this.out.push(chunk);
  }

  respondEnd(): void {
    if (this.chunkedOut) this.out.push('0\r\n\r\n');
    this.responseDone = true;
  }

  /** Writes what the exchange produced; false when the client is not keeping up. */
  flush(): boolean {
    const out = this.out;
    if (this.socket.destroyed) {
      this.out = [];
      return true;
    }
    let ok = true;
    if (out.length === 1) {
      const only = out[0] as string | Buffer;
      // A buffer may be a view into the upstream read buffer (UpstreamPool): the socket
      // may keep it past this call, so it is copied.
      ok =
        typeof only === 'string' ? this.socket.write(only, 'latin1') : this.socket.write(Buffer.from(only));
    } else if (out.length > 1) ok = this.socket.write(gather(out));
    this.out = [];
    if (this.headSent) this.committed = true;
    if (this.responseDone) this.finishResponse();
    return ok;
  }

  /**
   * Calls `fn` once the client has taken what was written. Meanwhile the wait is bounded
   * by requestTimeoutMs: a client that stops reading its response is cut off.
   */
  onceDrain(fn: () => void): void {
    this.stalled = true;
    this.deadline = this.owner.clock.now + this.owner.limits.requestTimeoutMs;
    this.socket.once('drain', () => {
      this.stalled = false;
      if (this.phase === Phase.Busy) this.deadline = 0;
      fn();
    });
  }

  /** A complete JSON error answer from the router itself. */
  respondError(e: RouterError, requestId: string | undefined): void {
    if (this.committed) {
      this.abort();
      return;
    }
    // A head produced but not yet written is replaced by the error.
    this.out = [];
    this.headSent = false;
    if (this.owner.draining) this.keepAlive = false;
    const headers = errorResponse(e, requestId);
    this.respondHead(e.status, STATUS_CODES[e.status] ?? 'Error', headers.headers, 'length');
    this.out.push(headers.body);
    this.respondEnd();
    this.flush();
  }

  abort(): void {
    this.hooks = undefined;
    this.socket.destroy();
  }

  private finishResponse(): void {
    this.responseDone = false;
    this.hooks = undefined;
    this.req = undefined;
    this.headSent = false;
    this.committed = false;
    if (this.phase !== Phase.Busy) return;
    if (!this.keepAlive) {
      this.phase = Phase.Closed;
      this.socket.end();
      // A client that never reads its last response must not hold the socket forever.
      this.deadline = this.owner.clock.now + this.owner.limits.keepAliveMs;
      return;
    }
    this.phase = Phase.Head;
    this.deadline = this.owner.clock.now + this.owner.limits.keepAliveMs;
    if (this.socket.isPaused()) this.socket.resume();
    if (this.buf !== undefined) {
      this.headStartedAt = this.owner.clock.now;
      this.process();
    }
  }

  /** Closes the connection if it waits for a request (router shutdown). */
  closeIfIdle(): void {
    if (this.idle) this.socket.destroy();
  }
}
