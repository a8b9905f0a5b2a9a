import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // expect.poll waits for real processes (cross-shard delivery, restarts) on a machine
    // shared with other suites: 1 s, the default, is a guess at the machine's load.
    expect: { poll: { timeout: 15_000, interval: 50 } },
    pool: 'forks',
    // Integration suites start real processes on loopback; two cores are shared with them.
    maxWorkers: 2,
  },
});
