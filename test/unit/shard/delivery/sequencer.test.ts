/**
 * The session host's sequencer (docs/delivery-protocol.md section 3): duplicates
 * dropped, gaps repaired from the group's shard before anything newer of the group,
 * other groups not blocked, heads trigger repair (also of a group the host has no state
 * for, e.g. after a restart), a new epoch resets.
 */
import { describe, expect, it } from 'vitest';
import type { MessageRecord } from '../../../../shard/delivery/records.js';
import { DeliverySequencer, type RepairPage } from '../../../../shard/delivery/sequencer.js';
import type { Message } from '../../../../shard/storage/store.js';

const msg = (groupId: string, msgId: number, epoch = 'e1'): Message => ({
  groupId,
  msgId,
  prevMsgId: msgId - 1,
  epoch,
  ts: 1,
  userId: 'a',
  contents: `m${msgId}`,
  clientMsgId: `c${msgId}`,
});
const rec = (groupId: string, msgId: number, epoch = 'e1'): MessageRecord => ({
  kind: 'message',
  groupId,
  epoch,
  msgId,
  prevMsgId: msgId - 1,
  recipients: ['u'],
  event: { type: 'message', ...msg(groupId, msgId, epoch) },
});

/** `n`: messages stored per group on the (fake) group's shard. */
function setup(n = 6) {
  const stored = (g: string) => Array.from({ length: n }, (_, i) => msg(g, i + 1));
  const delivered: { groupId: string; msgId: number; recipients: string[] }[] = [];
  const fetches: { groupId: string; after: number }[] = [];
  let repairs = 0;
  let dups = 0;
  const gates: (() => void)[] = [];
  let gated = false;
  const seq = new DeliverySequencer({
    fetch: async (groupId, after, limit): Promise<RepairPage> => {
      fetches.push({ groupId, after });
      if (gated) await new Promise<void>((r) => gates.push(r));
      return {
        messages: stored(groupId)
          .filter((m) => m.msgId > after)
          .slice(0, limit),
        recipients: ['u', 'w'],
      };
    },
    deliver: (recipients, event) =>
      delivered.push({ groupId: event.groupId as string, msgId: event.msgId as number, recipients }),
    onRepair: () => repairs++,
    onDuplicate: () => dups++,
    pageSize: 3,
  });
  return {
    seq,
    delivered,
    fetches,
    ids: (g: string) => delivered.filter((d) => d.groupId === g).map((d) => d.msgId),
    counts: () => ({ repairs, dups }),
    gate: (on: boolean) => {
      gated = on;
    },
    release: () => {
      for (const g of gates.splice(0)) g();
    },
  };
}

const tick = () => new Promise((r) => setTimeout(r, 5));

