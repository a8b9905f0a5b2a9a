/**
 * The memory ring of recent messages (shard/delivery/recent.ts): for every `after` and `limit` it
 * answers exactly what `SELECT … WHERE msg_id > after ORDER BY msg_id LIMIT limit` does
 * (here: the same filter on the full log), or nothing when the range is not all in the
 * ring; its bounds (messages per group, bytes over all groups) hold; a hole or a new
 * epoch starts the ring over.
 */
import { describe, expect, it } from 'vitest';
import { RecentMessages } from '../../../../shard/delivery/recent.js';
import type { Message } from '../../../../shard/storage/store.js';

const msg = (groupId: string, msgId: number, contents = `m${msgId}`, epoch = 'e1'): Message => ({
  groupId,
  msgId,
  prevMsgId: msgId - 1,
  epoch,
  ts: 1000 + msgId,
  userId: 'u',
  contents,
  clientMsgId: `c${msgId}`,
});

const sql = (log: Message[], after: number, limit: number) =>
  log.filter((m) => m.msgId > after).slice(0, limit);

describe('RecentMessages', () => {
  it('answers every covered range as the store would, and nothing for older ones', () => {
    const ring = new RecentMessages(16, 1 << 20);
    const log: Message[] = [];
    for (let id = 1; id <= 40; id++) {
      const m = msg('g', id);
      log.push(m);
      ring.add(m);
      for (let after = 0; after <= id + 2; after++)
        for (const limit of [1, 3, 16, 50]) {
          const got = ring.after('g', after, limit);
          const oldest = Math.max(1, id - 15);
          if (after >= oldest - 1)
            expect(got, `after ${after} limit ${limit} at ${id}`).toEqual(sql(log, after, limit));
          else expect(got).toBeUndefined();
        }
    }
    expect(ring.after('other', 0, 10)).toBeUndefined();
  });

  it('starts over on a hole (a restart of the feed) or a new epoch', () => {
    const ring = new RecentMessages(8, 1 << 20);
    for (let id = 1; id <= 5; id++) ring.add(msg('g', id));
    ring.add(msg('g', 9));
    expect(ring.after('g', 5, 10)).toBeUndefined();
    expect(ring.after('g', 8, 10)?.map((m) => m.msgId)).toEqual([9]);
    ring.add(msg('g', 1, 'x', 'e2'));
    expect(ring.after('g', 0, 10)?.map((m) => [m.msgId, m.epoch])).toEqual([[1, 'e2']]);
  });

  it('keeps within maxBytes by dropping the least recently written groups; 0 messages turns it off', () => {
    const big = 'x'.repeat(1000);
    const ring = new RecentMessages(4, 20_000);
    for (let g = 0; g < 10; g++) for (let id = 1; id <= 4; id++) ring.add(msg(`g${g}`, id, big));
    expect(ring.bytes).toBeLessThanOrEqual(20_000);
    expect(ring.after('g9', 0, 10)?.length).toBe(4);
    expect(ring.after('g0', 0, 10)).toBeUndefined();
    // Writing to an old group makes it the most recent.
    expect(ring.groups).toBeLessThan(10);
    const off = new RecentMessages(0, 1 << 20);
    off.add(msg('g', 1));
    expect(off.after('g', 0, 10)).toBeUndefined();
    expect(off.bytes).toBe(0);
  });
});
