/**
 * The incremental chunked transfer-coding decoder (router/chunked.ts).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChunkedDecoder, ChunkedError } from '../../../router/chunked.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

interface Result {
  payload: Buffer;
  /** Offset (into the concatenated input) after the last byte consumed. */
  end: number;
  done: boolean;
  pieces: number;
  emptyPieces: number;
}

/** Feeds `input` to a decoder in pieces cut at `cuts`; stops feeding once done. */
function decodeIn(input: Buffer, cuts: number[] = [], dec = new ChunkedDecoder()): Result {
  const points = [...new Set(cuts.filter((c) => c > 0 && c < input.length))].sort((x, y) => x - y);
  points.push(input.length);
  const out: Buffer[] = [];
  let pieces = 0;
  let emptyPieces = 0;
  let start = 0;
  let end = 0;
  for (const p of points) {
    const piece = input.subarray(start, p);
    const used = dec.decode(piece, 0, (c) => {
      pieces++;
      if (c.length === 0) emptyPieces++;
      // Copy: the decoder hands out views into the caller's buffer.
      out.push(Buffer.from(c));
    });
    expect(used).toBeGreaterThanOrEqual(0);
    expect(used).toBeLessThanOrEqual(piece.length);
    end = start + used;
    if (dec.done) break;
    // Until done, everything offered is consumed (partial lines are buffered internally).
    expect(used).toBe(piece.length);
    start = p;
  }
  return { payload: Buffer.concat(out), end, done: dec.done, pieces, emptyPieces };
}

