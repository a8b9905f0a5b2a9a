/** Errors the shard answers with: `{error: {code, message}}` and a fitting status. */
import { TextDecoder } from 'node:util';
import type { NextFunction, Request, Response } from 'express';
import { StorageError } from './store.js';

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (code: string, message: string) => new ApiError(400, code, message);
export const forbidden = (message: string) => new ApiError(403, 'forbidden', message);
export const notFound = (what: string) => new ApiError(404, 'not_found', `${what} does not exist`);

export function sendError(
  res: Response,
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res
    .status(status)
    .set({ 'cache-control': 'no-store', ...headers })
    .json({ error: { code, message } });
}

/** The `type` of the error `verifyText` throws (body-parser keeps it). */
const INVALID_TEXT = 'encoding.invalid_text';

const decoders = new Map<string, TextDecoder>();
const decoder = (label: string): TextDecoder => {
  let d = decoders.get(label);
  if (!d) {
    d = new TextDecoder(label, { fatal: true });
    decoders.set(label, d);
  }
  return d;
};

/** Throws when `buf` is not well-formed in `label` (utf-8, utf-16le, utf-16be; others are not checked). */
export function checkText(buf: Uint8Array, label: string): void {
  let l = label.toLowerCase();
  if (l === 'utf8') l = 'utf-8';
  // UTF-16 without an order: a BOM tells it, else little-endian (as iconv-lite decodes it).
  if (l === 'utf-16') l = buf[0] === 0xfe && buf[1] === 0xff ? 'utf-16be' : 'utf-16le';
  if (l !== 'utf-8' && l !== 'utf-16le' && l !== 'utf-16be') return;
  try {
    decoder(l).decode(buf);
  } catch {
    throw Object.assign(new Error(`the request body is not valid ${l.toUpperCase()} (malformed bytes)`), {
      type: INVALID_TEXT,
    });
  }
}

/**
 * express.json `verify`: refuses a body that is not well-formed in its charset (UTF-8 by
 * default). Without it, the decoder replaces malformed bytes with U+FFFD and the changed
 * text would be stored silently. Answered 400 `malformed_json` by `errorHandler`.
 */
export function verifyText(_req: unknown, _res: unknown, buf: Buffer, encoding: string | null): void {
  checkText(buf, encoding ?? 'utf-8');
}

/** Express error handler: every error becomes a JSON answer; unexpected ones are 500 and logged. */
export function errorHandler(log: { error(o: object, m: string): void }) {
  return (err: unknown, _req: Request, res: Response, _next: NextFunction): void => {
    if (err instanceof ApiError) {
      sendError(res, err.status, err.code, err.message, err.headers);
      return;
    }
    if (err instanceof StorageError) {
      const status = err.code === 'no_group' ? 404 : 503;
      sendError(res, status, err.code, err.message, status === 503 ? { 'retry-after': '5' } : {});
      return;
    }
    const e = err as { type?: string; status?: number; message?: string };
    if (e.type === 'entity.too.large') {
      sendError(res, 413, 'body_too_large', 'the request body is too large');
      return;
    }
    if (e.type === INVALID_TEXT) {
      sendError(res, 400, 'malformed_json', e.message ?? 'the request body is not well-formed text');
      return;
    }
    if (e.type === 'entity.parse.failed') {
      sendError(res, 400, 'malformed_json', 'the request body is not valid JSON');
      return;
    }
    if (e.type === 'encoding.unsupported' || e.type === 'charset.unsupported') {
      sendError(res, 415, 'unsupported_encoding', e.message ?? 'unsupported encoding');
      return;
    }
    if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
      sendError(res, e.status, 'bad_request', e.message ?? 'bad request');
      return;
    }
    log.error({ err: (err as Error)?.stack ?? String(err) }, 'unexpected error');
    sendError(res, 500, 'internal', 'internal error');
  };
}

/**
 * The callback Express calls when no middleware answered a request (`app(req, res,
 * done)`): a JSON 404 when nothing matched, the JSON error when an error got past
 * `errorHandler`. Express's own final handler would send an HTML page instead. This also
 * covers the targets Express cannot route at all (`//a#@b/...`, whose path `parseurl`
 * reads as null): the router hands those straight to this callback, skipping every
 * middleware.
 */
export function finalHandler(log: { error(o: object, m: string): void }) {
  const onError = errorHandler(log);
  return (req: Request, res: Response) =>
    (err?: unknown): void => {
      try {
        // Already answered in full (a handler that went on to next()): nothing to add.
        if (res.writableEnded) return;
        if (err === undefined || err === null || err === 'route' || err === 'router') {
          const target = (req.url ?? '').slice(0, 200);
          sendError(res, 404, 'not_found', `no route ${req.method} ${target}`);
        } else {
          onError(err, req, res, () => undefined);
        }
      } catch (e) {
        log.error({ err: (e as Error)?.stack ?? String(e) }, 'could not answer a request');
        res.destroy();
      }
    };
}
