/**
 * A strict parser for HTTP/1.1 request heads (RFC 9112), for the router's own client
 * connections. It refuses every shape that two parsers could read differently
 * (request smuggling): both Content-Length and Transfer-Encoding, repeated (even
 * identical) or listed Content-Lengths, a transfer coding other than a single `chunked`, folded or
 * malformed header lines, whitespace before the colon, control characters, a missing
 * or repeated Host.
 */

import {
  addConnectionTokens,
  decimalOf,
  fieldNameEnd,
  isFieldValue,
  isToken,
  isVisibleAscii,
  skipOws,
  tokenIs,
  trimOws,
  trimOwsEnd,
} from './http-chars.js';

export interface ParsedRequest {
  method: string;
  /** The request target exactly as sent. */
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  /** Raw headers as [name, value, name, value, ...] in the order received. */
  headers: string[];
  /** -1 when absent. */
  contentLength: number;
  chunked: boolean;
  /** The client keeps the connection open after this exchange. */
  keepAlive: boolean;
  /** Lower-cased tokens of the Connection header. */
  connectionTokens: string[];
  /** The Upgrade header when Connection names `upgrade`, lower-cased. */
  upgrade: string | undefined;
}

export class RequestError extends Error {
  override name = 'RequestError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function bad(message: string): RequestError {
  return new RequestError(400, 'bad_request', message);
}

/** Parses a request head: the text before the blank line, decoded as latin1. */
export function parseRequestHead(text: string, maxHeaders: number): ParsedRequest {
  const firstEnd = text.indexOf('\r\n');
  const requestLine = firstEnd === -1 ? text : text.slice(0, firstEnd);
  const sp1 = requestLine.indexOf(' ');
  const sp2 = requestLine.lastIndexOf(' ');
  if (sp1 <= 0 || sp2 === sp1) throw bad('malformed request line');
  const method = requestLine.slice(0, sp1);
  const target = requestLine.slice(sp1 + 1, sp2);
  const version = requestLine.slice(sp2 + 1);
  if (!isToken(method, 0, method.length)) throw bad('malformed method');
  if (!isVisibleAscii(target, 0, target.length)) throw bad('malformed request target');
  let minor: number;
  if (version === 'HTTP/1.1') minor = 1;
  else if (version === 'HTTP/1.0') minor = 0;
  else if (/^HTTP\/\d\.\d$/.test(version)) {
    throw new RequestError(505, 'http_version_not_supported', `${version} is not supported; use HTTP/1.1`);
  } else throw bad('malformed HTTP version');
  if (method === 'CONNECT') throw new RequestError(405, 'method_not_allowed', 'CONNECT is not supported');
  const c0 = target.charCodeAt(0);
  if (
    c0 !== 47 /* / */ &&
    !(target === '*' && method === 'OPTIONS') &&
    !/^https?:\/\/[^/?#]+/i.test(target)
  ) {
    throw bad('malformed request target');
  }

  const headers: string[] = [];
  let contentLength = -1;
  let teCount = 0;
  let chunked = false;
  let hostCount = 0;
  const connectionTokens: string[] = [];
  let upgradeValue: string | undefined;
  let pos = firstEnd === -1 ? text.length : firstEnd + 2;
  const len = text.length;
  while (pos < len) {
    let end = text.indexOf('\r\n', pos);
    if (end === -1) end = len;
    const at = pos;
    pos = end + 2;
    if (headers.length >= maxHeaders * 2) {
      throw new RequestError(431, 'headers_too_large', `more than ${maxHeaders} header fields`);
    }
    const c = text.charCodeAt(at);
    if (c === 32 || c === 9) throw bad('folded header line (obs-fold) is not allowed');
    const colon = fieldNameEnd(text, at, end);
    if (colon < 0) throw bad(colon === -1 ? 'malformed header line' : 'malformed header name');
    const name = text.slice(at, colon);
    const vStart = skipOws(text, colon + 1, end);
    const vEnd = trimOwsEnd(text, vStart, end);
    if (!isFieldValue(text, vStart, vEnd)) throw bad(`invalid characters in header ${name}`);
    const value = text.slice(vStart, vEnd);
    switch (colon - at) {
      case 4:
        if (tokenIs(text, at, 'host')) hostCount++;
        break;
      case 7:
        if (tokenIs(text, at, 'upgrade')) upgradeValue = value.toLowerCase();
        break;
      case 10:
        if (tokenIs(text, at, 'connection')) addConnectionTokens(connectionTokens, text, vStart, vEnd);
        break;
      case 14:
        if (tokenIs(text, at, 'content-length')) {
          const n = decimalOf(text, vStart, vEnd);
          if (n === -1) throw bad('invalid Content-Length');
          if (contentLength !== -1 && contentLength !== n) throw bad('conflicting Content-Length headers');
          // Even an identical one: nginx refuses it too, and a single framing header leaves no doubt.
          if (contentLength !== -1) throw bad('repeated Content-Length header');
          contentLength = n;
        }
        break;
      case 17:
        if (tokenIs(text, at, 'transfer-encoding')) {
          teCount++;
          const codings = value.toLowerCase().split(',');
          // RFC 9112 section 6.3: a request whose final coding is not chunked cannot be framed.
          if (trimOws(codings[codings.length - 1] as string) !== 'chunked') {
            throw bad('chunked must be the final transfer coding of a request');
          }
          if (codings.length > 1) {
            throw new RequestError(
              501,
              'transfer_encoding_not_supported',
              'only Transfer-Encoding: chunked is supported',
            );
          }
          chunked = true;
        }
        break;
    }
    headers.push(name, value);
  }
  if (teCount > 1) throw bad('repeated Transfer-Encoding header');
  if (chunked && contentLength !== -1) throw bad('both Content-Length and Transfer-Encoding');
  if (chunked && minor === 0) throw bad('Transfer-Encoding in an HTTP/1.0 request');
  if (minor === 1 && hostCount !== 1)
    throw bad(hostCount === 0 ? 'missing Host header' : 'repeated Host header');
  if (hostCount > 1) throw bad('repeated Host header');
  const keepAlive =
    minor === 1 ? !connectionTokens.includes('close') : connectionTokens.includes('keep-alive');
  const upgrade = connectionTokens.includes('upgrade') ? upgradeValue : undefined;
  return { method, target, minor, headers, contentLength, chunked, keepAlive, connectionTokens, upgrade };
}

/** The value of a header (first occurrence), by lower-case name. */
export function headerValue(req: ParsedRequest, lowerName: string): string | undefined {
  const h = req.headers;
  const len = lowerName.length;
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i] as string;
    if (name.length === len && name.toLowerCase() === lowerName) return h[i + 1];
  }
  return undefined;
}
