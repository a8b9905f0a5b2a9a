/**
 * The public routes' JSON body reader (shard/api/json-body.ts) against express.json with
 * the options it stands in for: the same requests, over loopback, to a server that reads
 * each body once with each, and the outcomes compared (`req.body`, or the answer
 * errors.ts gives to the error). Generated bodies (JSON values, bytes, malformed UTF-8,
 * byte order marks, whitespace, truncations) under generated types and lengths around
 * the limit; then the cases the reader must hand to express.json.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { answerOf, verifyText } from '../../../../shard/api/errors.js';
import { jsonBodyReader } from '../../../../shard/api/json-body.js';

const LIMIT = 96;

const full = express.json({
  limit: LIMIT,
  strict: true,
  type: ['application/json', 'application/*+json'],
  verify: verifyText,
});
/** How often the reader handed a request to express.json. */
let fellBack = 0;
const fast = jsonBodyReader({
  limit: LIMIT,
  fallback: (req, res, next) => {
    fellBack++;
    full(req, res, next);
  },
});

/** The outcome of one reader: the body it set, or the answer to its error. */
function outcome(reader: RequestHandler) {
  return (req: Request, res: Response): void => {
    const done: NextFunction = (err?: unknown) => {
      const a = err === undefined ? undefined : answerOf(err);
      res.json({
        body: req.body === undefined ? '(undefined)' : req.body,
        error: err === undefined ? null : a ? { status: a.status, code: a.code } : String(err),
      });
    };
    reader(req, res, done);
  };
}

let base = '';
let server: http.Server;

beforeAll(async () => {
  const app = express();
  app.post('/fast', outcome(fast));
  app.post('/full', outcome(full));
  server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

interface Sent {
  headers: Record<string, string>;
  body: Uint8Array;
}

function send(path: string, s: Sent): Promise<unknown> {
  const [host, port] = base.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host,
        port: Number(port),
        path,
        method: 'POST',
        headers: { ...s.headers, 'content-length': s.body.length },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode, ...JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    req.end(Buffer.from(s.body));
  });
}

async function expectSame(s: Sent): Promise<unknown> {
  const [a, b] = [await send('/fast', s), await send('/full', s)];
  expect(a, JSON.stringify({ headers: s.headers, body: Buffer.from(s.body).toString('hex') })).toEqual(b);
  return a;
}

const enc = (t: string) => new TextEncoder().encode(t);
const cat = (...parts: Uint8Array[]) => Buffer.concat(parts.map((p) => Buffer.from(p)));
const BOM = Uint8Array.of(0xef, 0xbb, 0xbf);

/** Bodies: JSON texts (objects and arrays, scalars, truncated), with odd prefixes, and raw bytes. */
const bodies: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }).map((v) => enc(JSON.stringify(v) ?? '')),
  fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 12 })).map((v) => enc(JSON.stringify(v))),
  fc
    .tuple(
      fc.constantFrom('', ' ', '\t\r\n', '\u00a0', '\ufeff', '\ufeff\ufeff'),
      fc.jsonValue({ maxDepth: 1 }),
      fc.nat(40),
    )
    .map(([pre, v, cut]) => {
      const t = `${pre}${JSON.stringify(v) ?? ''}`;
      return enc(cut % 3 === 0 ? t.slice(0, cut) : t);
    }),
  fc
    .tuple(fc.boolean(), fc.constantFrom('{}', '[]', '{"a":"é"}', '  ', ''))
    .map(([bom, t]) => (bom ? cat(BOM, enc(t)) : enc(t))),
  fc.uint8Array({ maxLength: 40 }),
  fc
    .tuple(fc.string({ maxLength: 10 }), fc.constantFrom([0xc3], [0xff], [0xed, 0xa0, 0x80], [0xe2, 0x82]))
    .map(([t, bad]) => cat(enc(`{"a":"${t}`), Uint8Array.from(bad), enc('"}'))),
);

const types = fc.constantFrom(
  'application/json',
  'APPLICATION/JSON',
  'application/json; charset=utf-8',
  'application/json;charset=UTF-8',
  'application/json; charset="utf-8"',
  'application/json; charset=utf-16le',
  'application/json; charset=koi8-r',
  'application/json ; charset=utf-8',
  'application/vnd.api+json',
  'text/plain',
  undefined,
);

describe('the JSON body reader against express.json', () => {
  it('reads every generated body as express.json does', async () => {
    await fc.assert(
      fc.asyncProperty(bodies, types, async (body, type) => {
        await expectSame({ headers: type === undefined ? {} : { 'content-type': type }, body });
      }),
      { numRuns: 600 },
    );
  });

  it('answers the cases it takes itself as express.json does, without express.json', async () => {
    const before = fellBack;
    const json = { 'content-type': 'application/json' };
    expect(
      await expectSame({ headers: json, body: enc('{"contents":"hi","clientMsgId":"c"}') }),
    ).toMatchObject({
      body: { contents: 'hi', clientMsgId: 'c' },
      error: null,
    });
    // A byte order mark is dropped; whitespace before the value is allowed.
    expect(await expectSame({ headers: json, body: cat(BOM, enc(' \n{"a":1}')) })).toMatchObject({
      body: { a: 1 },
    });
    expect(await expectSame({ headers: json, body: BOM })).toMatchObject({ body: {}, error: null });
    // Strict: an object or an array only; whitespace alone or a truncated text is an error.
    for (const t of ['"x"', '1', 'null', 'true', ' ', '\ufeff ', '{"a":1'])
      expect(await expectSame({ headers: json, body: enc(t) }), t).toMatchObject({
        error: { status: 400, code: 'malformed_json' },
      });
    // Malformed UTF-8 is refused, never stored as U+FFFD.
    expect(
      await expectSame({ headers: json, body: cat(enc('{"a":"'), Uint8Array.of(0xc3), enc('"}')) }),
    ).toMatchObject({ error: { status: 400, code: 'malformed_json' } });
    // At the limit exactly.
    const atLimit = enc(`{"a":"${'x'.repeat(LIMIT - 8)}"}`);
    expect(atLimit.length).toBe(LIMIT);
    expect(await expectSame({ headers: json, body: atLimit })).toMatchObject({ error: null });
    expect(fellBack).toBe(before);
  });

  it('hands express.json what it does not take: other types and charsets, past the limit, empty, compressed', async () => {
    const cases: Sent[] = [
      { headers: { 'content-type': 'application/vnd.api+json' }, body: enc('{"a":1}') },
      { headers: { 'content-type': 'application/json; charset=koi8-r' }, body: enc('{}') },
      { headers: { 'content-type': 'text/plain' }, body: enc('{}') },
      { headers: {}, body: enc('{}') },
      { headers: { 'content-type': 'application/json' }, body: enc(`{"a":"${'x'.repeat(LIMIT)}"}`) },
      { headers: { 'content-type': 'application/json' }, body: new Uint8Array(0) },
      {
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: gzipSync('{"z":1}'),
      },
    ];
    const answers = [];
    for (const s of cases) {
      const before = fellBack;
      answers.push(await expectSame(s));
      expect(fellBack, JSON.stringify(s.headers)).toBe(before + 1);
    }
    expect(
      answers.map((a) => (a as { status: number; error: { code: string } | null }).error?.code ?? 'ok'),
    ).toEqual(['ok', 'unsupported_encoding', 'ok', 'ok', 'body_too_large', 'ok', 'ok']);
    expect((answers[6] as { body: unknown }).body).toEqual({ z: 1 });
  });
});
