/**
 * Storage faults: a shard whose data directory is a small tmpfs. When the file system is
 * full, writes (messages, groups) get 503 with a JSON error and reads keep working; when
 * space is freed, writes work again. When it is read-only, the shard starts on it (after
 * a clean stop, and after a SIGKILL that left commits in the WAL), stays ready, serves
 * every acknowledged message and answers writes 503 `storage_readonly`; read-write and a
 * restart bring writes back. Nothing acknowledged is ever lost and msgIds stay contiguous.
 *
 * Mounting needs root (CAP_SYS_ADMIN): where `mount -t tmpfs` is not permitted the suite
 * is skipped with a message. The tmpfs is unmounted in cleanup, always.
 */
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Message } from '../../client/types.js';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { WsClient } from '../helpers/http.js';
import {
  CLI,
  childEnv,
  defaultRegistry,
  freePorts,
  runCli,
  startProcess,
  useProcessCleanup,
  waitFor,
} from '../helpers/processes.js';
import {
  chainProblems,
  postOnce,
  readAll,
  sleep,
  summary,
  timedRequest,
  uid,
  users,
} from '../helpers/reliability.js';

useProcessCleanup();

const TMPFS_SIZE = '8m';

function run(cmd: string, args: string[]): { ok: boolean; err: string } {
  try {
    execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    return { ok: true, err: '' };
  } catch (err) {
    return { ok: false, err: String((err as { stderr?: Buffer }).stderr ?? err).trim() };
  }
}

/** Whether this process may mount a tmpfs (checked once, on a throwaway directory). */
function mountPermitted(): { ok: boolean; why: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'shardchat-mountcheck-'));
  try {
    const m = run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir]);
    if (!m.ok) return { ok: false, why: m.err || 'mount failed' };
    run('umount', [dir]);
    return { ok: true, why: '' };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const permitted = mountPermitted();
if (!permitted.ok) {
  console.warn(
    `test/reliability/storage.test.ts SKIPPED: mounting a tmpfs is not permitted here (${permitted.why}); run as root to test disk-full and read-only storage`,
  );
}

