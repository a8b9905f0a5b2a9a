import { configDefaults, defineConfig } from 'vitest/config';

/**
 * The quick start's test compiles better-sqlite3 with every core for minutes: run beside
 * the other suites it starved their processes (a shard not listening within 20 s, a
 * load finishing before the migration it had to overlap). It runs alone, after them.
 */
const QUICK_START = 'test/integration/npm-start.test.ts';

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // expect.poll waits for real processes (cross-shard delivery, restarts) on a machine
    // shared with other suites: 1 s, the default, is a guess at the machine's load.
    expect: { poll: { timeout: 15_000, interval: 50 } },
    pool: 'forks',
    // Integration suites start real processes on loopback; two cores are shared with them.
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: {
          name: 'suites',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, QUICK_START],
        },
      },
      { extends: true, test: { name: 'quick start', include: [QUICK_START], sequence: { groupOrder: 1 } } },
    ],
  },
});
