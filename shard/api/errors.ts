/**
 * How the shard answers errors: `{error: {code, message}}` with a fitting status
 * (docs/architecture.md section 4). `answerOf` is the one mapping from what handlers
 * throw to an answer, used by the public routes, the internal routes and WebSocket
 * upgrades alike; anything it does not know is a 500, logged.
 */
import { TextDecoder } from 'node:util';
import type { NextFunction, Request, Response } from 'express';
import { ApiError, type ErrorAnswer, errorBody } from '../../common/http-answers.js';
import { StorageError } from '../storage/errors.js';

/** The `type` of the error `verifyText` throws (body-parser keeps it). */
const INVALID_TEXT = 'encoding.invalid_text';

/** The answer to a known error, or undefined (then: 500, and the error is logged). */
export function answerOf(err: unknown): ErrorAnswer | undefined {
  if (err instanceof ApiError) return err;
  if (err instanceof StorageError) {
    // A group that vanished under an append is gone (404); disk trouble is temporary (503).
    if (err.code === 'no_group') return { status: 404, code: 'no_group', message: err.message };
    return { status: 503, code: err.code, message: err.message, headers: { 'retry-after': '5' } };
  }
  const e = err as { type?: string; status?: number; message?: string } | undefined;
  switch (e?.type) {
    case 'entity.too.large':
      return { status: 413, code: 'body_too_large', message: 'the request body is too large' };
    case INVALID_TEXT:
      return {
        status: 400,
        code: 'malformed_json',
        message: e.message ?? 'the request body is not well-formed text',
      };
    case 'entity.parse.failed':
      return { status: 400, code: 'malformed_json', message: 'the request body is not valid JSON' };
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return { status: 415, code: 'unsupported_encoding', message: e.message ?? 'unsupported encoding' };
  }
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500)
    return { status: e.status, code: 'bad_request', message: e.message ?? 'bad request' };
  return undefined;
}

const INTERNAL: ErrorAnswer = { status: 500, code: 'internal', message: 'internal error' };

/** The answer to any error: unknown ones are logged and answered 500. */
export function answerOrLog(
  err: unknown,
  log: { error(o: object, m: string): void },
  what: string,
): ErrorAnswer {
  const a = answerOf(err);
  if (a) return a;
  log.error({ err: (err as Error)?.stack ?? String(err) }, what);
  return INTERNAL;
}

export function sendError(res: Response, e: ErrorAnswer): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res
    .status(e.status)
    .set({ 'cache-control': 'no-store', ...e.headers })
    .json(errorBody(e));
}

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
  decodeText(buf, l);
}

/**
 * `buf` as text in `label` (utf-8, utf-16le or utf-16be), a leading byte order mark
 * dropped (as iconv-lite does for express.json); throws when it is not well-formed.
 */
export function decodeText(buf: Uint8Array, label: 'utf-8' | 'utf-16le' | 'utf-16be'): string {
  try {
    return decoder(label).decode(buf);
  } catch {
    throw Object.assign(new Error(`the request body is not valid ${label.toUpperCase()} (malformed bytes)`), {
      type: INVALID_TEXT,
    });
  }
}

/**
 * express.json `verify`: refuses a body that is not well-formed in its charset (UTF-8 by
 * default). Without it, the decoder replaces malformed bytes with U+FFFD and the changed
 * text would be stored silently. Answered 400 `malformed_json`.
 */
export function verifyText(_req: unknown, _res: unknown, buf: Buffer, encoding: string | null): void {
  checkText(buf, encoding ?? 'utf-8');
}

/** Express error handler: every error becomes a JSON answer; unexpected ones are 500 and logged. */
export function errorHandler(log: { error(o: object, m: string): void }) {
  return (err: unknown, _req: Request, res: Response, _next: NextFunction): void => {
    sendError(res, answerOrLog(err, log, 'unexpected error'));
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
          sendError(res, { status: 404, code: 'not_found', message: `no route ${req.method} ${target}` });
        } else {
          onError(err, req, res, () => undefined);
        }
      } catch (e) {
        log.error({ err: (e as Error)?.stack ?? String(e) }, 'could not answer a request');
        res.destroy();
      }
    };
}
