/**
 * Fan-out from a group's shard (shard/delivery/fanout.ts), with fake timers and a fake
 * network: one record per destination shard with the recipients there, batched per
 * destination, the local session host served without HTTP, failed batches retried in
 * order, refused ones dropped and counted, queues bounded, heads for the anti-entropy.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../../../common/config.js';
import { createLogger } from '../../../../common/logger.js';
import type { Message } from '../../../../common/protocol.js';
import { BatchRejected, Fanout } from '../../../../shard/delivery/fanout.js';
import { MemberCache } from '../../../../shard/delivery/member-cache.js';
import type { DeliveryBatch, DeliveryRecord } from '../../../../shard/delivery/records.js';
import { ShardMetrics } from '../../../../shard/metrics.js';
import type { Store } from '../../../../shard/storage/store.js';

// Members of group g: their session host is the number in their name (u0a is on shard 0).
const MEMBERS: Record<string, string[]> = { g: ['u0a', 'u0b', 'u1a', 'u2a', 'u2b'] };
let hostOf = (userId: string) => Number(userId[1]);

let sent: { dest: number; batch: DeliveryBatch }[];
let local: DeliveryRecord[];
let send: (dest: number, batch: DeliveryBatch) => Promise<void>;
let metrics: ShardMetrics;
let fanout: Fanout;
let members: MemberCache;

function make(fanoutCfg: Record<string, unknown> = {}) {
  const cfg = parseConfig({
    shard: { fanout: { batchMs: 50, jitterMs: 0, headsMs: 1000, ...fanoutCfg } },
  });
  const store = {
    listMembers: (g: string, after: string, limit: number) =>
      (MEMBERS[g] ?? [])
        .filter((u) => u > after)
        .slice(0, limit)
        .map((userId) => ({ userId, joinedAt: 0 })),
  };
  members = new MemberCache(store, (u) => hostOf(u), 1000);
  metrics = new ShardMetrics(0, {
    counts: () => ({ groups: 0, members: 0 }),
    bytes: () => 0,
  } as unknown as Store);
  fanout = new Fanout({
    cfg,
    log: createLogger('test', 'silent'),
    ordinal: 0,
    metrics,
    members,
    send: (dest, batch) => send(dest, batch),
    faultsEnabled: false,
    random: () => 0.5,
  });
  fanout.on('local', (r) => local.push(r));
}

const msg = (msgId: number): Message => ({
  groupId: 'g',
  msgId,
  prevMsgId: msgId - 1,
  epoch: 'e1',
  ts: 1000 + msgId,
  userId: 'u1a',
  contents: `m${msgId}`,
  clientMsgId: `c${msgId}`,
});

const counter = async (
  c: { get(): Promise<{ values: { value: number; labels: object }[] }> },
  labels: object,
) => (await c.get()).values.find((v) => JSON.stringify(v.labels) === JSON.stringify(labels))?.value ?? 0;

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
  hostOf = (userId: string) => Number(userId[1]);
  sent = [];
  local = [];
  send = async (dest, batch) => {
    sent.push({ dest, batch });
  };
});
afterEach(() => {
  fanout.stop();
  vi.useRealTimers();
});

describe('Fanout', () => {
  it('sends one record per session host with its recipients; the local host gets its record at once', async () => {
    make();
    fanout.published(msg(1));
    expect(local).toEqual([
      expect.objectContaining({ kind: 'message', msgId: 1, recipients: ['u0a', 'u0b'] }),
    ]);
    expect(sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(50);
    expect(sent.map((s) => [s.dest, s.batch.seq, s.batch.records.map((r) => r.kind)])).toEqual([
      [1, 1, ['message']],
      [2, 1, ['message']],
    ]);
    const toTwo = sent.find((s) => s.dest === 2)?.batch;
    expect(toTwo).toMatchObject({
      from: 0,
      records: [{ groupId: 'g', epoch: 'e1', msgId: 1, prevMsgId: 0 }],
    });
    expect(toTwo?.records[0]).toMatchObject({
      recipients: ['u2a', 'u2b'],
      event: { type: 'message', ...msg(1) },
    });
  });

  it('batches what a destination collects during batchMs, and sends a full batch at once', async () => {
    make({ maxBatch: 3 });
    fanout.published(msg(1));
    fanout.published(msg(2));
    await vi.advanceTimersByTimeAsync(50);
    expect(sent.filter((s) => s.dest === 1).map((s) => s.batch.records.length)).toEqual([2]);
    sent = [];
    for (let i = 3; i <= 5; i++) fanout.published(msg(i));
    await vi.advanceTimersByTimeAsync(0);
    // maxBatch reached: no wait for batchMs.
    expect(
      sent.filter((s) => s.dest === 1).map((s) => s.batch.records.map((r) => (r as { msgId: number }).msgId)),
    ).toEqual([[3, 4, 5]]);
  });

  it('retries a failed batch with the same seq while later records wait behind it, in order', async () => {
    make({ retry: { minMs: 100, maxMs: 1000 } });
    let failures = 2;
    send = async (dest, batch) => {
      if (dest === 1 && failures > 0) {
        failures--;
        throw new Error('connection refused');
      }
      sent.push({ dest, batch });
    };
    fanout.published(msg(1));
    await vi.advanceTimersByTimeAsync(50);
    fanout.published(msg(2));
    await vi.advanceTimersByTimeAsync(5000);
    // (Heads of the anti-entropy follow every second; the messages are what counts here.)
    const toOne = sent
      .filter((s) => s.dest === 1 && s.batch.records[0]?.kind === 'message')
      .map((s) => [s.batch.seq, s.batch.records.map((r) => (r as { msgId: number }).msgId)]);
    expect(toOne).toEqual([
      [1, [1]],
      [2, [2]],
    ]);
    expect(await counter(metrics.fanoutRetries, { dest: '1' })).toBe(2);
  });

  it('drops a batch the destination refused for good (4xx) and goes on', async () => {
    make();
    let refuse = true;
    send = async (dest, batch) => {
      if (dest === 2 && refuse) {
        refuse = false;
        throw new BatchRejected('400 bad_field');
      }
      sent.push({ dest, batch });
    };
    fanout.published(msg(1));
    await vi.advanceTimersByTimeAsync(50);
    fanout.published(msg(2));
    await vi.advanceTimersByTimeAsync(50);
    expect(sent.filter((s) => s.dest === 2).map((s) => s.batch.records.length)).toEqual([1]);
    expect(await counter(metrics.fanoutDropped, { dest: '2', reason: 'rejected' })).toBe(1);
  });

  it('bounds a destination queue: the oldest records go first, counted', async () => {
    make({ queueSize: 2 });
    let release: () => void = () => {};
    send = (dest, batch) =>
      dest === 1
        ? new Promise<void>((r) => {
            release = () => {
              sent.push({ dest, batch });
              r();
            };
          })
        : Promise.resolve();
    fanout.published(msg(1));
    await vi.advanceTimersByTimeAsync(50); // batch [1] in flight, never answered yet
    for (let i = 2; i <= 5; i++) fanout.published(msg(i));
    expect(fanout.depth(1)).toBe(3); // 1 in flight + 2 queued (4 and 5)
    expect(await counter(metrics.fanoutDropped, { dest: '1', reason: 'queue_full' })).toBe(2);
    release();
    await vi.advanceTimersByTimeAsync(100);
    release();
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.map((s) => s.batch.records.map((r) => (r as { msgId: number }).msgId))).toEqual([
      [1],
      [4, 5],
    ]);
  });

  it('sends typing to every host of the other members, never to the typist', async () => {
    make();
    fanout.typing('g', 'u2a');
    expect(local).toEqual([expect.objectContaining({ kind: 'typing', recipients: ['u0a', 'u0b'] })]);
    await vi.advanceTimersByTimeAsync(50);
    expect(sent.map((s) => [s.dest, s.batch.records[0]])).toEqual([
      [1, expect.objectContaining({ recipients: ['u1a'] })],
      [
        2,
        expect.objectContaining({
          recipients: ['u2b'],
          event: { type: 'typing', groupId: 'g', userId: 'u2a' },
        }),
      ],
    ]);
  });

  it('repeats the head of a recently active group to the hosts that received it (anti-entropy)', async () => {
    make();
    fanout.published(msg(7));
    await vi.advanceTimersByTimeAsync(50);
    sent = [];
    await vi.advanceTimersByTimeAsync(1000);
    const heads = sent.flatMap((s) => s.batch.records.map((r) => [s.dest, r]));
    expect(heads).toEqual([
      [1, { kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 7 }],
      [2, { kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 7 }],
    ]);
    expect(local.at(-1)).toEqual({ kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 7 });
  });

  it('sends heads to the hosts the members have now: after a map change, the new host of a member hears of records sent to the old one', async () => {
    make();
    fanout.published(msg(7));
    await vi.advanceTimersByTimeAsync(50);
    // The users of host 2 move to host 3 (a new shard map), after record 7 went to host 2.
    hostOf = (userId: string) => (userId[1] === '2' ? 3 : Number(userId[1]));
    members.invalidateAll();
    sent = [];
    await vi.advanceTimersByTimeAsync(1000);
    const heads = sent.flatMap((s) => s.batch.records.map((r) => [s.dest, r]));
    expect(heads).toEqual([
      [1, { kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 7 }],
      [2, { kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 7 }],
      [3, { kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 7 }],
    ]);
  });

  it('resume(): a group that sent nothing from this process (restarted, or moved here) gets heads for the window, then stops', async () => {
    make();
    fanout.resume([
      { groupId: 'g', epoch: 'e1', lastMsgId: 9 },
      { groupId: 'empty', epoch: 'e1', lastMsgId: 0 },
    ]);
    await vi.advanceTimersByTimeAsync(1050);
    const heads = sent.flatMap((s) => s.batch.records.map((r) => [s.dest, r]));
    expect(heads).toEqual([
      [1, { kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 9 }],
      [2, { kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 9 }],
    ]);
    expect(local.at(-1)).toEqual({ kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 9 });
    // A group followed already keeps what it sent (resume does not move it back).
    fanout.published(msg(10));
    fanout.resume([{ groupId: 'g', epoch: 'e1', lastMsgId: 9 }]);
    sent = [];
    await vi.advanceTimersByTimeAsync(1050);
    expect(sent.flatMap((s) => s.batch.records.filter((r) => r.kind === 'head'))).toEqual([
      { kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 10 },
      { kind: 'head', groupId: 'g', epoch: 'e1', lastMsgId: 10 },
    ]);
    // Ten seconds after its last message, a group gets no more heads.
    await vi.advanceTimersByTimeAsync(10_000);
    sent = [];
    await vi.advanceTimersByTimeAsync(3000);
    expect(sent).toEqual([]);
  });
});
