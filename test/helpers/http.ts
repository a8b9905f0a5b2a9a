/**
 * Black-box clients for integration tests: HTTP requests with full control over
 * headers and framing, WebSocket clients with a message queue, raw upgrade attempts,
 * and a Prometheus text parser.
 */

import { randomBytes } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import net from 'node:net';
import WebSocket, { type RawData } from 'ws';

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
  text: string;
  /** Whether the client reused a kept-alive connection for this request. */
  reusedSocket: boolean;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string | string[]>;
  /** Sent in one piece with a content-length (unless headers say otherwise). */
  body?: string | Buffer;
  /** Sent as separate writes without a content-length: chunked transfer encoding. */
  chunks?: (string | Buffer)[];
  /** Default: a fresh connection per request (`agent: false`). */
  agent?: http.Agent | false;
  timeoutMs?: number;
}

/** One HTTP/1.1 request; resolves with the whole response, rejects on a socket error or timeout. */
export function request(url: string, opts: RequestOptions = {}): Promise<HttpResponse> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | string[]> = { ...(opts.headers ?? {}) };
    if (opts.body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-length')) {
      headers['content-length'] = String(Buffer.byteLength(opts.body));
    }
    const req = http.request(url, { method: opts.method ?? 'GET', headers, agent: opts.agent ?? false });
    const timer = setTimeout(() => {
      req.destroy(new Error(`${opts.method ?? 'GET'} ${url}: no complete response within ${timeoutMs} ms`));
    }, timeoutMs);
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      res.once('end', () => {
        clearTimeout(timer);
        const body = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body,
          text: body.toString('utf8'),
          reusedSocket: req.reusedSocket,
        });
      });
    });
    if (opts.chunks) {
      const write = async () => {
        for (const c of opts.chunks ?? []) {
          req.write(c);
          // Let each chunk leave separately.
          await new Promise((r) => setImmediate(r));
        }
        req.end();
      };
      void write();
    } else {
      req.end(opts.body);
    }
  });
}

/** What the test backend answers: the request as it arrived there. */
export interface Echo {
  name: string;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export function echoOf(res: HttpResponse): Echo {
  try {
    return JSON.parse(res.text) as Echo;
  } catch {
    throw new Error(`expected the backend's JSON echo, got ${res.status}: ${res.text.slice(0, 300)}`);
  }
}

export interface ErrorBody {
  error: { code: string; message: string };
}

/** Checks that a response is the router's JSON error, and returns it. */
export function errorOf(res: HttpResponse): ErrorBody {
  let parsed: unknown;
  try {
    parsed = JSON.parse(res.text);
  } catch {
    throw new Error(`expected a JSON error body, got ${res.status}: ${res.text.slice(0, 300)}`);
  }
  const e = (parsed as Partial<ErrorBody>).error;
  if (
    !e ||
    typeof e.code !== 'string' ||
    typeof e.message !== 'string' ||
    e.code === '' ||
    e.message === ''
  ) {
    throw new Error(`expected {error: {code, message}}, got ${res.text.slice(0, 300)}`);
  }
  return parsed as ErrorBody;
}

// --- WebSocket ---

export interface WsMessage {
  data: Buffer;
  isBinary: boolean;
  text: string;
}

/** A WebSocket client whose messages queue up from the start (nothing is missed). */
export class WsClient {
  readonly ws: WebSocket;
  private readonly queue: WsMessage[] = [];
  private readonly waiters: ((m: WsMessage) => void)[] = [];
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  closeInfo: { code: number; reason: string } | undefined;

