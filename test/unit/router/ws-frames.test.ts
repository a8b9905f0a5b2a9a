/**
 * WebSocket frame boundaries (router/ws-frames.ts): the tracker the router uses to end a
 * relayed connection without cutting a frame in half, and its own close frames.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { closeFrame, FrameBoundaryTracker } from '../../../router/ws-frames.js';

interface FrameSpec {
  opcode?: number;
  fin?: boolean;
  length: number;
  masked: boolean;
  /** Length encoding: the minimal one (default) or forced 16-bit / 64-bit. */
  encoding?: 'minimal' | '16' | '64';
  seed?: number;
}

/** Builds one RFC 6455 frame by hand. */
function frame(spec: FrameSpec): Buffer {
  const { opcode = 0x2, fin = true, length, masked, seed = length } = spec;
  const encoding =
    spec.encoding && spec.encoding !== 'minimal'
      ? spec.encoding
      : length < 126
        ? '7'
        : length <= 0xffff
          ? '16'
          : '64';
  const parts: number[] = [(fin ? 0x80 : 0) | opcode];
  const maskBit = masked ? 0x80 : 0;
  if (encoding === '7') parts.push(maskBit | length);
  else if (encoding === '16') parts.push(maskBit | 126, (length >> 8) & 0xff, length & 0xff);
  else {
    const len = Buffer.alloc(8);
    len.writeBigUInt64BE(BigInt(length));
    parts.push(maskBit | 127, ...len);
  }
  const payload = Buffer.alloc(length);
  for (let i = 0; i < length; i++) payload[i] = (seed + i * 31) & 0xff;
  if (!masked) return Buffer.concat([Buffer.from(parts), payload]);
  const key = Buffer.from([0x12, 0x34 ^ seed, 0x56, 0x78]);
  for (let i = 0; i < length; i++) payload[i] = (payload[i] as number) ^ (key[i & 3] as number);
  return Buffer.concat([Buffer.from(parts), key, payload]);
}

function stream(specs: FrameSpec[]): { bytes: Buffer; boundaries: Set<number>; ends: number[] } {
  const frames = specs.map(frame);
  const ends: number[] = [];
  let pos = 0;
  for (const f of frames) {
    pos += f.length;
    ends.push(pos);
  }
  return { bytes: Buffer.concat(frames), boundaries: new Set([0, ...ends]), ends };
}

/** The first frame boundary at or after `offset`. */
function nextBoundary(ends: number[], offset: number): number {
  if (offset === 0) return 0;
  for (const e of ends) if (e >= offset) return e;
  throw new Error('past the end');
}

function unmask(frameBytes: Buffer): { opcode: number; fin: boolean; masked: boolean; payload: Buffer } {
  const b0 = frameBytes[0] as number;
  const b1 = frameBytes[1] as number;
  const masked = (b1 & 0x80) !== 0;
  const len = b1 & 0x7f;
  expect(len).toBeLessThan(126); // control frames carry at most 125 bytes
  const start = masked ? 6 : 2;
  expect(frameBytes.length).toBe(start + len);
  const payload = Buffer.from(frameBytes.subarray(start));
  if (masked) {
    const key = frameBytes.subarray(2, 6);
    for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (key[i & 3] as number);
  }
  return { opcode: b0 & 0x0f, fin: (b0 & 0x80) !== 0, masked, payload };
}

// Small frames (every offset of every split is checked) covering every header shape:
// 7-bit, 16-bit and 64-bit lengths (the larger two non-minimal here, to keep them short),
// masked and unmasked, empty payloads, control and continuation frames.
const SMALL: FrameSpec[] = [
  { length: 0, masked: false, opcode: 0x9 },
  { length: 0, masked: true, opcode: 0xa },
  { length: 5, masked: false, opcode: 0x1 },
  { length: 5, masked: true, opcode: 0x1, fin: false },
  { length: 3, masked: true, opcode: 0x0 },
  { length: 125, masked: false },
  { length: 125, masked: true },
  { length: 7, masked: false, encoding: '16' },
  { length: 9, masked: true, encoding: '16' },
  { length: 0, masked: false, encoding: '16' },
  { length: 11, masked: false, encoding: '64' },
  { length: 13, masked: true, encoding: '64' },
  { length: 0, masked: true, encoding: '64' },
  { length: 2, masked: false, opcode: 0x8 },
];

// Real extended lengths: 126 and 65535 (16-bit), 65536 and 70000 (64-bit).
const LARGE: FrameSpec[] = [
  { length: 126, masked: false },
  { length: 126, masked: true },
  { length: 65535, masked: false },
  { length: 65536, masked: true },
  { length: 1, masked: false },
  { length: 70000, masked: false },
  { length: 0, masked: true },
];

describe('hand-built frames', () => {
  it('have the header sizes RFC 6455 prescribes', () => {
    expect(frame({ length: 5, masked: false }).length).toBe(2 + 5);
    expect(frame({ length: 5, masked: true }).length).toBe(2 + 4 + 5);
    expect(frame({ length: 126, masked: false }).subarray(0, 4)).toEqual(Buffer.from([0x82, 126, 0, 126]));
    expect(frame({ length: 126, masked: true }).length).toBe(4 + 4 + 126);
    const big = frame({ length: 65536, masked: false });
    expect(big.subarray(0, 10)).toEqual(Buffer.from([0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]));
    expect(big.length).toBe(10 + 65536);
  });
});

