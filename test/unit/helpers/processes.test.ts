/**
 * The test helpers' process starter: a process that never gets ready is killed, and the
 * error says what it was doing (CPU time so far, each thread's state and kernel wait
 * channel), so that a start that times out on a loaded machine can be told apart from
 * one stuck on the disk.
 */
import { describe, expect, it } from 'vitest';
import { freePort, startProcess, useProcessCleanup } from '../../helpers/processes.js';

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