function decodeError(input: Buffer | string, cuts: number[] = []): ChunkedError {
  const buf = typeof input === 'string' ? b(input) : input;
  let caught: unknown;
  try {
    decodeIn(buf, cuts);
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${JSON.stringify(buf.toString('latin1'))} to be refused`).toBeInstanceOf(
    ChunkedError,
  );
  return caught as ChunkedError;
}

/** Encodes chunks, with optional extensions and trailers. */
function encode(
  chunks: Buffer[],
  opts: { ext?: string[]; trailers?: string[]; lastExt?: string; upper?: boolean } = {},
): Buffer {
  const parts: Buffer[] = [];
  chunks.forEach((c, i) => {
    let size = c.length.toString(16);
    if (opts.upper) size = size.toUpperCase();
    parts.push(b(`${size}${opts.ext?.[i] ?? ''}\r\n`), c, b('\r\n'));
  });
  parts.push(b(`0${opts.lastExt ?? ''}\r\n`));
  for (const t of opts.trailers ?? []) parts.push(b(`${t}\r\n`));
  parts.push(b('\r\n'));
  return Buffer.concat(parts);
}

describe('ChunkedError', () => {
  it('is an Error named ChunkedError', () => {
    const e = new ChunkedError('x');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('ChunkedError');
    expect(e.message).toBe('x');
  });
});

describe('ChunkedDecoder: decoding', () => {
  it('decodes a simple body and reports done with the exact end offset', () => {
    const body = b('5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
    const r = decodeIn(body);
    expect(r.payload.toString()).toBe('hello world');
    expect(r.done).toBe(true);
    expect(r.end).toBe(body.length);
  });

  it('decodes an empty body (only the last chunk)', () => {
    const body = b('0\r\n\r\n');
    const r = decodeIn(body);
    expect(r.payload.length).toBe(0);
    expect(r.pieces).toBe(0);
    expect(r.done).toBe(true);
    expect(r.end).toBe(5);
  });

  it('accepts upper- and lower-case hex sizes and leading zeros', () => {
    const data = Buffer.alloc(0xab, 0x61);
    for (const size of ['ab', 'AB', 'aB', '00ab', '0000000000ab']) {
      const body = Buffer.concat([b(`${size}\r\n`), data, b('\r\n000\r\n\r\n')]);
      const r = decodeIn(body);
      expect(r.payload.equals(data), size).toBe(true);
      expect(r.done).toBe(true);
      expect(r.end).toBe(body.length);
    }
  });

  it('ignores chunk extensions, including on the last chunk', () => {
    const body = b('5;name=value\r\nhello\r\n3;a;b="q;uoted"\r\nabc\r\n0;last=1\r\n\r\n');
    const r = decodeIn(body);
    expect(r.payload.toString()).toBe('helloabc');
    expect(r.done).toBe(true);
    expect(r.end).toBe(body.length);
  });

  it('reads and drops trailer fields', () => {
    const body = b('3\r\nabc\r\n0\r\nX-Checksum: 123\r\nX-Other:\r\nX-Colon: a:b\r\n\r\n');
    const r = decodeIn(body);
    expect(r.payload.toString()).toBe('abc');
    expect(r.done).toBe(true);
    expect(r.end).toBe(body.length);
  });

  it('passes chunk data through byte for byte, including CR, LF and a fake last chunk', () => {
    const data = b('0\r\n\r\n\n\r\x00\xff5\r\n');
    const body = Buffer.concat([b(`${data.length.toString(16)}\r\n`), data, b('\r\n0\r\n\r\n')]);
    const r = decodeIn(body);
    expect(r.payload.equals(data)).toBe(true);
    expect(r.end).toBe(body.length);
  });

  it('never calls onData with an empty piece', () => {
    const body = encode([b('a'), b('bc'), b('def')], { ext: [';x', '', ';y=z'], trailers: ['T: 1'] });
    for (let i = 0; i <= body.length; i++) {
      expect(decodeIn(body, [i]).emptyPieces).toBe(0);
    }
  });

  it('does not consume bytes after the body', () => {
    const body = b('4\r\nwxyz\r\n0\r\n\r\n');
    const input = Buffer.concat([body, b('GET /next HTTP/1.1\r\nHost: a\r\n\r\n')]);
    const dec = new ChunkedDecoder();
    const chunks: string[] = [];
    const used = dec.decode(input, 0, (c) => chunks.push(c.toString()));
    expect(used).toBe(body.length);
    expect(dec.done).toBe(true);
    expect(chunks.join('')).toBe('wxyz');
    expect(input.subarray(used).toString()).toBe('GET /next HTTP/1.1\r\nHost: a\r\n\r\n');
  });

  it('honours the start offset and returns an absolute offset', () => {
    const prefix = b('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n');
    const body = b('2\r\nhi\r\n0\r\n\r\n');
    const input = Buffer.concat([prefix, body, b('tail')]);
    const dec = new ChunkedDecoder();
    const chunks: string[] = [];
    const used = dec.decode(input, prefix.length, (c) => chunks.push(c.toString()));
    expect(used).toBe(prefix.length + body.length);
    expect(chunks.join('')).toBe('hi');
    expect(dec.done).toBe(true);
  });

  it('returns the start offset and emits nothing once done', () => {
    const dec = new ChunkedDecoder();
    dec.decode(b('0\r\n\r\n'), 0, () => {});
    expect(dec.done).toBe(true);
    let calls = 0;
    expect(dec.decode(b('5\r\nhello\r\n0\r\n\r\n'), 0, () => calls++)).toBe(0);
    expect(dec.decode(b('xxxx'), 2, () => calls++)).toBe(2);
    expect(calls).toBe(0);
    expect(dec.done).toBe(true);
  });

  it('returns the offset unchanged for an empty input and is not done', () => {
    const dec = new ChunkedDecoder();
    expect(dec.decode(Buffer.alloc(0), 0, () => {})).toBe(0);
    expect(dec.decode(b('abc'), 3, () => {})).toBe(3);
    expect(dec.done).toBe(false);
  });

  it('is not done before the final CRLF', () => {
    const body = b('3\r\nabc\r\n0\r\nT: 1\r\n\r\n');
    for (let i = 0; i < body.length; i++) {
      const dec = new ChunkedDecoder();
      expect(dec.decode(body.subarray(0, i), 0, () => {})).toBe(i);
      expect(dec.done, `after ${i} bytes`).toBe(false);
    }
  });

  it('gives the same payload and end offset when split at every offset', () => {
    const body = encode([b('Hello, '), b(''.padEnd(40, 'x')), b('\r\n!')], {
      ext: [';a=1', '', ';b="c;d"'],
      trailers: ['X-T: 1', 'Y:2'],
      lastExt: ';end',
    });
    const extra = b('NEXT');
    const input = Buffer.concat([body, extra]);
    const whole = decodeIn(input);
    expect(whole.payload.toString()).toBe(`Hello, ${''.padEnd(40, 'x')}\r\n!`);
    expect(whole.end).toBe(body.length);
    for (let i = 0; i <= input.length; i++) {
      const r = decodeIn(input, [i]);
      expect(r.payload.equals(whole.payload), `split at ${i}`).toBe(true);
      expect(r.done, `split at ${i}`).toBe(true);
      expect(r.end, `split at ${i}`).toBe(body.length);
    }
  });

  it('gives the same payload when fed one byte at a time', () => {
    const body = encode([b('abc'), b('defgh')], { ext: [';x=y', ''], trailers: ['A: b'] });
    const r = decodeIn(
      body,
      Array.from({ length: body.length }, (_, i) => i),
    );
    expect(r.payload.toString()).toBe('abcdefgh');
    expect(r.done).toBe(true);
    expect(r.end).toBe(body.length);
  });

  it('decodes random bodies identically for random splits (property)', () => {
    const ext = fc.constantFrom('', ';a', ';a=b', ';a="x;y"', '; q = 1 ');
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 300 }), ext), { maxLength: 8 }),
        fc.array(fc.constantFrom('X-A: 1', 'Checksum: abc', 'Y:'), { maxLength: 3 }),
        fc.boolean(),
        fc.array(fc.nat({ max: 3000 }), { maxLength: 10 }),
        fc.uint8Array({ maxLength: 20 }),
        (chunks, trailers, upper, cuts, after) => {
          const data = chunks.map(([c]) => Buffer.from(c));
          const body = encode(data, { ext: chunks.map(([, e]) => e), trailers, upper });
          const input = Buffer.concat([body, Buffer.from(after)]);
          const r = decodeIn(input, cuts);
          expect(r.payload.equals(Buffer.concat(data))).toBe(true);
          expect(r.done).toBe(true);
          expect(r.end).toBe(body.length);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('random bytes either decode or throw ChunkedError (property)', () => {
    const frag = fc.oneof(
      fc.constantFrom('\r\n', '\n', '\r', ';', ':', '0', '5', 'f', 'x', ' ', '\x00', 'abcde'),
      fc.string({ maxLength: 4 }),
    );
    fc.assert(
      fc.property(
        fc.array(frag, { maxLength: 30 }),
        fc.array(fc.nat({ max: 100 }), { maxLength: 4 }),
        (parts, cuts) => {
          const input = b(parts.join(''));
          try {
            const r = decodeIn(input, cuts);
            expect(r.end).toBeLessThanOrEqual(input.length);
          } catch (err) {
            expect(err).toBeInstanceOf(ChunkedError);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('ChunkedDecoder: errors', () => {
  it('refuses invalid chunk sizes', () => {
    for (const size of ['', 'g', 'x5', '0x5', '-5', '+5', ' 5', '5 ', '\t5', '5\t', '1.0', '5,5', '５']) {
      decodeError(`${size}\r\nhello\r\n0\r\n\r\n`);
    }
  });

  it('refuses a whitespace or empty size before an extension', () => {
    decodeError('5 ;a=b\r\nhello\r\n0\r\n\r\n');
    decodeError(';a=b\r\nhello\r\n0\r\n\r\n');
  });

  it('accepts 12 hex digits but refuses 13 or more (overflow guard)', () => {
    const dec = new ChunkedDecoder();
    expect(dec.decode(b('ffffffffffff\r\nabc'), 0, () => {})).toBe(17);
    expect(dec.done).toBe(false);
    decodeError('fffffffffffff\r\nabc');
    decodeError('0000000000001\r\na\r\n0\r\n\r\n');
    decodeError('10000000000000000\r\n');
    decodeError(`${'f'.repeat(40)}\r\n`);
  });

  it('refuses a missing CRLF after chunk data', () => {
    decodeError('3\r\nabcd\r\n0\r\n\r\n');
    decodeError('3\r\nabcX\r\n0\r\n\r\n');
    decodeError('3\r\nabc0\r\n\r\n');
    decodeError('3\r\nabc\r\r\n0\r\n\r\n');
    decodeError('3\r\nab\r\n0\r\n\r\n');
  });

  it('refuses bare LF line endings wherever they appear, at every split', () => {
    for (const text of [
      '3\nabc\r\n0\r\n\r\n',
      '3\r\nabc\n0\r\n\r\n',
      '3\r\nabc\r\n0\n\r\n',
      '3\r\nabc\r\n0\r\n\n',
      '3\r\nabc\r\n0\r\nX: 1\n\r\n',
      '\n',
    ]) {
      const input = b(text);
      for (let i = 0; i <= input.length; i++) {
        expect(decodeError(input, [i]).message, `${JSON.stringify(text)} split at ${i}`).toMatch(/bare LF/);
      }
    }
  });

  it('refuses a bare CR as the line ending of a size line', () => {
    decodeError('3\rabc\r\n0\r\n\r\n');
  });

  it('refuses malformed trailer fields', () => {
    for (const t of ['NoColon', ': value', ':', 'X: a\x00b', 'X: a\rb', 'X\x00: v']) {
      decodeError(`3\r\nabc\r\n0\r\n${t}\r\n\r\n`);
    }
  });

  it('refuses over-long size and trailer lines', () => {
    expect(decodeError(`1;${'e'.repeat(5000)}\r\na\r\n0\r\n\r\n`).message).toMatch(/too long/);
    expect(decodeError(`0\r\nX: ${'v'.repeat(5000)}\r\n\r\n`).message).toMatch(/too long/);
    // Also when the long line arrives in small pieces.
    const long = b(`1;${'e'.repeat(5000)}\r\n`);
    decodeError(
      long,
      Array.from({ length: 60 }, (_, i) => i * 97),
    );
  });

  it('accepts lines just under the limit', () => {
    const ext = `;${'e'.repeat(4000)}`;
    const r = decodeIn(b(`1${ext}\r\na\r\n0\r\n\r\n`));
    expect(r.payload.toString()).toBe('a');
    expect(r.done).toBe(true);
  });
});

describe('ChunkedDecoder: reset', () => {
  it('can be reused for another body after done', () => {
    const dec = new ChunkedDecoder();
    const first = decodeIn(b('3\r\nabc\r\n0\r\n\r\n'), [], dec);
    expect(first.payload.toString()).toBe('abc');
    expect(dec.done).toBe(true);
    dec.reset();
    expect(dec.done).toBe(false);
    const body = b('4\r\nwxyz\r\n0\r\n\r\n');
    const second = decodeIn(Buffer.concat([body, b('more')]), [5], dec);
    expect(second.payload.toString()).toBe('wxyz');
    expect(second.done).toBe(true);
    expect(second.end).toBe(body.length);
  });

  it('discards a partial line and pending chunk data', () => {
    const dec = new ChunkedDecoder();
    // Part of a size line.
    dec.decode(b('1'), 0, () => {});
    dec.reset();
    expect(decodeIn(b('2\r\nhi\r\n0\r\n\r\n'), [], dec).payload.toString()).toBe('hi');

    // In the middle of chunk data.
    dec.reset();
    let got = '';
    dec.decode(b('10\r\nabc'), 0, (c) => {
      got += c.toString();
    });
    expect(got).toBe('abc');
    dec.reset();
    const r = decodeIn(b('2\r\nok\r\n0\r\n\r\n'), [], dec);
    expect(r.payload.toString()).toBe('ok');
    expect(r.done).toBe(true);

    // In the trailers.
    dec.reset();
    dec.decode(b('0\r\nX: 1\r\nY'), 0, () => {});
    expect(dec.done).toBe(false);
    dec.reset();
    expect(decodeIn(b('1\r\nz\r\n0\r\n\r\n'), [], dec).payload.toString()).toBe('z');
  });

  it('recovers after an error', () => {
    const dec = new ChunkedDecoder();
    expect(() => dec.decode(b('zz\r\n'), 0, () => {})).toThrow(ChunkedError);
    dec.reset();
    const r = decodeIn(b('1\r\nq\r\n0\r\n\r\n'), [], dec);
    expect(r.payload.toString()).toBe('q');
    expect(r.done).toBe(true);
  });
});