/** Writes zeros to `file` until the file system says ENOSPC; returns the bytes written. */
function fillDisk(file: string): number {
  const fd = openSync(file, 'w');
  let written = 0;
  try {
    for (const size of [1 << 20, 1 << 16, 4096, 512, 1]) {
      const buf = Buffer.alloc(size);
      for (;;) {
        try {
          written += writeSync(fd, buf);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw err;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  return written;
}

/**
 * Both ways of checkpointing the WAL: by the checkpointer thread (the default), and
 * inside the commits (`shard.commit.checkpointEveryMs: 0`). With the thread, a write may
 * still succeed on a full disk when SQLite can make it durable in space it already holds
 * (the WAL starts again at its beginning after a complete checkpoint): every write then
 * gets either a 503 or an acknowledgement that reads back. Inside the commits, every write
 * after the first refusal is refused.
 */
const MODES = [
  { mode: 'checkpoints by their own thread', checkpointEveryMs: undefined },
  { mode: 'checkpoints inside the commits', checkpointEveryMs: 0 },
] as const;

describe.skipIf(!permitted.ok).each(MODES)(
  'storage faults on a tmpfs data directory, $mode',
  ({ checkpointEveryMs }) => {
    const strict = checkpointEveryMs === 0;
    let c: Cluster;
    let mnt = '';
    let mounted = false;
    const unmount = () => {
      if (!mounted) return;
      if (!run('umount', [mnt]).ok) run('umount', ['-l', mnt]);
      mounted = false;
    };
    beforeAll(async () => {
      const dir = await defaultRegistry.tempDir();
      mnt = path.join(dir, 'tmpfs');
      mkdirSync(mnt);
      const m = run('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_SIZE}`, 'tmpfs', mnt]);
      if (!m.ok) throw new Error(`mount: ${m.err}`);
      mounted = true;
      c = await startCluster(dir, {
        shards: 1,
        config: { shard: { dataDir: mnt, ...(strict ? { commit: { checkpointEveryMs } } : {}) } },
      });
    }, 60_000);
    afterAll(async () => {
      // The shard first (it holds the files open), then the mount, then the directories.
      for (const s of c?.shards ?? []) await s.proc.stop(3000).catch(() => undefined);
      run('mount', ['-o', 'remount,rw', mnt]);
      unmount();
      await defaultRegistry.cleanup();
    });

    it('answers writes 503 with a JSON error when the disk is full or read-only, keeps reads, loses nothing', async () => {
      const [owner] = await users(c, 'disk', 1);
      const o = owner as NonNullable<typeof owner>;
      const groupId = uid('disk');
      expect(
        (await api(c.router.url, 'PUT', `/groups/${groupId}`, o.token, { subject: 'disk' })).status,
      ).toBe(201);
      const acked = new Map<number, string>();
      let n = 0;
      const post = async () => {
        const clientMsgId = `m${n++}`;
        const r = await postOnce(c.router.url, groupId, o.token, {
          contents: `message ${clientMsgId} ${'x'.repeat(200)}`,
          clientMsgId,
        });
        if (r.status === 201) acked.set(r.body.msgId as number, clientMsgId);
        return r;
      };
      const expectStorage503 = (r: Awaited<ReturnType<typeof post>>, codes: string[]) => {
        expect(r.status, JSON.stringify(r.body)).toBe(503);
        expect(codes).toContain(r.body?.error?.code);
        expect(typeof r.body?.error?.message).toBe('string');
        expect(r.headers?.get('retry-after')).toMatch(/^\d+$/);
      };
      const expectReadsWork = async () => {
        const all = await readAll(c.router.url, groupId, o.token);
        expect(chainProblems(all, 'stored')).toEqual([]);
        for (const [msgId, clientMsgId] of acked) expect(all[msgId - 1]?.clientMsgId).toBe(clientMsgId);
        expect((await timedRequest(c.router.url, 'GET', `/groups/${groupId}`, o.token)).status).toBe(200);
        return all;
      };
      for (let i = 0; i < 20; i++) expect((await post()).status).toBe(201);

      // 1. Disk full.
      const filler = path.join(mnt, 'filler');
      const filled = fillDisk(filler);
      let beforeFirst503 = 0;
      let r = await post();
      while (r.status === 201 && beforeFirst503 < 2000) {
        beforeFirst503++;
        r = await post();
      }
      expectStorage503(r, ['storage_full', 'storage_failed']);
      const fullCode = r.body.error.code as string;
      /** Refused with a 503, or (checkpointer thread only) acknowledged: acked posts are read back below. */
      const expectRefusedOrDurable = (r: Awaited<ReturnType<typeof post>>): boolean => {
        if (!strict && r.status === 201) return false;
        expectStorage503(r, ['storage_full', 'storage_failed']);
        return true;
      };
      // The first refusal above, and ten more posts.
      let full503 = 1;
      for (let i = 0; i < 10; i++) if (expectRefusedOrDurable(await post())) full503++;
      const newGroupId = uid('full');
      const newGroup = await timedRequest(c.router.url, 'PUT', `/groups/${newGroupId}`, o.token, {
        subject: 'x',
      });
      expectRefusedOrDurable(newGroup);
      if (newGroup.status === 201)
        expect((await timedRequest(c.router.url, 'GET', `/groups/${newGroupId}`, o.token)).status).toBe(200);
      await expectReadsWork();
      // A repeated clientMsgId that was acknowledged still answers with its first result.
      const firstAck = acked.get(1) as string;
      const again = await postOnce(c.router.url, groupId, o.token, {
        contents: 'ignored',
        clientMsgId: firstAck,
      });
      const repeatStatus = again.status;

      // Failing checkpoints (the disk is full) are told once, not every 100 ms.
      const checkpointWarnings =
        (c.shards[0]?.proc.output() ?? '').match(/WAL checkpoints are failing/g)?.length ?? 0;
      expect(checkpointWarnings).toBeLessThanOrEqual(1);

      // Space comes back: writes work again.
      unlinkSync(filler);
      let recoveredAfter = 0;
      for (r = await post(); r.status !== 201 && recoveredAfter < 50; r = await post()) recoveredAfter++;
      expect(r.status).toBe(201);
      await expectReadsWork();

      // 2. Read-only. Linux refuses `remount,ro` while a process holds a file open for
      // writing (EBUSY), so the live remount is attempted and, when refused, the shard is
      // stopped (a clean shutdown leaves no -wal and no -shm), the file system remounted
      // read-only and the shard started on it. It must start, say it is ready (the router
      // keeps sending it reads), serve every acknowledged message, and refuse writes with
      // 503 storage_readonly.
      const shard0 = () => c.shards[0] as Cluster['shards'][0];
      const startShardOn = async (label: string) => {
        // As c.restartShard(0), under its own name: a shard that cannot start exits at once.
        const old = shard0();
        const proc = await startProcess({
          name: `shard-0-${label}:${old.port}`,
          args: [CLI, 'shard', '--config', c.configPath],
          env: childEnv({
            ...c.env,
            SHARDCHAT__shard__ordinal: '0',
            SHARDCHAT__shard__port: String(old.port),
            SHARDCHAT__shard__adminPort: String(old.adminPort),
          }),
          waitForPorts: [old.port, old.adminPort],
          timeoutMs: 20_000,
        });
        c.shards[0] = { ...old, proc };
      };
      const remount = (mode: 'ro' | 'rw') => {
        const m = run('mount', ['-o', `remount,${mode}`, mnt]);
        expect(m.ok, m.err).toBe(true);
      };
      /** The checks while the volume is read-only; `restarted`: the shard was started on it. */
      const checkReadOnly = async (restarted: boolean) => {
        await waitFor(
          async () => (await timedRequest(c.router.url, 'GET', `/groups/${groupId}`, o.token)).status === 200,
          { timeoutMs: 10_000, what: 'the shard to serve reads on read-only storage' },
        );
        const ready = await timedRequest(shard0().adminUrl, 'GET', '/readyz', undefined);
        expect(ready.status).toBe(200);
        if (restarted) expect(ready.body.storage).toBe('read-only');
        r = await post();
        expectStorage503(r, ['storage_readonly']);
        expect(r.body.error.message).toMatch(/read-only/);
        const code = r.body.error.code as string;
        for (let i = 0; i < 10; i++) expectStorage503(await post(), ['storage_readonly']);
        const create = await timedRequest(c.router.url, 'PUT', `/groups/${uid('ro')}`, o.token, {
          subject: 'x',
        });
        expectStorage503(create, ['storage_readonly']);
        // A repeated acknowledged clientMsgId still answers with its first result.
        const repeat = await postOnce(c.router.url, groupId, o.token, {
          contents: 'ignored',
          clientMsgId: acked.get(1) as string,
        });
        expect(repeat.status).toBe(200);
        expect(repeat.body.msgId).toBe(1);
        // A group WebSocket opens (hello with the head) and a message on it gets an error event.
        const ws = new WsClient(`${c.router.wsUrl}/groups/${groupId}/ws?token=${o.token}`);
        await ws.opened;
        const hello = await ws.nextJson<{ type: string; lastMsgId: number }>();
        expect(hello).toMatchObject({ type: 'hello', lastMsgId: acked.size });
        ws.send(JSON.stringify({ type: 'message', contents: 'ro', clientMsgId: `ro-ws-${n++}` }));
        const wsError = await ws.nextJson<{ type: string; code: string }>();
        expect(wsError).toMatchObject({ type: 'error', code: 'storage_readonly' });
        ws.terminate();
        const reads = (await expectReadsWork()).length;
        expect(reads).toBe(acked.size);
        return { code, reads, readyz: `${ready.status} ${ready.body.status} ${ready.body.storage}` };
      };
      /** Stops the shard, remounts read-write, restarts: writes work again (retries counted). */
      const backToReadWrite = async () => {
        await shard0().proc.stop();
        remount('rw');
        await c.restartShard(0);
        let retries = 0;
        for (r = await post(); r.status !== 201 && retries < 100; r = await post()) {
          retries++;
          await sleep(50);
        }
        expect(r.status, JSON.stringify(r.body)).toBe(201);
        for (let i = 0; i < 5; i++) expect((await post()).status).toBe(201);
        return retries;
      };
      const live = run('mount', ['-o', 'remount,ro', mnt]);
      let roMode = 'live remount';
      let ro: Awaited<ReturnType<typeof checkReadOnly>>;
      if (live.ok) {
        ro = await checkReadOnly(false);
      } else {
        roMode = 'live remount refused (EBUSY); remounted while the shard was stopped, then restarted';
        await shard0().proc.stop();
        remount('ro');
        await startShardOn('ro');
        ro = await checkReadOnly(true);
      }
      const rwAfter = await backToReadWrite();

      // 3. Read-only after a crash: the shard is killed (its -wal holds the last commits and
      // its -shm stays), the volume remounted read-only, and the shard started on it. The
      // commits only in the WAL must be read too.
      for (let i = 0; i < 5; i++) expect((await post()).status).toBe(201);
      await shard0().proc.kill();
      const walBytes = statSync(path.join(mnt, 'shard-0.sqlite-wal')).size;
      expect(walBytes).toBeGreaterThan(0);
      remount('ro');
      await startShardOn('ro-after-kill');
      const roAfterKill = await checkReadOnly(true);
      const rwAfterKill = await backToReadWrite();

      const all: Message[] = await expectReadsWork();
      expect(all.length).toBe(acked.size);
      const ids = all.map((m) => m.clientMsgId);
      expect(new Set(ids).size).toBe(ids.length);
      summary(strict ? 'storage (checkpoints inside the commits)' : 'storage', {
        tmpfs: TMPFS_SIZE,
        fillerBytes: filled,
        postsAcceptedAfterFill: beforeFirst503,
        fullCode,
        fullWrites503: full503,
        checkpointWarnings,
        fullWritesAcknowledged: 11 - full503,
        fullGroupCreate: newGroup.status,
        fullRepeatedClientMsgId: repeatStatus,
        retriesUntilWritesAfterFree: recoveredAfter,
        readonlyMode: roMode,
        liveRemountRefused: live.ok ? null : live.err.split('\n')[0],
        startsOnReadOnly: true,
        readyzWhileReadonly: ro.readyz,
        readonlyCode: ro.code,
        readonlyWrites503: 11,
        readsWhileReadonly: ro.reads,
        retriesUntilWritesAfterRw: rwAfter,
        walBytesAtKill: walBytes,
        startsOnReadOnlyAfterKill: true,
        readsWhileReadonlyAfterKill: roAfterKill.reads,
        retriesUntilWritesAfterKillAndRw: rwAfterKill,
        acknowledged: acked.size,
        stored: all.length,
        lost: 0,
        duplicated: 0,
      });
    }, 150_000);

    it('refuses to start on a read-only volume without a current database, and says why', async () => {
      const ro = path.join(await defaultRegistry.tempDir(), 'ro');
      mkdirSync(ro);
      const m = run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', ro]);
      expect(m.ok, m.err).toBe(true);
      const outcomes: Record<string, string> = {};
      try {
        const [port, adminPort] = (await freePorts(2)) as [number, number];
        // The shard must exit at once with code 1 and the reason (runCli fails the test if
        // it keeps running).
        const attempt = async (): Promise<string> => {
          const r = await runCli(['shard', '--config', c.configPath], {
            env: childEnv({
              ...c.env,
              SHARDCHAT__shard__ordinal: '0',
              SHARDCHAT__shard__port: String(port),
              SHARDCHAT__shard__adminPort: String(adminPort),
              SHARDCHAT__shard__dataDir: ro,
            }),
            timeoutMs: 30_000,
          });
          expect(r.code, r.stderr).toBe(1);
          return r.stderr;
        };
        // No database at all: nothing to serve.
        expect(run('mount', ['-o', 'remount,ro', ro]).ok).toBe(true);
        const none = await attempt();
        expect(none).toMatch(/volume is read-only.*there is no database to read/);
        outcomes.noDatabase = 'refused: no database to read';
        // A database whose schema is older than the code's (user_version 0): it cannot be
        // migrated on a read-only volume.
        expect(run('mount', ['-o', 'remount,rw', ro]).ok).toBe(true);
        const old = new Database(path.join(ro, 'shard-0.sqlite'));
        old.exec('CREATE TABLE legacy (x INTEGER)');
        old.close();
        expect(run('mount', ['-o', 'remount,ro', ro]).ok).toBe(true);
        const older = await attempt();
        expect(older).toMatch(/schema \(version 0\) is older than this code's/);
        outcomes.olderSchema = 'refused: schema older than the code';
      } finally {
        run('mount', ['-o', 'remount,rw', ro]);
        if (!run('umount', [ro]).ok) run('umount', ['-l', ro]);
      }
      summary('storage-readonly-refusals', outcomes);
    }, 60_000);
  },
);
