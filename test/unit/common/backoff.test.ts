/** The SDK's reconnect backoff (exponential, capped, equal jitter) and its random ids. */
import { describe, expect, it } from 'vitest';
import { randomId } from '../../../client/ids.js';
import { Backoff, DEFAULT_BACKOFF } from '../../../common/backoff.js';

const caps = (o: { minMs: number; maxMs: number; factor: number }, n: number) =>
  Array.from({ length: n }, (_, i) => Math.min(o.maxMs, o.minMs * o.factor ** i));

describe('Backoff', () => {
  const o = { minMs: 100, maxMs: 3000, factor: 2 };

  it('grows exponentially from minMs up to maxMs (the jitter at its extremes)', () => {
    // random() = 1 gives the cap itself, random() = 0 half of it.
    const hi = new Backoff(o, () => 1);
    expect(Array.from({ length: 8 }, () => hi.next())).toEqual([100, 200, 400, 800, 1600, 3000, 3000, 3000]);
    const lo = new Backoff(o, () => 0);
    expect(Array.from({ length: 8 }, () => lo.next())).toEqual([50, 100, 200, 400, 800, 1500, 1500, 1500]);
    expect(hi.attempts).toBe(8);
  });

  it('keeps every delay within [cap/2, cap] with real randomness', () => {
    for (let run = 0; run < 50; run++) {
      const b = new Backoff(o);
      const expected = caps(o, 12);
      for (let i = 0; i < expected.length; i++) {
        const cap = expected[i] as number;
        const d = b.next();
        expect(d).toBeGreaterThanOrEqual(Math.floor(cap / 2));
        expect(d).toBeLessThanOrEqual(cap);
        expect(Number.isInteger(d)).toBe(true);
      }
    }
  });

  it('spreads delays over the jitter range rather than using one value', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) seen.add(new Backoff(o).next());
    expect(seen.size).toBeGreaterThan(10);
    for (const d of seen) expect(d >= 50 && d <= 100).toBe(true);
  });

  it('reset() starts again from minMs', () => {
    const b = new Backoff(o, () => 1);
    for (let i = 0; i < 6; i++) b.next();
    expect(b.next()).toBe(3000);
    b.reset();
    expect(b.attempts).toBe(0);
    expect([b.next(), b.next(), b.next()]).toEqual([100, 200, 400]);
  });

  it('uses the documented defaults and honours another factor', () => {
    const d = new Backoff(undefined, () => 1);
    const got = Array.from({ length: 8 }, () => d.next());
    expect(got).toEqual(caps(DEFAULT_BACKOFF, 8));
    expect(got.at(-1)).toBe(DEFAULT_BACKOFF.maxMs);
    const t = new Backoff({ minMs: 10, maxMs: 1000, factor: 3 }, () => 1);
    expect(Array.from({ length: 6 }, () => t.next())).toEqual([10, 30, 90, 270, 810, 1000]);
  });
});

describe('randomId', () => {
  const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  it('is a v4 UUID and distinct over 1000 calls', () => {
    const ids = Array.from({ length: 1000 }, () => randomId());
    for (const id of ids) expect(id).toMatch(V4);
    expect(new Set(ids).size).toBe(1000);
  });

  it('is accepted as a clientMsgId by the shard (A-Z a-z 0-9 . _ : -, at most 128)', () => {
    expect(randomId()).toMatch(/^[A-Za-z0-9._:-]{1,128}$/);
  });
});
