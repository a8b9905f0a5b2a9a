/**
 * An incremental, strict HTTP/1.1 response parser for the router's upstream
 * connections. It hands the head and the de-framed body to callbacks and says whether
 * the connection may be reused. Anything ambiguous (conflicting framing, folded or
 * malformed header lines, oversized heads, bad chunk sizes) is an error: the
 * connection is then closed, never reused.
 */
import { MAP_HEADER } from '../common/protocol.js';
import { ChunkedDecoder } from './chunked.js';
import {
  addConnectionTokens,
  decimalOf,
  fieldNameEnd,
  isFieldValue,
  skipOws,
  tokenIs,
  trimOws,
  trimOwsEnd,
} from './http-chars.js';

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
  /** The shard map the shard serves by (`x-shardchat-map`, forwarded as well), when it sent one. */
  map?: string;
}

export interface ResponseCallbacks {
  onHead(head: ResponseHead): void;
  onBody(chunk: Buffer): void;
  onEnd(reusable: boolean): void;
  /** A 101 to an upgrade request (see reset): the bytes after its head belong to the new protocol. */
  onUpgrade?(head: ResponseHead): void;
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

/** HOP_BY_HOP by name length, for hopByHopAt. */
const HOP_BY_HOP_BY_LENGTH: Array<string[] | undefined> = [];
for (const h of HOP_BY_HOP) {
  const same = HOP_BY_HOP_BY_LENGTH[h.length] ?? [];
  same.push(h);
  HOP_BY_HOP_BY_LENGTH[h.length] = same;
}

/** Whether the header name text[at, at + length) (tchars) is hop-by-hop, in any case. */
function hopByHopAt(text: string, at: number, length: number): boolean {
  const names = HOP_BY_HOP_BY_LENGTH[length];
  if (names === undefined) return false;
  for (const h of names) if (tokenIs(text, at, h)) return true;
  return false;
}

const HTTP_1 = 'HTTP/1.';

/**
 * The status code of the status line text[0, eol): `HTTP/1.<0|1> <100-999>` and, after a
 * space, a reason phrase without CR or LF.
 */
function statusCodeOf(text: string, eol: number): number {
  const minor = text.charCodeAt(7);
  const d0 = text.charCodeAt(9) - 48;
  const d1 = text.charCodeAt(10) - 48;
  const d2 = text.charCodeAt(11) - 48;
  if (
    eol < 12 ||
    !text.startsWith(HTTP_1) ||
    (minor !== 48 && minor !== 49) ||
    text.charCodeAt(8) !== 32 ||
    !(d0 >= 1 && d0 <= 9 && d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9) ||
    (eol > 12 && text.charCodeAt(12) !== 32)
  ) {
    throw new ParseError('malformed status line');
  }
  for (let i = 13; i < eol; i++) {
    const c = text.charCodeAt(i);
    if (c === 13 || c === 10) throw new ParseError('malformed status line');
  }
  return d0 * 100 + d1 * 10 + d2;
}

export class ResponseParser {
  private state = State.Head;
  private pending: Buffer | undefined;
  private remaining = 0;
  private readonly chunked = new ChunkedDecoder();
  private readonly onChunk = (chunk: Buffer) => this.cb?.onBody(chunk);
  private keepAlive = true;
  private noBody = false;
  private expectUpgrade = false;
  private cb: ResponseCallbacks | undefined;
  /** True once any byte of a response arrived for the current exchange. */
  started = false;

  constructor(private readonly maxHeadBytes = 65536) {}

  /**
   * Prepares for the response to the next request. With `upgrade` (a WebSocket upgrade
   * request), a 101 ends the exchange (onUpgrade) instead of being an error.
   */
  reset(cb: ResponseCallbacks, requestMethod: string, upgrade = false): void {
    this.cb = cb;
    this.state = State.Head;
    this.pending = undefined;
    this.started = false;
    this.noBody = requestMethod === 'HEAD';
    this.expectUpgrade = upgrade;
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
    if (this.consume(data) < data.length) throw new ParseError('bytes after the end of the response');
  }

