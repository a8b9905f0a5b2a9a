/**
 * An incremental, strict HTTP/1.1 response parser for the router's upstream
 * connections. It hands the head and the de-framed body to callbacks and says whether
 * the connection may be reused. Anything ambiguous (conflicting framing, folded or
 * malformed header lines, oversized heads, bad chunk sizes) is an error: the
 * connection is then closed, never reused.
 */
import { ChunkedDecoder } from './chunked.js';
import { trimOws } from './request-parser.js';

/** How the response body is delimited on the wire. */
export type Framing = 'none' | 'length' | 'chunked' | 'close';

export interface ResponseHead {
  framing: Framing;
  statusCode: number;
  statusMessage: string;
  /** Raw headers as [name, value, name, value, ...], hop-by-hop headers removed. */
  headers: string[];
  keepAlive: boolean;
  contentLength: number;
}

export interface ResponseCallbacks {
  onHead(head: ResponseHead): void;
  onBody(chunk: Buffer): void;
  onEnd(reusable: boolean): void;
}

export class ParseError extends Error {
  override name = 'ParseError';
}

enum State {
  Head = 0,
  Fixed = 1,
  Chunked = 2,
  UntilClose = 3,
  Done = 4,
}

const CRLFCRLF = Buffer.from('\r\n\r\n');
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Field values: visible characters, spaces, tabs and obs-text; never CR, LF or NUL.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Response headers that describe one hop and are never forwarded to the client. */
export const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
]);

export class ResponseParser {
  private state = State.Head;
  private pending: Buffer | undefined;
  private remaining = 0;
  private readonly chunked = new ChunkedDecoder();
  private readonly onChunk = (chunk: Buffer) => this.cb?.onBody(chunk);
  private keepAlive = true;
  private noBody = false;
  private cb: ResponseCallbacks | undefined;
  /** True once any byte of a response arrived for the current exchange. */
  started = false;

  constructor(private readonly maxHeadBytes = 65536) {}

  /** Prepares for the response to the next request. */
  reset(cb: ResponseCallbacks, requestMethod: string): void {
    this.cb = cb;
    this.state = State.Head;
    this.pending = undefined;
    this.started = false;
    this.noBody = requestMethod === 'HEAD';
  }

  get done(): boolean {
    return this.state === State.Done;
  }

  /** Read-until-close body: the peer closed, which ends the response. */
  finishOnClose(): boolean {
    if (this.state === State.UntilClose) {
      this.state = State.Done;
      this.cb?.onEnd(false);
      return true;
    }
    return false;
  }

  /** Feeds bytes; throws ParseError on a malformed response or on bytes after its end. */
  execute(data: Buffer): void {
    if (data.length > 0) this.started = true;
    let off = 0;
    while (off < data.length) {
      switch (this.state) {
        case State.Head:
          off = this.readHead(data, off);
          break;
        case State.Fixed: {
          const n = Math.min(this.remaining, data.length - off);
          const chunk = off === 0 && n === data.length ? data : data.subarray(off, off + n);
          off += n;
          this.remaining -= n;
          this.cb?.onBody(chunk);
          if (this.remaining === 0) this.finish();
          break;
        }
        case State.Chunked:
          try {
            off = this.chunked.decode(data, off, this.onChunk);
          } catch (err) {
            throw new ParseError((err as Error).message);
          }
          if (this.chunked.done) this.finish();
          break;
        case State.UntilClose:
          this.cb?.onBody(off === 0 ? data : data.subarray(off));
          off = data.length;
          break;
        case State.Done:
          throw new ParseError('bytes after the end of the response');
      }
    }
  }

  private finish(): void {
    this.state = State.Done;
    this.cb?.onEnd(this.keepAlive);
  }