describe('FrameBoundaryTracker', () => {
  it('starts at a boundary', () => {
    expect(new FrameBoundaryTracker().atBoundary).toBe(true);
  });

  it.each(
    [...SMALL, ...LARGE].map(
      (s) => [`len=${s.length} masked=${s.masked} enc=${s.encoding ?? 'minimal'}`, s] as const,
    ),
  )('a whole frame (%s) is consumed and ends at a boundary', (_name, spec) => {
    const f = frame(spec);
    const t = new FrameBoundaryTracker();
    expect(t.advance(f)).toBe(f.length);
    expect(t.atBoundary).toBe(true);
  });

  it('byte by byte, atBoundary is true exactly at frame ends (small and large frames)', () => {
    for (const specs of [SMALL, LARGE]) {
      const { bytes, boundaries } = stream(specs);
      const t = new FrameBoundaryTracker();
      const mismatches: number[] = [];
      let consumed = 0;
      for (let i = 0; i < bytes.length; i++) {
        consumed += t.advance(bytes.subarray(i, i + 1));
        if (t.atBoundary !== boundaries.has(i + 1)) mismatches.push(i + 1);
      }
      expect(mismatches).toEqual([]);
      expect(consumed).toBe(bytes.length);
      expect(t.atBoundary).toBe(true);
    }
  });

  it('split at every offset into two chunks: everything is consumed, boundary state is right after each', () => {
    const { bytes, boundaries } = stream(SMALL);
    for (let i = 0; i <= bytes.length; i++) {
      const t = new FrameBoundaryTracker();
      expect(t.advance(bytes.subarray(0, i))).toBe(i);
      expect(t.atBoundary, `after ${i}`).toBe(boundaries.has(i));
      expect(t.advance(bytes.subarray(i))).toBe(bytes.length - i);
      expect(t.atBoundary).toBe(true);
    }
  });

  it('split at every offset of the headers and sampled payload offsets of large frames', () => {
    const { bytes, boundaries, ends } = stream(LARGE);
    const offsets = new Set<number>();
    for (const e of [0, ...ends]) for (let d = -16; d <= 16; d++) offsets.add(e + d);
    for (let i = 0; i < bytes.length; i += 997) offsets.add(i);
    for (const i of [...offsets].filter((o) => o >= 0 && o <= bytes.length)) {
      const t = new FrameBoundaryTracker();
      t.advance(bytes.subarray(0, i));
      expect(t.atBoundary, `after ${i}`).toBe(boundaries.has(i));
      expect(t.advance(bytes.subarray(i))).toBe(bytes.length - i);
      expect(t.atBoundary).toBe(true);
    }
  });

  it('advance(chunk, true) stops exactly at the next boundary, from every offset', () => {
    for (const specs of [SMALL, LARGE]) {
      const { bytes, ends } = stream(specs);
      const step = specs === SMALL ? 1 : 101;
      for (let i = 0; i <= bytes.length; i += i < 40 || bytes.length - i < 40 ? 1 : step) {
        const t = new FrameBoundaryTracker();
        t.advance(bytes.subarray(0, i));
        const n = t.advance(bytes.subarray(i), true);
        expect(i + n, `from ${i}`).toBe(nextBoundary(ends, i));
        expect(t.atBoundary).toBe(true);
        // Once at a boundary, it consumes nothing more.
        expect(t.advance(bytes.subarray(i + n), true)).toBe(0);
      }
    }
  });

  it('advance(chunk, true) at a boundary consumes nothing, even with bytes available', () => {
    const t = new FrameBoundaryTracker();
    expect(t.advance(frame({ length: 5, masked: true }), true)).toBe(0);
    expect(t.atBoundary).toBe(true);
    expect(t.advance(Buffer.alloc(0), true)).toBe(0);
  });

  it('advance(chunk, true) consumes the whole chunk when the boundary lies beyond it', () => {
    const f = frame({ length: 300, masked: true });
    for (let i = 1; i < f.length; i++) {
      for (const j of [i + 1, Math.floor((i + f.length) / 2), f.length - 1]) {
        if (j <= i || j >= f.length) continue;
        const t = new FrameBoundaryTracker();
        t.advance(f.subarray(0, i));
        expect(t.advance(f.subarray(i, j), true)).toBe(j - i);
        expect(t.atBoundary).toBe(false);
        expect(t.advance(f.subarray(j), true)).toBe(f.length - j);
        expect(t.atBoundary).toBe(true);
      }
    }
  });

  it('stops after the header of an empty frame that completes mid-chunk', () => {
    const a = frame({ length: 0, masked: true, opcode: 0x9 }); // 6 bytes, no payload
    const b = frame({ length: 4, masked: false });
    const t = new FrameBoundaryTracker();
    t.advance(a.subarray(0, 3));
    expect(t.advance(Buffer.concat([a.subarray(3), b]), true)).toBe(a.length - 3);
    expect(t.atBoundary).toBe(true);
  });

  it('random frame sequences, random splits (fast-check)', () => {
    const specArb: fc.Arbitrary<FrameSpec> = fc.record({
      length: fc.oneof(
        { weight: 6, arbitrary: fc.integer({ min: 0, max: 130 }) },
        { weight: 2, arbitrary: fc.integer({ min: 126, max: 2000 }) },
        { weight: 1, arbitrary: fc.integer({ min: 65530, max: 66000 }) },
      ),
      masked: fc.boolean(),
      opcode: fc.constantFrom(0x0, 0x1, 0x2, 0x8, 0x9, 0xa),
      fin: fc.boolean(),
      encoding: fc.constantFrom('minimal' as const, 'minimal' as const, '64' as const),
      seed: fc.nat({ max: 255 }),
    });
    fc.assert(
      fc.property(
        fc.array(specArb, { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 25 }),
        (specs, rawCuts) => {
          const { bytes, boundaries, ends } = stream(specs);
          const cuts = [...new Set(rawCuts.map((c) => c % (bytes.length + 1)))].sort((x, y) => x - y);
          // Plain relaying: boundary state after each chunk.
          const t = new FrameBoundaryTracker();
          let prev = 0;
          for (const c of [...cuts, bytes.length]) {
            expect(t.advance(bytes.subarray(prev, c))).toBe(c - prev);
            expect(t.atBoundary).toBe(boundaries.has(c));
            prev = c;
          }
          // Closing: from each cut, stopAtBoundary lands on the next boundary.
          for (const c of cuts) {
            const u = new FrameBoundaryTracker();
            u.advance(bytes.subarray(0, c));
            const n = u.advance(bytes.subarray(c), true);
            expect(c + n).toBe(nextBoundary(ends, c));
            expect(u.atBoundary).toBe(true);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('closeFrame', () => {
  it('closeFrame(1001, false) is an unmasked close frame with code 1001', () => {
    const f = closeFrame(1001, false);
    expect(f).toEqual(Buffer.from([0x88, 0x02, 0x03, 0xe9]));
    const d = unmask(f);
    expect(d).toMatchObject({ opcode: 0x8, fin: true, masked: false });
    expect(d.payload.readUInt16BE(0)).toBe(1001);
  });

  it('closeFrame(1001, true) is masked and unmasks to code 1001', () => {
    for (let i = 0; i < 20; i++) {
      const f = closeFrame(1001, true);
      expect(f.length).toBe(2 + 4 + 2);
      expect(f[0]).toBe(0x88);
      expect(f[1]).toBe(0x80 | 2);
      // Manual unmasking: payload[i] ^ key[i % 4].
      const key = f.subarray(2, 6);
      const code = (((f[6] as number) ^ (key[0] as number)) << 8) | ((f[7] as number) ^ (key[1] as number));
      expect(code).toBe(1001);
      expect(unmask(f).payload.readUInt16BE(0)).toBe(1001);
    }
  });

  it('uses a fresh masking key each time', () => {
    const keys = new Set<string>();
    for (let i = 0; i < 16; i++) keys.add(closeFrame(1001, true).subarray(2, 6).toString('hex'));
    expect(keys.size).toBeGreaterThan(1);
  });

  it('carries a UTF-8 reason, masked or not', () => {
    for (const masked of [false, true]) {
      const d = unmask(closeFrame(1001, masked, 'router shutting down'));
      expect(d.opcode).toBe(0x8);
      expect(d.masked).toBe(masked);
      expect(d.payload.readUInt16BE(0)).toBe(1001);
      expect(d.payload.subarray(2).toString('utf8')).toBe('router shutting down');
    }
    expect(
      unmask(closeFrame(1000, true, 'süß'))
        .payload.subarray(2)
        .toString('utf8'),
    ).toBe('süß');
  });

  it('truncates a long reason so the payload fits a control frame (125 bytes)', () => {
    for (const masked of [false, true]) {
      const d = unmask(closeFrame(1000, masked, 'x'.repeat(500)));
      expect(d.payload.length).toBe(125);
      expect(d.payload.subarray(2).toString()).toBe('x'.repeat(123));
    }
  });

  // RFC 6455 section 5.5.1: a close reason cut to 123 bytes must remain valid UTF-8.
  it('a truncated reason is still valid UTF-8', () => {
    const d = unmask(closeFrame(1000, false, 'é'.repeat(100))); // 200 bytes; byte 123 is mid-character
    expect(d.payload.length).toBeLessThanOrEqual(125);
    expect(() => new TextDecoder('utf-8', { fatal: true }).decode(d.payload.subarray(2))).not.toThrow();
  });

  it('is tracked as exactly one frame', () => {
    for (const masked of [false, true]) {
      const f = closeFrame(1001, masked, 'bye');
      const t = new FrameBoundaryTracker();
      for (let i = 0; i < f.length - 1; i++) {
        t.advance(f.subarray(i, i + 1));
        expect(t.atBoundary).toBe(false);
      }
      t.advance(f.subarray(f.length - 1));
      expect(t.atBoundary).toBe(true);
    }
  });
});