  /**
   * Feeds bytes up to the end of the response (or of a 101's head) and returns how many
   * it used: fewer than `data.length` means the upstream sent bytes beyond the response
   * the router asked for. Throws ParseError on a malformed response.
   */
  consume(data: Buffer): number {
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
          return off;
      }
    }
    return off;
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
    let eol = text.indexOf('\r\n');
    if (eol === -1) eol = text.length;
    const statusCode = statusCodeOf(text, eol);
    const minor = text.charCodeAt(7) - 48;
    const statusMessage = eol > 13 ? text.slice(13, eol) : '';
    let connectionTokens: string[] | undefined;
    let contentLength = -1;
    let chunked = false;
    let hasTE = false;
    let map: string | undefined;
    const headers: string[] = [];
    let pos = eol + 2;
    const len = text.length;
    while (pos < len) {
      let end = text.indexOf('\r\n', pos);
      if (end === -1) end = len;
      const colon = fieldNameEnd(text, pos, end);
      if (colon < 0) throw new ParseError(colon === -1 ? 'malformed header line' : 'malformed header name');
      const vStart = skipOws(text, colon + 1, end);
      const vEnd = trimOwsEnd(text, vStart, end);
      if (!isFieldValue(text, vStart, vEnd)) throw new ParseError('invalid header value');
      const nameLength = colon - pos;
      const at = pos;
      pos = end + 2;
      // Only names of the lengths of framing and hop-by-hop headers need a closer look.
      switch (nameLength) {
        case 14:
          if (tokenIs(text, at, 'content-length')) {
            const n = decimalOf(text, vStart, vEnd);
            if (n === -1) throw new ParseError('invalid content-length');
            if (contentLength !== -1 && contentLength !== n)
              throw new ParseError('conflicting content-length');
            contentLength = n;
          }
          break;
        case 17:
          if (tokenIs(text, at, 'transfer-encoding')) {
            hasTE = true;
            const codings = text.slice(vStart, vEnd).toLowerCase().split(',');
            chunked = trimOws(codings[codings.length - 1] as string) === 'chunked';
            continue;
          }
          break;
        case 15:
          if (tokenIs(text, at, MAP_HEADER)) map = text.slice(vStart, vEnd);
          break;
        case 10:
          if (tokenIs(text, at, 'connection')) {
            connectionTokens ??= [];
            addConnectionTokens(connectionTokens, text, vStart, vEnd);
            continue;
          }
          break;
      }
      if (hopByHopAt(text, at, nameLength)) continue;
      headers.push(text.slice(at, colon), text.slice(vStart, vEnd));
    }
    if (hasTE && contentLength !== -1) throw new ParseError('both content-length and transfer-encoding');
    // RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing;
    // the body is read as sent, and the connection is never reused.
    const faulty1_0 = hasTE && minor === 0;
    if (statusCode === 101 && this.expectUpgrade) {
      this.state = State.Done;
      this.cb?.onUpgrade?.({
        framing: 'none',
        statusCode,
        statusMessage,
        headers,
        keepAlive: false,
        contentLength: -1,
        map,
      });
      return;
    }
    if (statusCode < 200) {
      if (statusCode === 101) throw new ParseError('unexpected 101 on a non-upgrade request');
      // 1xx interim response: skip it and read the final one.
      return;
    }
    let filtered = headers;
    // Headers the Connection header names are hop-by-hop too (keep-alive and close name none).
    if (connectionTokens?.some((t) => t !== 'keep-alive' && t !== 'close')) {
      const named = connectionTokens.filter((t) => t !== 'keep-alive' && t !== 'close');
      filtered = [];
      for (let i = 0; i < headers.length; i += 2) {
        if (!named.includes((headers[i] as string).toLowerCase()))
          filtered.push(headers[i] as string, headers[i + 1] as string);
      }
    }
    const tokens = connectionTokens ?? [];
    this.keepAlive = !faulty1_0 && (minor === 1 ? !tokens.includes('close') : tokens.includes('keep-alive'));
    const head: ResponseHead = {
      framing: 'length',
      statusCode,
      statusMessage,
      headers: filtered,
      keepAlive: this.keepAlive,
      contentLength,
      map,
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
