/**
 * The test helpers' process starter: a process that never gets ready is killed, and the
 * error says what it was doing (CPU time so far, each thread's state and kernel wait
 * channel), so that a start that times out on a loaded machine can be told apart from
 * one stuck on the disk.
 */
import { describe, expect, it } from 'vitest';
import { freePort, startProcess, startTogether, useProcessCleanup } from '../../helpers/processes.js';

useProcessCleanup();

describe('startProcess', () => {
  it('kills a process that does not listen in time, and tells its threads and CPU time', async () => {
    const port = await freePort();
    const err = await startProcess({
      name: 'never-listens',
      args: ['-e', 'setInterval(() => {}, 1000)'],
      waitForPorts: [port],
      timeoutMs: 600,
    }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/timed out after 600 ms waiting for never-listens to accept connections/);
    expect(err?.message).toMatch(/--- pid \d+: \d+ ms of CPU; threads \(name:state:wait\) \S+:S:\S+/);
  });
});

describe('startTogether', () => {
  it('hands over every start that succeeded before it throws the failure, even the slower ones', async () => {
    const started: string[] = [];
    const later = (v: string, ms: number) => new Promise<string>((r) => setTimeout(() => r(v), ms));
    const err = await startTogether(
      [later('shard-0', 200), Promise.reject(new Error('listen EADDRINUSE')), later('shard-2', 50)],
      (s) => started.push(s),
    ).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toBe('listen EADDRINUSE');
    // With Promise.all the failure is seen at once, and shard-0 and shard-2 go on unseen.
    expect(started.sort()).toEqual(['shard-0', 'shard-2']);
  });

  it('returns them all, in order, when every start succeeds', async () => {
    const started: number[] = [];
    expect(await startTogether([Promise.resolve(1), Promise.resolve(2)], (n) => started.push(n))).toEqual([
      1, 2,
    ]);
    expect(started).toEqual([1, 2]);
  });
});
