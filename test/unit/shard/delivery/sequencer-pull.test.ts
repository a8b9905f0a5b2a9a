/**
 * The session host's sequencer across push -> pull -> push (shard/delivery/sequencer.ts,
 * docs/delivery-protocol.md section 7): ticks move `last` past the messages that were not
 * pushed, so none of them is a gap and nothing is repaired; a tick stops a repair under
 * way; repeated ticks are dropped unless they change the mode; the push tick lets the
 * next pushed message through at once; when that push tick is lost, the next message (or
 * head) ends pull mode and the usual repair fills the rest.
 */
import { describe, expect, it } from 'vitest';
import type { MessageRecord, TickRecord } from '../../../../shard/delivery/records.js';
import { DeliverySequencer, type RepairPage } from '../../../../shard/delivery/sequencer.js';
import type { Message } from '../../../../shard/storage/store.js';

const msg = (groupId: string, msgId: number): Message => ({
  groupId,
  msgId,
  prevMsgId: msgId - 1,
  epoch: 'e1',
  ts: 1,
  userId: 'a',
  contents: `m${msgId}`,
  clientMsgId: `c${msgId}`,
});
const rec = (msgId: number, groupId = 'g'): MessageRecord => ({
  kind: 'message',
  groupId,
  epoch: 'e1',
  msgId,
  prevMsgId: msgId - 1,
  recipients: ['u'],
  event: { type: 'message', ...msg(groupId, msgId) },
});
const tickRec = (lastMsgId: number, mode: 'push' | 'pull' = 'pull', groupId = 'g'): TickRecord => ({
  kind: 'tick',
  groupId,
  epoch: 'e1',
  lastMsgId,
  mode,
  recipients: ['u'],
  event: { type: 'tick', groupId, epoch: 'e1', lastMsgId, mode },
});

function setup(stored = 100) {
  const out: string[] = [];
  const fetches: number[] = [];
  let repairs = 0;
  const gates: (() => void)[] = [];
  let gated = false;
  const seq = new DeliverySequencer({
    fetch: async (groupId, after, limit): Promise<RepairPage> => {
      fetches.push(after);
      if (gated) await new Promise<void>((r) => gates.push(r));
      const messages: Message[] = [];
      for (let i = after + 1; i <= stored && messages.length < limit; i++) messages.push(msg(groupId, i));
      return { messages, recipients: ['u'] };
    },
    deliver: (_r, e) =>
      out.push(e.type === 'tick' ? `tick ${e.lastMsgId} ${e.mode}` : `${e.type} ${e.msgId}`),
    onRepair: () => repairs++,
    pageSize: 50,
  });
  return {
    seq,
    out,
    fetches,
    repairs: () => repairs,
    gate: (on: boolean) => {
      gated = on;
    },
    release: () => {
      for (const g of gates.splice(0)) g();
    },
  };
}

const pause = () => new Promise((r) => setTimeout(r, 5));

describe('DeliverySequencer in pull mode', () => {
  it('push 1..5, pull (ticks 8, 12), push 13..: no gap, no repair, each event once in order', () => {
    const t = setup();
    for (let i = 1; i <= 5; i++) t.seq.accept(rec(i));
    t.seq.accept(tickRec(6)); // the switch: 6 is the first message not pushed
    t.seq.accept(tickRec(8));
    t.seq.accept(tickRec(8)); // the anti-entropy repeats a tick: dropped
    t.seq.accept(tickRec(12));
    expect(t.seq.state('g')).toMatchObject({ last: 12, pull: true, repairing: false });
    t.seq.accept(tickRec(12, 'push')); // back to push: announced at the same head, so delivered
    t.seq.accept(rec(13));
    t.seq.accept(rec(14));
    expect(t.out).toEqual([
      'message 1',
      'message 2',
      'message 3',
      'message 4',
      'message 5',
      'tick 6 pull',
      'tick 8 pull',
      'tick 12 pull',
      'tick 12 push',
      'message 13',
      'message 14',
    ]);
    expect(t.repairs()).toBe(0);
    expect(t.fetches).toEqual([]);
  });

  it('a tick stops a repair under way: what was not pushed is read by the clients, not repaired', async () => {
    const t = setup();
    t.gate(true);
    t.seq.accept(rec(1));
    t.seq.accept(rec(4)); // 2, 3 lost: repair starts (held at the fetch)
    expect(t.seq.state('g')?.repairing).toBe(true);
    t.seq.accept(tickRec(5)); // the group switched to pull
    expect(t.seq.state('g')).toMatchObject({ last: 5, pull: true, repairing: false });
    t.release();
    await pause();
    t.release();
    await pause();
    // The stale repair delivered nothing; the clients read 2..5 themselves after the tick.
    expect(t.out).toEqual(['message 1', 'tick 5 pull']);
    t.seq.accept(tickRec(9));
    expect(t.out.at(-1)).toBe('tick 9 pull');
    expect(t.fetches).toEqual([1]);
  });

  it('a lost push tick: the next pushed message ends pull mode and the usual repair fills the gap', async () => {
    const t = setup(7);
    t.seq.accept(rec(1));
    t.seq.accept(tickRec(3));
    // tick 6 (push) lost; 7 is pushed
    t.seq.accept(rec(7));
    for (let i = 0; i < 20 && !t.out.includes('message 7'); i++) await pause();
    expect(t.out).toEqual(['message 1', 'tick 3 pull', 'message 4', 'message 5', 'message 6', 'message 7']);
    expect(t.seq.state('g')?.pull).toBe(false);
    expect(t.repairs()).toBe(1);
  });

  it('a head (sent in push mode only) after a lost push tick ends pull mode and repairs the tail', async () => {
    const t = setup(9);
    t.seq.accept(rec(1));
    t.seq.accept(tickRec(4));
    t.seq.accept({ kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 9 });
    for (let i = 0; i < 20 && !t.out.includes('message 9'); i++) await pause();
    expect(t.out).toEqual([
      'message 1',
      'tick 4 pull',
      'message 5',
      'message 6',
      'message 7',
      'message 8',
      'message 9',
    ]);
  });

  it("a host that has nothing of the group yet delivers its first tick and starts from it; other groups' pushes go on", () => {
    const t = setup();
    t.seq.accept(tickRec(40));
    t.seq.accept(rec(1, 'h'));
    t.seq.accept(tickRec(40)); // repeated: dropped
    t.seq.accept(tickRec(41));
    t.seq.accept(tickRec(41, 'push'));
    t.seq.accept(rec(42));
    expect(t.out).toEqual(['tick 40 pull', 'message 1', 'tick 41 pull', 'tick 41 push', 'message 42']);
    expect(t.repairs()).toBe(0);
  });
});
