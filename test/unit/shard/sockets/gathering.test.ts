/**
 * WriteGathering (shard/sockets/gathering.ts): the writes of one run leave in one write
 * per socket; with a window, a busy shard writes to each socket at most once per
 * window and an idle one at once. Sockets here record what reaches them: a write while
 * corked is held, an uncork hands everything held over in one piece (as writev does).
 */
import type { Duplex } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WriteGathering } from '../../../../shard/sockets/gathering.js';

class RecordingSocket {
  corks = 0;
  held: string[] = [];
  /** Each system call: what it carried. */
  writes: string[][] = [];
  cork(): void {
    this.corks++;
  }
  uncork(): void {
    if (this.corks === 0) return;
    this.corks = 0;
    if (this.held.length > 0) this.writes.push(this.held.splice(0));
  }
  write(b: Buffer): boolean {
    if (this.corks > 0) this.held.push(b.toString());
    else this.writes.push([b.toString()]);
    return true;
  }
}

const frame = (s: string) => Buffer.from(s);

describe('WriteGathering', () => {
  let clock = 0;
  beforeEach(() => {
    vi.useFakeTimers();
    clock = 1000;
  });
  afterEach(() => {
    vi.useRealTimers();
  });
  const gatheringWith = (windowMs: number) => {
    const g = new WriteGathering(() => clock);
    g.windowMs = windowMs;
    return g;
  };
  const advance = (ms: number) => {
    clock += ms;
    vi.advanceTimersByTime(ms);
  };

  it('without a window, writes each run in one write per socket at its end', () => {
    const g = gatheringWith(0);
    const a = new RecordingSocket();
    const b = new RecordingSocket();
    g.run(() => {
      g.write(a as unknown as Duplex, frame('1'));
      g.write(b as unknown as Duplex, frame('1'));
      g.write(a as unknown as Duplex, frame('2'));
      expect(a.writes).toEqual([]);
    });
    expect(a.writes).toEqual([['1', '2']]);
    expect(b.writes).toEqual([['1']]);
    g.run(() => g.write(a as unknown as Duplex, frame('3')));
    expect(a.writes).toEqual([['1', '2'], ['3']]);
  });

  it('with a window: the first run after a quiet spell at once, the next ones gathered until the window ends', async () => {
    const g = gatheringWith(5);
    const a = new RecordingSocket();
    const s = a as unknown as Duplex;
    g.run(() => g.write(s, frame('1')));
    expect(a.writes).toEqual([['1']]);
    advance(1);
    g.run(() => g.write(s, frame('2')));
    advance(1);
    g.run(() => g.write(s, frame('3')));
    // A write outside a run to a socket that waits joins it (order kept).
    g.write(s, frame('4'));
    expect(a.writes).toEqual([['1']]);
    expect(g.gathered(s)).toBe(3);
    advance(2);
    expect(a.writes).toEqual([['1']]);
    advance(1); // 5 ms after the first flush
    expect(a.writes).toEqual([['1'], ['2', '3', '4']]);
    expect(g.gathered(s)).toBe(0);
    // Quiet for longer than the window: the next run leaves at once.
    advance(10);
    g.run(() => g.write(s, frame('5')));
    expect(a.writes).toEqual([['1'], ['2', '3', '4'], ['5']]);
    // A write outside a run waits for the turn's microtasks, then leaves as a run's does:
    // here within the window of the last flush, so at its end.
    g.write(s, frame('6'));
    await Promise.resolve();
    expect(a.writes.at(-1)).toEqual(['5']);
    advance(5);
    expect(a.writes.at(-1)).toEqual(['6']);
  });

  it("gathers writes outside a run until the turn's microtasks have run: the acks of one commit leave together", async () => {
    const g = gatheringWith(5);
    const a = new RecordingSocket();
    const b = new RecordingSocket();
    // One commit resolves ten appends; each answer is written from a microtask of its own.
    const commit = Promise.resolve();
    const acks = Array.from({ length: 10 }, (_, i) =>
      commit.then(() => g.write((i % 2 ? a : b) as unknown as Duplex, frame(String(i)))),
    );
    expect(a.writes).toEqual([]);
    await Promise.all(acks);
    // After a quiet spell: at once, one write per socket.
    expect(a.writes).toEqual([['1', '3', '5', '7', '9']]);
    expect(b.writes).toEqual([['0', '2', '4', '6', '8']]);
    expect(g.gathered(a as unknown as Duplex)).toBe(0);
  });

  it('at a steady rate above the window, writes once per window whatever the number of runs', () => {
    const g = gatheringWith(4);
    const a = new RecordingSocket();
    for (let i = 0; i < 40; i++) {
      g.run(() => g.write(a as unknown as Duplex, frame(String(i))));
      advance(1);
    }
    advance(4);
    expect(a.writes.flat()).toEqual(Array.from({ length: 40 }, (_, i) => String(i)));
    // 40 runs over 40 ms: one write at once, then one every 4 ms.
    expect(a.writes.length).toBeLessThanOrEqual(11);
    expect(a.writes.length).toBeGreaterThanOrEqual(10);
  });

  it('hands a socket its gathered bytes early past 64 KiB, so that what waits stays bounded', () => {
    const g = gatheringWith(1000);
    const a = new RecordingSocket();
    const big = frame('x'.repeat(40 * 1024));
    g.run(() => g.write(a as unknown as Duplex, frame('first'))); // flushes at once, opens the window
    g.run(() => {
      g.write(a as unknown as Duplex, big);
      g.write(a as unknown as Duplex, big);
    });
    expect(a.writes.length).toBe(2);
    expect(g.gathered(a as unknown as Duplex)).toBe(0);
  });
});
