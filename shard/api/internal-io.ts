/**
 * Reading internal calls (`/internal/*` on the admin port): a bounded, well-formed UTF-8
 * JSON object body checked against its zod schema, path segments and query integers,
 * each refused with a 4xx that names what is wrong.
 */
import type http from 'node:http';
import type { z } from 'zod';
import { ApiError, badRequest } from '../../common/http-answers.js';
import { checkText } from './errors.js';

/** A body checked against its schema: 400 `bad_field` naming the first wrong field. */
export function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue?.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('') ?? '';
  throw badRequest('bad_field', `${where.replace(/^\./, '') || 'body'}: ${issue?.message ?? 'invalid'}`);
}

export function readJson(req: http.IncomingMessage, max: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > max) {
        failed = true;
        reject(new ApiError(413, 'body_too_large', 'the request body is too large'));
        return;
      }
      chunks.push(c);
    });
    req.on('error', (err) => {
      if (!failed) {
        failed = true;
        reject(err);
      }
    });
    req.on('end', () => {
      if (failed) return;
      const body = Buffer.concat(chunks);
      try {
        // Malformed UTF-8 is refused, never decoded to U+FFFD and stored.
        checkText(body, 'utf-8');
      } catch (err) {
        reject(new ApiError(400, 'malformed_json', (err as Error).message));
        return;
      }
      let v: unknown;
      try {
        v = JSON.parse(body.toString('utf8'));
      } catch {
        reject(new ApiError(400, 'malformed_json', 'the request body is not valid JSON'));
        return;
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        reject(new ApiError(400, 'bad_body', 'the request body must be a JSON object'));
        return;
      }
      resolve(v);
    });
  });
}

export function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new ApiError(400, 'bad_id', 'malformed percent-encoding in the path');
  }
}

export function queryInt(q: URLSearchParams, name: string, min: number, max: number, dflt: number): number {
  const v = q.get(name);
  if (v === null) return dflt;
  if (!/^\d{1,15}$/.test(v)) throw new ApiError(400, 'bad_parameter', `${name} must be a whole number`);
  const n = Number(v);
  if (n < min || n > max)
    throw new ApiError(400, 'bad_parameter', `${name} must be between ${min} and ${max}`);
  return n;
}