  private readHead(data: Buffer, off: number): number {
    const pending = this.pending;
    if (pending === undefined) {
      const end = data.indexOf(CRLFCRLF, off);
      if (end === -1) {
        this.pending = Buffer.from(data.subarray(off));
        if (this.pending.length > this.maxHeadBytes) throw new ParseError('response head too large');
        return data.length;
      }
      if (end + 4 - off > this.maxHeadBytes) throw new ParseError('response head too large');
      this.parseHead(data.toString('latin1', off, end));
      return end + 4;
    }
    const buf = Buffer.concat([pending, data.subarray(off)]);
    const end = buf.indexOf(CRLFCRLF, Math.max(0, pending.length - 3));
    if (end === -1) {
      this.pending = buf;
      if (buf.length > this.maxHeadBytes) throw new ParseError('response head too large');
      return data.length;
    }
    if (end + 4 > this.maxHeadBytes) throw new ParseError('response head too large');
    this.pending = undefined;
    this.parseHead(buf.toString('latin1', 0, end));
    return off + (end + 4 - pending.length);
  }

  private parseHead(text: string): void {
    const lines = text.split('\r\n');
    const status = lines[0] ?? '';
    const m = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: (.*))?$/.exec(status);
    if (!m) throw new ParseError('malformed status line');
    const minor = m[1];
    const statusCode = Number(m[2]);
    const statusMessage = m[3] ?? '';
    let connectionTokens: string[] = [];
    let contentLength = -1;
    let chunked = false;
    let hasTE = false;
    const headers: string[] = [];
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] as string;
      const colon = line.indexOf(':');
      if (colon <= 0) throw new ParseError('malformed header line');
      const name = line.slice(0, colon);
      if (!TOKEN.test(name)) throw new ParseError('malformed header name');
      const value = trimOws(line.slice(colon + 1));
      if (!FIELD_VALUE.test(value)) throw new ParseError('invalid header value');
      const lower = name.toLowerCase();
      if (lower === 'content-length') {
        if (!/^\d{1,15}$/.test(value)) throw new ParseError('invalid content-length');
        const n = Number(value);
        if (contentLength !== -1 && contentLength !== n) throw new ParseError('conflicting content-length');
        contentLength = n;
      } else if (lower === 'transfer-encoding') {
        hasTE = true;
        const codings = value.toLowerCase().split(',');
        chunked = codings[codings.length - 1]?.trim() === 'chunked';
      } else if (lower === 'connection') {
        connectionTokens = connectionTokens.concat(
          value
            .toLowerCase()
            .split(',')
            .map((t) => t.trim()),
        );
      }
      if (!HOP_BY_HOP.has(lower)) headers.push(name, value);
    }
    if (hasTE && contentLength !== -1) throw new ParseError('both content-length and transfer-encoding');
    // RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing;
    // the body is read as sent, and the connection is never reused.
    const faulty1_0 = hasTE && minor === '0';
    if (statusCode < 200) {
      if (statusCode === 101) throw new ParseError('unexpected 101 on a non-upgrade request');
      // 1xx interim response: skip it and read the final one.
      return;
    }
    let filtered = headers;
    if (connectionTokens.length > 0) {
      const drop = new Set(connectionTokens);
      filtered = [];
      for (let i = 0; i < headers.length; i += 2) {
        if (!drop.has((headers[i] as string).toLowerCase()))
          filtered.push(headers[i] as string, headers[i + 1] as string);
      }
    }
    this.keepAlive =
      !faulty1_0 &&
      (minor === '1' ? !connectionTokens.includes('close') : connectionTokens.includes('keep-alive'));
    const head: ResponseHead = {
      framing: 'length',
      statusCode,
      statusMessage,
      headers: filtered,
      keepAlive: this.keepAlive,
      contentLength,
    };
    if (this.noBody || statusCode === 204 || statusCode === 304) {
      head.framing = 'none';
      this.cb?.onHead(head);
      this.finish();
    } else if (hasTE) {
      head.framing = chunked ? 'chunked' : 'close';
      if (!chunked) head.keepAlive = false;
      this.cb?.onHead(head);
      if (chunked) {
        this.chunked.reset();
        this.state = State.Chunked;
      } else {
        this.keepAlive = false;
        this.state = State.UntilClose;
      }
    } else if (contentLength >= 0) {
      this.cb?.onHead(head);
      if (contentLength === 0) this.finish();
      else {
        this.remaining = contentLength;
        this.state = State.Fixed;
      }
    } else {
      this.keepAlive = false;
      head.keepAlive = false;
      head.framing = 'close';
      this.cb?.onHead(head);
      this.state = State.UntilClose;
    }
  }
}
