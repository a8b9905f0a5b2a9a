/** Errors the shard answers with: `{error: {code, message}}` and a fitting status. */
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