  constructor(url: string, headers: Record<string, string> = {}) {
    this.ws = new WebSocket(url, { headers, handshakeTimeout: 10_000 });
    this.ws.on('message', (data: RawData, isBinary: boolean) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      const m = { data: buf, isBinary, text: buf.toString('utf8') };
      const w = this.waiters.shift();
      if (w) w(m);
      else this.queue.push(m);
    });
    this.ws.on('error', () => {});
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
      this.ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`upgrade answered ${res.statusCode}`)),
      );
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code: number, reason: Buffer) => {
        this.closeInfo = { code, reason: reason.toString('utf8') };
        resolve(this.closeInfo);
      });
    });
  }

  /** The next message, at most `timeoutMs` away. */
  next(timeoutMs = 5000): Promise<WsMessage> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const waiter = (m: WsMessage) => {
        clearTimeout(timer);
        resolve(m);
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i !== -1) this.waiters.splice(i, 1);
        reject(new Error(`no WebSocket message within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  async nextJson<T>(timeoutMs = 5000): Promise<T> {
    const m = await this.next(timeoutMs);
    return JSON.parse(m.text) as T;
  }

  send(data: string | Buffer): void {
    this.ws.send(data, { binary: typeof data !== 'string' });
  }

  /** Waits for the close, at most `timeoutMs`. */
  async waitClosed(timeoutMs = 5000): Promise<{ code: number; reason: string }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`WebSocket not closed within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  terminate(): void {
    this.ws.terminate();
  }
}

export interface WsHello {
  type: 'hello';
  name: string;
  headers: IncomingHttpHeaders;
  url: string;
}

/** Opens a WebSocket through the router and reads the backend's hello. */
export async function openWs(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ client: WsClient; hello: WsHello }> {
  const client = new WsClient(url, headers);
  await client.opened;
  const hello = await client.nextJson<WsHello>();
  if (hello.type !== 'hello') throw new Error(`expected hello first, got ${JSON.stringify(hello)}`);
  return { client, hello };
}

/**
 * Attempts a WebSocket upgrade with a plain HTTP client and resolves with the answer
 * when it is not 101 (status, headers, body). Rejects when the upgrade succeeds.
 */
export function failedUpgrade(url: string, timeoutMs = 10_000): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      agent: false,
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': randomBytes(16).toString('base64'),
      },
    });
    const timer = setTimeout(
      () => req.destroy(new Error(`upgrade ${url}: no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.once('upgrade', (res, socket) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(`upgrade ${url} unexpectedly succeeded with ${res.statusCode}`));
    });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const finish = () => {
        clearTimeout(timer);
        const body = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body,
          text: body.toString('utf8'),
          reusedSocket: false,
        });
      };
      res.once('end', finish);
      res.once('error', finish);
    });
    req.end();
  });
}

// --- Prometheus text ---

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the first sample named `name` whose labels include `labels`; undefined when none. */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const s of parseMetrics(text)) {
    if (s.name !== name) continue;
    if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
  }
  return undefined;
}

/** Names declared by `# TYPE` lines. */
export function metricNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) \S+/gm)) names.add(m[1] as string);
  for (const s of parseMetrics(text)) names.add(s.name);
  return names;
}

// --- raw HTTP/1.1 over TCP, for what ordinary clients will not send ---

export interface RawResponse {
  status: number;
  statusLine: string;
  /** Lower-cased names; repeated headers in order. */
  headers: Record<string, string[]>;
  body: Buffer;
  text: string;
}

/**
 * One TCP connection to a server: write bytes exactly as given, read responses one at
 * a time (content-length, chunked, bodiless statuses and HEAD, or up to the close).
 */
