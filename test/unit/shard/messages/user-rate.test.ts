/**
 * The per-user message rate limit (shard/messages/user-rate.ts) on a clock the test moves: the
 * burst, the refill, Retry-After, independence of users, the 429 it throws, and the
 * bound on its memory (idle buckets dropped, the map capped).
 */
import { describe, expect, it } from 'vitest';
import { ApiError } from '../../../../common/http-answers.js';
import { UserRateLimiter } from '../../../../shard/messages/user-rate.js';

function limiter(perSecond: number, burst: number, maxUsers = 1000) {
  const clock = { ms: 0 };
  const l = new UserRateLimiter({ perSecond, burst, maxUsers, now: () => clock.ms });
  return { l, clock };
}

describe('UserRateLimiter', () => {
  it('allows a burst, then refuses with the seconds until the next token', () => {
    const { l, clock } = limiter(2, 5);
    for (let i = 0; i < 5; i++) expect(l.take('u')).toBe(0);
    // Empty: a token comes back after 0.5 s, reported as 1 s (whole seconds, at least 1).
    expect(l.take('u')).toBe(1);
    clock.ms += 499;
    expect(l.take('u')).toBe(1);
    clock.ms += 1;
    expect(l.take('u')).toBe(0);
    expect(l.take('u')).toBe(1);
  });

  it('refills at the rate and never beyond the burst', () => {
    const { l, clock } = limiter(10, 3);
    for (let i = 0; i < 3; i++) expect(l.take('u')).toBe(0);
    clock.ms += 60_000;
    let allowed = 0;
    for (let i = 0; i < 10; i++) if (l.take('u') === 0) allowed++;
    expect(allowed).toBe(3);
  });

  it('reports longer waits for slow rates', () => {
    const { l } = limiter(0.1, 1);
    expect(l.take('u')).toBe(0);
    expect(l.take('u')).toBe(10);
  });

  it('keeps one budget per user', () => {
    const { l } = limiter(1, 2);
    expect(l.take('a')).toBe(0);
    expect(l.take('a')).toBe(0);
    expect(l.take('a')).toBeGreaterThan(0);
    expect(l.take('b')).toBe(0);
    expect(l.take('b')).toBe(0);
    expect(l.take('b')).toBeGreaterThan(0);
  });

  it('throws 429 rate_limited with Retry-After from admit', () => {
    const { l } = limiter(0.5, 1);
    l.admit('u');
    let thrown: unknown;
    try {
      l.admit('u');
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ApiError);
    const e = thrown as ApiError;
    expect(e.status).toBe(429);
    expect(e.code).toBe('rate_limited');
    expect(e.headers['retry-after']).toBe('2');
    expect(e.message).toMatch(/too many messages/);
  });

  it('drops the buckets of idle users (a full bucket is the same as none)', () => {
    const { l, clock } = limiter(10, 20);
    for (let i = 0; i < 100; i++) l.take(`user-${i}`);
    expect(l.size).toBe(100);
    // burst / rate = 2 s: after that every bucket is full again.
    clock.ms += 2000;
    l.take('someone');
    expect(l.size).toBe(1);
  });

  it('keeps a user who is still limited while idle ones go', () => {
    const { l, clock } = limiter(1, 2);
    l.take('busy');
    l.take('busy');
    clock.ms += 1000;
    l.take('idle');
    expect(l.take('busy')).toBe(0);
    expect(l.take('busy')).toBeGreaterThan(0);
    clock.ms += 1999;
    l.take('other');
    // 'idle' was last used 1999 ms ago (< 2 s): kept; still at most 3 buckets.
    expect(l.size).toBe(3);
  });

  it('caps the number of buckets, dropping the least recently used', () => {
    const { l } = limiter(1, 1, 3);
    for (const u of ['a', 'b', 'c']) expect(l.take(u)).toBe(0);
    expect(l.take('a')).toBeGreaterThan(0); // a is now the most recently used
    expect(l.take('d')).toBe(0); // b is dropped
    expect(l.size).toBe(3);
    expect(l.take('c')).toBeGreaterThan(0); // c was kept: still limited
    expect(l.take('a')).toBeGreaterThan(0); // a was kept: still limited
    expect(l.take('b')).toBe(0); // b was dropped: a fresh bucket
    expect(l.size).toBe(3);
  });
});
