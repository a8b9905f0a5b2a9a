/**
 * Push or pull per group (shard/delivery/modes.ts, docs/delivery-protocol.md section 7):
 * the hysteresis of ModePolicy on a controlled clock (enter at enterRate with enough
 * members, stay between exitRate and enterRate, leave only after holdMs below
 * exitRate), and DeliveryModes: which messages are pushed, the ticks (the switch
 * announced at once with the right lastMsgId, then at most one per tickMs, coalesced),
 * and the return to push of a group that went quiet. Plus the configuration checks.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigError, parseConfig } from '../../../../common/config.js';
import { DeliveryModes, ModePolicy, type Tick } from '../../../../shard/delivery/modes.js';

const PULL = {
  enabled: true,
  minMembers: 10,
  enterRate: 20,
  exitRate: 5,
  windowMs: 1000,
  holdMs: 2000,
  tickMs: 100,
};

/** Messages at `rate` per second from `t0` for `ms`; returns the modes seen and the time after. */
function stream(p: ModePolicy, t0: number, rate: number, ms: number, members = 50) {
  const modes: string[] = [];
  const step = 1000 / rate;
  let t = t0;
  for (; t < t0 + ms; t += step) modes.push(p.message(t, members));
  return { modes, t };
}

describe('ModePolicy (hysteresis)', () => {
  it('the rate of a steady stream settles at its messages per second', () => {
    const p = new ModePolicy({ ...PULL, enabled: false });
    const { t } = stream(p, 0, 40, 10_000);
    expect(p.rate(t)).toBeGreaterThan(38);
    expect(p.rate(t)).toBeLessThan(42);
    // Decays with the time constant windowMs when nothing comes.
    const r = p.rate(t);
    expect(p.rate(t + 1000)).toBeCloseTo(r * Math.exp(-1), 5);
  });

  it('a large group above enterRate switches to pull; a small one or a slow one stays push', () => {
    const fast = new ModePolicy(PULL);
    const { modes } = stream(fast, 0, 40, 3000);
    expect(modes[0]).toBe('push');
    expect(modes.at(-1)).toBe('pull');
    const small = new ModePolicy(PULL);
    expect(stream(small, 0, 40, 3000, 9).modes.every((m) => m === 'push')).toBe(true);
    const slow = new ModePolicy(PULL);
    expect(stream(slow, 0, 15, 10_000).modes.every((m) => m === 'push')).toBe(true);
  });

  it('between exitRate and enterRate it keeps its mode (no flapping), whichever it is', () => {
    const p = new ModePolicy(PULL);
    let { t } = stream(p, 0, 40, 3000);
    expect(p.mode).toBe('pull');
    // 10 msg/s: below enterRate, above exitRate, for a long time: still pull.
    const mid = stream(p, t, 10, 20_000);
    t = mid.t;
    expect(mid.modes.every((m) => m === 'pull')).toBe(true);
    // A push group at the same rate never enters.
    const q = new ModePolicy(PULL);
    expect(stream(q, 0, 10, 20_000).modes.every((m) => m === 'push')).toBe(true);
  });

  it('leaves pull only after holdMs below exitRate; a burst during the hold starts it again', () => {
    const p = new ModePolicy(PULL);
    const { t } = stream(p, 0, 40, 3000);
    expect(p.mode).toBe('pull');
    // Quiet: the rate falls below 5/s after about ln(40/5) s = 2.1 s, then the hold runs 2 s.
    let when = t;
    while (p.check(when) === 'pull' && when < t + 60_000) when += 10;
    const below = t + 1000 * Math.log(p.rate(t) > 0 ? 40 / 5 : 1);
    expect(when).toBeGreaterThanOrEqual(below + PULL.holdMs - 200);
    expect(when).toBeLessThan(below + PULL.holdMs + 500);
    // Again: pull, then quiet for a while but less than the hold, then active again: still pull.
    const q = new ModePolicy(PULL);
    const a = stream(q, 0, 40, 3000);
    expect(q.check(a.t + 3500)).toBe('pull'); // below exitRate since ~2.1 s: 1.4 s into the hold
    const b = stream(q, a.t + 3500, 40, 1000);
    expect(b.modes.every((m) => m === 'pull')).toBe(true);
    expect(q.check(b.t + 2500)).toBe('pull'); // the hold started over after the burst
  });

  it('members falling below minMembers count as quiet: back to push after the hold', () => {
    const p = new ModePolicy(PULL);
    const { t } = stream(p, 0, 40, 3000);
    expect(p.mode).toBe('pull');
    const few = stream(p, t, 40, PULL.holdMs + 500, 3);
    expect(few.modes[0]).toBe('pull');
    expect(few.modes.at(-1)).toBe('push');
  });

  it('disabled: always push', () => {
    const p = new ModePolicy({ ...PULL, enabled: false });
    expect(stream(p, 0, 1000, 3000, 10_000).modes.every((m) => m === 'push')).toBe(true);
  });
});

