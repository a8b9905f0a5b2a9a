/**
 * The router's coarse deadlines (router/deadlines.ts): a deadline set right after the
 * event loop was busy must not expire early (the cause of a 504 in
 * router.test.ts "concurrent large responses ..." on a loaded machine).
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { DeadlineSweeper, type Expirable } from '../../../router/deadlines.js';

const sweepers: DeadlineSweeper[] = [];
afterEach(() => {
  for (const s of sweepers.splice(0)) s.stop();
});

function busy(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // the event loop is blocked, as on a loaded machine
  }
}

describe('DeadlineSweeper', () => {
  it('a deadline set after the event loop was blocked expires no earlier than its timeout', async () => {
    const clock = new DeadlineSweeper(50);
    sweepers.push(clock);
    let setAt = 0;
    const expired = new Promise<number>((resolve) => {
      const item: Expirable = { deadline: 0, expire: () => resolve(Date.now() - setAt) };
      clock.watch([item]);
      clock.start();
      setTimeout(() => {
        busy(400);
        setAt = Date.now();
        item.deadline = clock.now + 300;
      }, 60);
    });
    const after = await expired;
    expect(after).toBeGreaterThanOrEqual(300);
    expect(after).toBeLessThan(300 + 50 + 250);
  });

  it('expires within one step after the deadline', async () => {
    const clock = new DeadlineSweeper(20);
    sweepers.push(clock);
    const setAt = Date.now();
    const after = await new Promise<number>((resolve) => {
      const item: Expirable = { deadline: clock.now + 100, expire: () => resolve(Date.now() - setAt) };
      clock.watch([item]);
      clock.start();
    });
    expect(after).toBeGreaterThanOrEqual(100);
    expect(after).toBeLessThan(100 + 20 + 100);
  });

  it('bytes that arrived while the event loop was blocked are read before anything expires', async () => {
    const clock = new DeadlineSweeper(50);
    sweepers.push(clock);
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const client = net.connect(port, '127.0.0.1');
    await new Promise((resolve) => client.once('connect', resolve));
    const upstream = await accepted;
    let expired = false;
    // An upstream connection: each read moves its deadline (as Exchange.onData does).
    const item: Expirable = { deadline: clock.now + 300, expire: () => (expired = true) };
    upstream.on('data', () => {
      item.deadline = clock.now + 300;
    });
    clock.watch([item]);
    clock.start();
    // The peer answers in time, but this process is held up past the deadline before reading it.
    client.write('the answer');
    busy(600);
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(expired).toBe(false);
    client.destroy();
    upstream.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
});