export class RawConnection {
  private buf = Buffer.alloc(0);
  private ended = false;
  private waiter: (() => void) | undefined;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.waiter?.();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        this.ended = true;
        this.waiter?.();
        resolve();
      });
    });
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host });
      socket.once('connect', () => {
        socket.off('error', reject);
        socket.setNoDelay(true);
        resolve(new RawConnection(socket));
      });
      socket.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.ended;
  }

  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(data, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Waits until `ready()` holds on the buffered bytes (or the connection closes), at most `timeoutMs`. */
  private async until(ready: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (ready()) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(
          new Error(
            `no ${what} within ${timeoutMs} ms; got ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`,
          ),
        );
      }, timeoutMs);
      this.waiter = () => {
        if (ready() || this.ended) {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve();
        }
      };
    });
  }

  /** Reads one response; `method` tells whether it can have a body. */
  async readResponse(opts: { method?: string; timeoutMs?: number } = {}): Promise<RawResponse> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    let parsed: { response: RawResponse; used: number } | undefined;
    const tryParse = () => {
      parsed = parseRawResponse(this.buf, opts.method ?? 'GET', this.ended);
      return parsed !== undefined;
    };
    await this.until(tryParse, timeoutMs, 'complete response');
    if (!parsed && !tryParse()) {
      throw new Error(
        `connection closed before a complete response; got ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`,
      );
    }
    const p = parsed as { response: RawResponse; used: number };
    this.buf = this.buf.subarray(p.used);
    return p.response;
  }

  /** Resolves once the server has closed the connection (at most `timeoutMs`). */
  async waitClosed(timeoutMs = 10_000): Promise<void> {
    await this.until(() => this.ended, timeoutMs, 'close');
    if (!this.ended) throw new Error('connection still open');
  }

  /** Bytes received and not yet consumed by readResponse. */
  get pending(): Buffer {
    return this.buf;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Parses one complete response at the start of `buf`; undefined when more bytes are needed. */
export function parseRawResponse(
  buf: Buffer,
  method: string,
  eof: boolean,
): { response: RawResponse; used: number } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end === -1) return undefined;
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const statusLine = lines[0] ?? '';
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!m) throw new Error(`malformed status line ${JSON.stringify(statusLine)}`);
  const status = Number(m[1]);
  const headers: Record<string, string[]> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`malformed header line ${JSON.stringify(line)}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const list = headers[name] ?? [];
    list.push(line.slice(colon + 1).trim());
    headers[name] = list;
  }
  const start = end + 4;
  const done = (body: Buffer, used: number) => ({
    response: { status, statusLine, headers, body, text: body.toString('utf8') },
    used,
  });
  if (method === 'HEAD' || (status >= 100 && status < 200) || status === 204 || status === 304) {
    return done(Buffer.alloc(0), start);
  }
  const te = (headers['transfer-encoding'] ?? []).join(',').toLowerCase();
  if (te.includes('chunked')) {
    const parts: Buffer[] = [];
    let pos = start;
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', pos);
      if (lineEnd === -1) return undefined;
      const size = Number.parseInt(buf.toString('latin1', pos, lineEnd).split(';')[0] ?? '', 16);
      if (!Number.isFinite(size)) throw new Error('malformed chunk size');
      if (size === 0) {
        // Trailers (usually none) end with an empty line.
        const trailerEnd = buf.indexOf('\r\n\r\n', lineEnd);
        if (buf.subarray(lineEnd, lineEnd + 4).toString() === '\r\n\r\n')
          return done(Buffer.concat(parts), lineEnd + 4);
        if (trailerEnd === -1) return undefined;
        return done(Buffer.concat(parts), trailerEnd + 4);
      }
      if (buf.length < lineEnd + 2 + size + 2) return undefined;
      parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      pos = lineEnd + 2 + size + 2;
    }
  }
  const cl = headers['content-length']?.[0];
  if (cl !== undefined) {
    const n = Number(cl);
    if (buf.length < start + n) return undefined;
    return done(buf.subarray(start, start + n), start + n);
  }
  // Delimited by the close of the connection.
  if (!eof) return undefined;
  return done(buf.subarray(start), buf.length);
}

/** A masked client-to-server WebSocket frame (RFC 6455 section 5.2). */
export function clientFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const mask = randomBytes(4);
  const len = payload.length;
  const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = (fin ? 0x80 : 0) | opcode;
  if (len < 126) head[1] = 0x80 | len;
  else if (len < 65536) {
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  } else {
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = (payload[i] as number) ^ (mask[i % 4] as number);
  return Buffer.concat([head, mask, masked]);
}

/** Parses unmasked server frames at the start of `buf`: [{opcode, payload}], and the bytes used. */
export function serverFrames(buf: Buffer): { frames: { opcode: number; payload: Buffer }[]; used: number } {
  const frames: { opcode: number; payload: Buffer }[] = [];
  let pos = 0;
  while (buf.length - pos >= 2) {
    const b0 = buf[pos] as number;
    const b1 = buf[pos + 1] as number;
    let len = b1 & 0x7f;
    let off = pos + 2;
    if (len === 126) {
      if (buf.length < off + 2) break;
      len = buf.readUInt16BE(off);
      off += 2;
    } else if (len === 127) {
      if (buf.length < off + 8) break;
      len = Number(buf.readBigUInt64BE(off));
      off += 8;
    }
    if (buf.length < off + len) break;
    frames.push({ opcode: b0 & 0x0f, payload: buf.subarray(off, off + len) });
    pos = off + len;
  }
  return { frames, used: pos };
}