describe('DeliverySequencer', () => {
  it('delivers in order from the first record and drops duplicates', () => {
    const t = setup();
    t.seq.accept(rec('g', 5));
    t.seq.accept(rec('g', 6));
    t.seq.accept(rec('g', 6));
    t.seq.accept(rec('g', 4));
    t.seq.accept(rec('g', 7));
    expect(t.ids('g')).toEqual([5, 6, 7]);
    expect(t.counts()).toEqual({ repairs: 0, dups: 2 });
    expect(t.fetches).toEqual([]);
  });

  it('repairs a gap from the group shard before delivering newer records; other groups go on', async () => {
    const t = setup();
    t.gate(true);
    t.seq.accept(rec('g', 1));
    t.seq.accept(rec('g', 5)); // 2..4 missing
    t.seq.accept(rec('g', 6));
    t.seq.accept(rec('h', 1));
    t.seq.accept(rec('h', 2));
    expect(t.ids('g')).toEqual([1]);
    expect(t.ids('h')).toEqual([1, 2]);
    expect(t.seq.state('g')?.repairing).toBe(true);
    t.release();
    for (let i = 0; i < 10 && t.ids('g').length < 6; i++) {
      await tick();
      t.release();
    }
    expect(t.ids('g')).toEqual([1, 2, 3, 4, 5, 6]);
    expect(t.fetches[0]).toEqual({ groupId: 'g', after: 1 });
    expect(t.counts().repairs).toBe(1);
    // Repaired messages go to the recipients the group's shard named; records keep theirs.
    expect(t.delivered.find((d) => d.msgId === 3)?.recipients).toEqual(['u', 'w']);
    expect(t.delivered.find((d) => d.groupId === 'g' && d.msgId === 5)?.recipients).toEqual(['u']);
    // Later records after the repair: no duplicate of what the repair delivered.
    t.gate(false);
    t.seq.accept(rec('g', 6));
    t.seq.accept(rec('g', 7));
    expect(t.ids('g')).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(t.counts().dups).toBe(1);
  });

  it('a head ahead of the last delivered msgId repairs the tail; a head not ahead does nothing', async () => {
    const t = setup(8);
    t.seq.accept(rec('g', 1));
    t.seq.accept({ kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 1 });
    expect(t.fetches).toEqual([]);
    t.seq.accept({ kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 8 });
    for (let i = 0; i < 20 && t.ids('g').length < 8; i++) await tick();
    expect(t.ids('g')).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(t.counts().repairs).toBe(1);
  });

  it('a head of a group with no state here (a restarted host) delivers the head message, then follows on', async () => {
    // The host restarted; the batch that carried the group's last records was lost, so
    // the first thing it hears of the group is a head. Its clients caught up (read
    // ?after=) before those messages were stored: only the host can tell them.
    const t = setup(8);
    t.seq.accept({ kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 8 });
    for (let i = 0; i < 20 && t.ids('g').length < 1; i++) await tick();
    // Like a first record: the head's message is delivered (what came before is the
    // clients' catch-up, which the gap before it starts), not the group's whole history.
    expect(t.fetches).toEqual([{ groupId: 'g', after: 7 }]);
    expect(t.ids('g')).toEqual([8]);
    expect(t.delivered[0]?.recipients).toEqual(['u', 'w']);
    expect(t.seq.state('g')).toMatchObject({ epoch: 'e1', last: 8, repairing: false });
    expect(t.counts().repairs).toBe(1);
    // From there on as usual: a repeated head does nothing, the next record follows.
    t.seq.accept({ kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 8 });
    t.seq.accept(rec('g', 9));
    expect(t.ids('g')).toEqual([8, 9]);
    expect(t.fetches).toHaveLength(1);
  });

  it('a head with a new epoch resets the group and delivers the head message of that epoch', async () => {
    const t = setup(3);
    t.seq.accept(rec('g', 5, 'e0'));
    t.seq.accept({ kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 3 });
    for (let i = 0; i < 20 && t.ids('g').length < 2; i++) await tick();
    expect(t.ids('g')).toEqual([5, 3]);
    expect(t.seq.state('g')).toMatchObject({ epoch: 'e1', last: 3 });
  });

  it('a new epoch resets the group: its first record is delivered', () => {
    const t = setup();
    t.seq.accept(rec('g', 1));
    t.seq.accept(rec('g', 2));
    t.seq.accept(rec('g', 1, 'e2'));
    t.seq.accept(rec('g', 2, 'e2'));
    expect(t.ids('g')).toEqual([1, 2, 1, 2]);
    expect(t.seq.state('g')).toMatchObject({ epoch: 'e2', last: 2 });
    expect(t.counts().dups).toBe(0);
  });

  it('retries a failed repair fetch and then completes', async () => {
    let fail = 2;
    const delivered: number[] = [];
    const seq = new DeliverySequencer({
      fetch: async (g, after) => {
        if (fail-- > 0) throw new Error('down');
        return { messages: [2, 3].filter((i) => i > after).map((i) => msg(g, i)), recipients: ['u'] };
      },
      deliver: (_r, e) => delivered.push(e.msgId as number),
      retryMinMs: 5,
      retryMaxMs: 10,
    });
    seq.accept(rec('g', 1));
    seq.accept(rec('g', 3));
    for (let i = 0; i < 50 && delivered.length < 3; i++) await tick();
    expect(delivered).toEqual([1, 2, 3]);
    seq.stop();
  });

  it('typing records are delivered at once, unordered', () => {
    const t = setup();
    t.seq.accept({
      kind: 'typing',
      groupId: 'g',
      recipients: ['u'],
      event: { type: 'typing', groupId: 'g', userId: 'a' },
    });
    expect(t.delivered).toHaveLength(1);
  });
});