describe('DeliveryModes (ticks)', () => {
  let ticks: Tick[];
  let changes: string[];
  let modes: DeliveryModes;
  let msgId: number;

  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
    ticks = [];
    changes = [];
    msgId = 0;
    modes = new DeliveryModes({ pull: PULL });
    modes.on('tick', (t) => ticks.push(t));
    modes.on('changed', (g, m) => changes.push(`${g}:${m}`));
  });
  afterEach(() => {
    modes.stop();
    vi.useRealTimers();
  });

  /** Posts one message of group g; returns whether it is pushed. */
  const post = (g = 'g', members = 50) => {
    msgId++;
    return modes.published({ groupId: g, msgId, prevMsgId: msgId - 1, epoch: 'e' }, members);
  };

  it('pushes until the switch, announces it with the first message not pushed, then ticks at most once per tickMs', () => {
    const pushed: number[] = [];
    // 50 msg/s: every 20 ms.
    for (let i = 0; i < 100; i++) {
      if (post()) pushed.push(msgId);
      vi.advanceTimersByTime(20);
    }
    expect(modes.modeOf('g')).toBe('pull');
    expect(changes).toEqual(['g:pull']);
    // Pushed: 1..k-1 without a hole; the first tick says pull with lastMsgId k.
    const k = (pushed.at(-1) as number) + 1;
    expect(pushed).toEqual(Array.from({ length: k - 1 }, (_, i) => i + 1));
    expect(ticks[0]).toEqual({ groupId: 'g', epoch: 'e', lastMsgId: k, mode: 'pull' });
    // Then one tick per 100 ms at most, each with the head as of its time, increasing.
    const after = ticks.slice(1);
    expect(after.length).toBeGreaterThan(0);
    expect(after.length).toBeLessThanOrEqual(Math.ceil(((100 - k) * 20) / PULL.tickMs) + 1);
    for (let i = 1; i < ticks.length; i++)
      expect((ticks[i] as Tick).lastMsgId).toBeGreaterThan((ticks[i - 1] as Tick).lastMsgId);
    vi.advanceTimersByTime(PULL.tickMs);
    // The last message is announced by the trailing tick.
    expect(ticks.at(-1)?.lastMsgId).toBe(msgId);
    expect(ticks.every((t) => t.mode === 'pull')).toBe(true);
  });

  it('a quiet group goes back to push after the hold with a push tick at its head; the next message is pushed', () => {
    for (let i = 0; i < 100; i++) {
      post();
      vi.advanceTimersByTime(20);
    }
    expect(modes.modeOf('g')).toBe('pull');
    const head = msgId;
    vi.advanceTimersByTime(1000 * Math.log(50 / PULL.exitRate) + PULL.holdMs + 2 * PULL.tickMs);
    expect(modes.modeOf('g')).toBe('push');
    expect(changes).toEqual(['g:pull', 'g:push']);
    expect(ticks.at(-1)).toEqual({ groupId: 'g', epoch: 'e', lastMsgId: head, mode: 'push' });
    const n = ticks.length;
    expect(post()).toBe(true);
    vi.advanceTimersByTime(1000);
    expect(ticks.length).toBe(n);
  });

  it('leaving on a message: the push tick says the message before it, which is pushed right after', () => {
    for (let i = 0; i < 100; i++) {
      post();
      vi.advanceTimersByTime(20);
    }
    // Members drop to 1 (everyone left): the hold runs while messages keep coming.
    let pushed = 0;
    for (let i = 0; i < 200 && !pushed; i++) {
      if (post('g', 1)) pushed = msgId;
      vi.advanceTimersByTime(20);
    }
    expect(pushed).toBeGreaterThan(0);
    const push = ticks.filter((t) => t.mode === 'push');
    expect(push).toHaveLength(1);
    expect(push[0]?.lastMsgId).toBe(pushed - 1);
  });

  it('small groups and other groups are unaffected; disabled means every message is pushed', () => {
    for (let i = 0; i < 200; i++) {
      expect(post('small', 3)).toBe(true);
      vi.advanceTimersByTime(5);
    }
    expect(modes.modeOf('small')).toBe('push');
    expect(modes.modeOf('other')).toBe('push');
    expect(ticks).toEqual([]);
    const off = new DeliveryModes({ pull: { ...PULL, enabled: false } });
    off.on('tick', (t) => ticks.push(t));
    for (let i = 0; i < 200; i++)
      expect(off.published({ groupId: 'x', msgId: i + 1, prevMsgId: i, epoch: 'e' }, 1000)).toBe(true);
    expect(off.modeOf('x')).toBe('push');
    off.stop();
  });
});

describe('configuration of shard.delivery', () => {
  it('has defaults, and refuses an exitRate that is not below enterRate', () => {
    const d = parseConfig({}).shard.delivery;
    expect(d.pull).toEqual({
      enabled: true,
      minMembers: 100,
      enterRate: 10,
      exitRate: 5,
      windowMs: 10_000,
      holdMs: 30_000,
      tickMs: 500,
    });
    expect(d.recent).toEqual({ messagesPerGroup: 256, maxBytes: 64 * 1024 * 1024 });
    expect(() => parseConfig({ shard: { delivery: { pull: { enterRate: 5, exitRate: 5 } } } })).toThrow(
      ConfigError,
    );
    expect(() => parseConfig({ shard: { delivery: { pull: { enterRate: 5, exitRate: 6 } } } })).toThrow(
      /shard\.delivery\.pull\.exitRate: must be below enterRate/,
    );
    expect(() => parseConfig({ shard: { delivery: { pull: { tickMs: 1 } } } })).toThrow(
      /shard\.delivery\.pull\.tickMs/,
    );
  });
});
