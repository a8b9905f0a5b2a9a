/**
 * The open-files limit against the connection limits (common/open-files.ts): a router or
 * shard started under a hard limit lower than its settings may need says so in its log,
 * and says nothing when the limit suffices. Real processes under `prlimit` (util-linux):
 * Node raises its soft limit to the hard one, so the hard limit is what counts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseOpenFilesLimit } from '../../common/open-files.js';
import {
  CLI,
  childEnv,
  freePorts,
  startProcess,
  useProcessCleanup,
  writeYamlConfig,
} from '../helpers/processes.js';
import { routerConfig, startBackends, startRouter } from '../helpers/shardchat.js';

const registry = useProcessCleanup();
const PRLIMIT = ['/usr/bin/prlimit', '/bin/prlimit'].find((p) => existsSync(p));
const WARNING = /the open-files limit \(3000\) is below/;

let dir: string;
beforeAll(async () => {
  dir = await registry.tempDir('file', 'shardchat-open-files-');
});

describe.skipIf(!PRLIMIT)('open-files limit at start', () => {
  const wrap = [PRLIMIT as string, '--nofile=3000:3000'];

  it('the process gets the hard limit as its own', async () => {
    const backends = await startBackends(1);
    const router = await startRouter(dir, routerConfig(backends), { wrap, scope: 'test' });
    const limits = readFileSync(`/proc/${router.proc.pid}/limits`, 'utf8');
    expect(parseOpenFilesLimit(limits)).toBe(3000);
  });

  it('a router whose maxConnections needs more descriptors than the limit warns; one within it does not', async () => {
    const backends = await startBackends(1);
    // 2 x 2,000 + 1 shard x 256 + 16 = 4,272 > 3,000
    const over = await startRouter(
      dir,
      routerConfig(backends, { router: { limits: { maxConnections: 2000 } } }),
      {
        wrap,
        scope: 'test',
      },
    );
    const line = await over.proc.waitForLine(WARNING, { timeoutMs: 5000 });
    const entry = JSON.parse(line) as Record<string, unknown>;
    expect(entry).toMatchObject({
      level: 'warn',
      openFilesLimit: 3000,
      needed: 4272,
      'router.limits.maxConnections': 2000,
    });
    // 2 x 1,000 + 256 + 16 = 2,272 <= 3,000: listening, and no warning by the time it stops.
    const within = await startRouter(
      dir,
      routerConfig(backends, { router: { limits: { maxConnections: 1000 } } }),
      {
        wrap,
        scope: 'test',
      },
    );
    await within.proc.waitForLine(/router listening/);
    await within.proc.stop();
    expect(within.proc.output()).not.toMatch(/open-files limit/);
  });

  it('a shard whose maxConnections needs more descriptors than the limit warns', async () => {
    const [port, adminPort] = (await freePorts(2)) as [number, number];
    const config = await writeYamlConfig(
      dir,
      {
        topology: { targets: [`http://127.0.0.1:${port}`] },
        shard: {
          host: '127.0.0.1',
          port,
          adminPort,
          dataDir: `${dir}/shard-data`,
          limits: { maxConnections: 5000 },
        },
        log: { level: 'info' },
      },
      'shard.yaml',
    );
    const shard = await startProcess({
      name: 'shard-0',
      args: [CLI, 'shard', '--config', config],
      wrap,
      env: childEnv({
        SHARDCHAT__shard__ordinal: '0',
        SHARDCHAT_AUTH_SECRET: 'a'.repeat(32),
        SHARDCHAT_INTERNAL_TOKEN: 'internal-token',
      }),
      waitForPorts: [port, adminPort],
      scope: 'test',
      registry,
    });
    const line = await shard.waitForLine(WARNING, { timeoutMs: 5000 });
    // 5,000 + 2 x 256 + 16
    expect(JSON.parse(line)).toMatchObject({
      level: 'warn',
      needed: 5528,
      'shard.limits.maxConnections': 5000,
    });
  });
});
