/**
 * The JSON body reader of the public routes: the common case of express.json read
 * without its packages (body-parser, raw-body, type-is, iconv-lite, about 6% of the
 * shard's main thread under a load of posts). It takes a body sent as
 * `application/json` (with `charset=utf-8` or none), with a Content-Length between 1 and
 * the limit and no Content-Encoding; anything else goes to express.json (`fallback`),
 * which answers it as before. What it takes it answers as express.json would with the
 * same options (strict, verifyText): the same `req.body`, or an error of the same
 * `type` (errors.ts answers it), a leading byte order mark dropped.
 * test/unit/shard/api/json-body.test.ts holds the two to the same outcomes.
 */
import type { IncomingMessage } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { decodeText } from './errors.js';

/** Content-Type values taken, lower-cased; every other one goes to express.json. */
const TAKEN = new Set([
  'application/json',
  'application/json; charset=utf-8',
  'application/json;charset=utf-8',
]);

/** JSON's whitespace (RFC 8259), which may come before the first value. */
const isJsonSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

/** A syntax error as body-parser's: status 400, type `entity.parse.failed`. */
function parseFailed(message: string): Error {
  return Object.assign(new SyntaxError(message), {
    status: 400,
    statusCode: 400,
    type: 'entity.parse.failed',
  });
}

/** The value of a JSON text, strict (an object or an array), `{}` for an empty body. */
function parseStrict(text: string): unknown {
  let i = 0;
  while (i < text.length && isJsonSpace(text.charCodeAt(i))) i++;
  if (i === text.length) {
    if (text.length === 0) return {};
    throw parseFailed('Unexpected end of JSON input');
  }
  const first = text.charCodeAt(i);
  if (first !== 0x7b && first !== 0x5b) throw parseFailed(`Unexpected token in JSON at position ${i}`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw parseFailed((e as Error).message);
  }
}

export function jsonBodyReader(o: { limit: number; fallback: RequestHandler }): RequestHandler {
  return (req: Request, res: Response, next: NextFunction): void => {
    const h = req.headers;
    const type = h['content-type'];
    const length = h['content-length'];
    if (
      type === undefined ||
      length === undefined ||
      h['content-encoding'] !== undefined ||
      h['transfer-encoding'] !== undefined ||
      !TAKEN.has(type.toLowerCase())
    ) {
      o.fallback(req, res, next);
      return;
    }
    // Node has checked the header: digits only (llhttp refuses anything else).
    const n = Number(length);
    if (!(n >= 1 && n <= o.limit)) {
      o.fallback(req, res, next);
      return;
    }
    readBody(req, n, (err, buf) => {
      if (err) {
        next(err);
        return;
      }
      try {
        req.body = parseStrict(decodeText(buf as Buffer, 'utf-8'));
      } catch (e) {
        next(e);
        return;
      }
      next();
    });
  };
}

/** The body's `length` bytes; an error when the request ends early (the client went away). */
function readBody(
  req: IncomingMessage,
  length: number,
  done: (err: Error | null, buf?: Buffer) => void,
): void {
  const chunks: Buffer[] = [];
  let got = 0;
  const onData = (c: Buffer): void => {
    chunks.push(c);
    got += c.length;
  };
  const onEnd = (): void => {
    cleanup();
    if (got !== length) {
      done(
        Object.assign(new Error('request size did not match content length'), {
          status: 400,
          type: 'request.size.invalid',
        }),
      );
      return;
    }
    done(null, chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, got));
  };
  const onGone = (): void => {
    cleanup();
    done(Object.assign(new Error('request aborted'), { status: 400, type: 'request.aborted' }));
  };
  const cleanup = (): void => {
    req.off('data', onData);
    req.off('end', onEnd);
    req.off('error', onGone);
    req.off('close', onGone);
  };
  req.on('data', onData);
  req.on('end', onEnd);
  req.on('error', onGone);
  req.on('close', onGone);
}
