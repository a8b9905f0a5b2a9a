// The processes a bench script starts (shards, routers, the reshard CLI), kept so that none
// outlives the run: each in its own process group, with BENCH_MARKER=<work dir> in its
// environment and its output in <work>/<name>.log; their pids are saved, so that a run
// reaps what an earlier run, itself SIGKILLed, left behind. Stopped with SIGTERM, then
// SIGKILL, and with SIGKILL at the script's exit at the latest.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { dirname, join } from 'node:path';
import { log, sleep } from './lib.mjs';

export class BenchProcesses {
  /**
   * @param {{ root: string, work: string, mainJs: string, pidsFile: string }} o
   *   `mainJs`: the CLI every process runs; `work`: logs (and the marker); `pidsFile`: the saved pids.
   */
  constructor(o) {
    this.o = o;
    /** @type {{ name: string, child: import('node:child_process').ChildProcess, pid: number, exited: boolean, done: Promise<{ code: number | null, signal: string | null }> }[]} */
    this.procs = [];
    process.on('exit', () => this.killAllNow());
  }

  /**
   * Starts `node [nodeArgs] <mainJs> ...args`; output to <work>/<name>.log, or piped with
   * `capture` (p.child.stdout / stderr).
   */
  start(name, args, env = {}, { capture = false, nodeArgs = [] } = {}) {
    fs.mkdirSync(this.o.work, { recursive: true });
    const out = capture ? 'pipe' : fs.openSync(join(this.o.work, `${name}.log`), 'w');
    const child = spawn(process.execPath, [...nodeArgs, this.o.mainJs, ...args], {
      cwd: this.o.root,
      detached: true,
      stdio: ['ignore', out, out],
      env: { ...process.env, ...env, BENCH_MARKER: this.o.work },
    });
    if (!capture) fs.closeSync(out);
    const p = { name, child, pid: child.pid, exited: false, done: undefined };
    p.done = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        p.exited = true;
        this.savePids();
        resolve({ code, signal });
      });
    });
    this.procs.push(p);
    this.savePids();
    return p;
  }

  /** Whether a process (other than those named in `except`) has exited. */
  anyExited(except = []) {
    return this.procs.some((p) => p.exited && !except.includes(p.name));
  }

  /** SIGTERM to one process, SIGKILL after `graceMs`. */
  async stop(p, graceMs = 5000) {
    await this.stopAll(graceMs, [p]);
  }

  /** SIGTERM to every process still running, SIGKILL to those left after `graceMs`. */
  async stopAll(graceMs = 10_000, procs = this.procs) {
    const signal = (sig) => {
      for (const p of procs) {
        if (p.exited) continue;
        try {
          process.kill(-p.pid, sig);
        } catch {
          p.exited = true;
        }
      }
    };
    signal('SIGTERM');
    const deadline = Date.now() + graceMs;
    while (procs.some((p) => !p.exited) && Date.now() < deadline) await sleep(50);
    signal('SIGKILL');
    for (let i = 0; i < 40 && procs.some((p) => !p.exited); i++) await sleep(50);
    this.savePids();
  }

  /** Synchronous last resort (the script's 'exit'): SIGKILL every process group still running. */
  killAllNow() {
    for (const p of this.procs) {
      if (p.exited) continue;
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }

  /** Prints the last lines of every process's log (after a failed run). */
  logTails(lines = 10) {
    for (const p of this.procs) {
      try {
        const tail = fs
          .readFileSync(join(this.o.work, `${p.name}.log`), 'utf8')
          .split('\n')
          .slice(-lines)
          .join('\n');
        if (tail.trim()) log(`--- ${p.name}.log (tail)\n${tail}`);
      } catch {
        // no log (a captured process)
      }
    }
  }

  savePids() {
    try {
      fs.mkdirSync(dirname(this.o.pidsFile), { recursive: true });
      fs.writeFileSync(
        this.o.pidsFile,
        JSON.stringify(this.procs.filter((p) => !p.exited).map((p) => p.pid)),
      );
    } catch {
      // best effort
    }
  }

  /** Kills the processes an earlier run left behind (theirs by BENCH_MARKER, or by their command line). */
  reapLeftovers() {
    let pids = [];
    try {
      pids = JSON.parse(fs.readFileSync(this.o.pidsFile, 'utf8'));
    } catch {
      return;
    }
    for (const pid of Array.isArray(pids) ? pids : []) {
      if (!Number.isInteger(pid) || pid <= 1) continue;
      let cmd = '';
      let environ = '';
      try {
        cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
        environ = `\0${fs.readFileSync(`/proc/${pid}/environ`, 'utf8')}`;
      } catch {
        continue;
      }
      // A shard replaces its command line with a process title: the marker says it is ours.
      const ours =
        environ.includes(`\0BENCH_MARKER=${this.o.work}\0`) ||
        (cmd.includes(this.o.mainJs) && cmd.includes(this.o.work));
      if (!ours) continue;
      log(`killing process ${pid} left over from an earlier run`);
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    fs.rmSync(this.o.pidsFile, { force: true });
  }
}

/**
 * Stops the run on SIGINT, SIGTERM or SIGHUP (exit 130) and when it takes longer than
 * `timeoutS` (exit 124), after `cleanup()`.
 */
export function stopOnSignalsAndTimeout(cleanup, timeoutS, what) {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      log(`\n${sig}: stopping ${what}`);
      cleanup().finally(() => process.exit(130));
    });
  }
  const watchdog = setTimeout(() => {
    log(`watchdog: the run took longer than ${timeoutS}s; stopping`);
    cleanup().finally(() => process.exit(124));
  }, timeoutS * 1000);
  watchdog.unref();
}
