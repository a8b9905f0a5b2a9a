/**
 * Reading a request's input on the public API: async handlers that reach the error
 * handler, and the query parameters and JSON body fields every route checks the same
 * way (a clear 400 or 415, never a partial write).
 */
import type { NextFunction, Request, Response } from 'express';
import { ApiError, badRequest } from '../../common/http-answers.js';

export type Handler = (req: Request, res: Response) => Promise<void> | void;

/** Wraps an async handler so that rejections reach the error handler. */
export const route =
  (fn: Handler) =>
  (req: Request, res: Response, next: NextFunction): void => {
    Promise.resolve(fn(req, res)).catch(next);
  };

export function intParam(q: unknown, name: string, min: number, max: number, dflt: number): number {
  if (q === undefined) return dflt;
  if (typeof q !== 'string' || !/^\d{1,15}$/.test(q))
    throw badRequest('bad_parameter', `${name} must be a whole number`);
  const n = Number(q);
  if (n < min || n > max) throw badRequest('bad_parameter', `${name} must be between ${min} and ${max}`);
  return n;
}

export function stringField(
  body: Record<string, unknown>,
  name: string,
  maxBytes: number,
  required: boolean,
): string | null {
  const v = body[name];
  if (v === undefined || v === null) {
    if (required) throw badRequest('bad_field', `${name} is required`);
    return null;
  }
  if (typeof v !== 'string') throw badRequest('bad_field', `${name} must be a string`);
  if (required && v.trim() === '') throw badRequest('bad_field', `${name} must not be empty`);
  if (Buffer.byteLength(v) > maxBytes)
    throw badRequest('bad_field', `${name} is longer than ${maxBytes} bytes`);
  return v;
}

export function jsonBody(req: { body?: unknown }): Record<string, unknown> {
  const b: unknown = req.body;
  if (b === undefined) {
    throw new ApiError(415, 'unsupported_media_type', 'send the body as application/json');
  }
  if (typeof b !== 'object' || b === null || Array.isArray(b))
    throw badRequest('bad_body', 'the body must be a JSON object');
  return b as Record<string, unknown>;
}
