/** PresenceSet (client/presence-set.ts): snapshots read while events arrive keep the newer events. */
import { describe, expect, it } from 'vitest';
import { PresenceSet } from '../../../client/presence-set.js';

describe('PresenceSet', () => {
  it('applies the events that arrived while a snapshot was read on top of it, in order', () => {
    const p = new PresenceSet();
    const from = p.begin();
    p.event('bob', true); // after the snapshot was taken
    p.event('cy', true);
    p.event('cy', false);
    p.snapshot(from, ['alice', 'cy']);
    p.done();
    expect(p.users().sort()).toEqual(['alice', 'bob']);
  });

  it('with two snapshots in flight, each replays only the events since it began', () => {
    const p = new PresenceSet();
    const first = p.begin();
    p.event('bob', true);
    const second = p.begin();
    p.event('bob', false);
    // The second (newer) snapshot saw bob online; the event after it says offline.
    p.snapshot(second, ['alice', 'bob']);
    p.done();
    expect(p.users().sort()).toEqual(['alice']);
    // The first answers late: replays bob online, then offline.
    p.snapshot(first, ['alice']);
    p.done();
    expect(p.users().sort()).toEqual(['alice']);
    // Nothing is kept once no snapshot is being read.
    p.event('dan', true);
    const third = p.begin();
    p.snapshot(third, ['alice']);
    p.done();
    expect(p.users()).toEqual(['alice']);
  });
});
