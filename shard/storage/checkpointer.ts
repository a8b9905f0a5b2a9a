/**
 * Checkpoints off the commit path. In WAL mode SQLite copies the log into the database
 * file (a checkpoint, with its own fsync) inside the commit that finds the log past
 * `wal_autocheckpoint` pages: with large batches that was every few commits, and the
 * commits of the writer thread took twice as long as without it (bench/RESULTS.md,
 * "Checkpoints off the commit path"). Here a thread of its own checkpoints every
 * `everyMs` (PASSIVE: it never blocks the writer), and the shard's connections
 * checkpoint themselves only past BACKSTOP_PAGES, should this thread fall behind or fail.
 */
import { Worker } from 'node:worker_threads';
import type { WireError } from './errors.js';

export type CheckpointerReply =
  | { type: 'checkpointed'; log: number; checkpointed: number }
  | { type: 'failed'; error: WireError };

/**
 * `wal_autocheckpoint` of the shard's connections while the checkpointer runs: 16,384
 * pages (64 MiB of 4 KiB pages), past which a commit checkpoints as SQLite does by itself.
 */
export const BACKSTOP_PAGES = 16_384;

const CLOSE_MS = 5000;

export interface CheckpointerOptions {
  file: string;
  everyMs: number;
  /**
   * Checkpoints started failing (told once, not every `everyMs`: a full disk would fill
   * the log); the backstop still bounds the WAL.
   */
  failed(e: WireError): void;
  /** Checkpoints succeed again after `failures` failed ones. */
  recovered(failures: number): void;
}

export class Checkpointer {
  private readonly worker: Worker;
  /** Checkpoints run, failed, and what the last one found. */
  readonly stats = { runs: 0, failures: 0, log: 0, checkpointed: 0 };
  /** Failures since the last checkpoint that succeeded. */
  private failing = 0;

  constructor(private readonly o: CheckpointerOptions) {
    this.worker = new Worker(new URL('./checkpointer-worker.js', import.meta.url), {
      workerData: { file: o.file, everyMs: o.everyMs },
    });
    this.worker.unref();
    this.worker.on('message', (r: CheckpointerReply) => {
      if (r.type === 'failed') this.fail(r.error);
      else {
        this.stats.runs++;
        this.stats.log = r.log;
        this.stats.checkpointed = r.checkpointed;
        if (this.failing > 0) this.o.recovered(this.failing);
        this.failing = 0;
      }
    });
    this.worker.on('error', (err) => this.fail({ message: err.message, code: 'checkpointer' }));
  }

  private fail(e: WireError): void {
    this.stats.failures++;
    if (this.failing++ === 0) this.o.failed(e);
  }

  async close(): Promise<void> {
    const w = this.worker;
    if (w.threadId === -1) return;
    const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
    w.postMessage({ type: 'close' });
    const timer = setTimeout(() => void w.terminate(), CLOSE_MS);
    await exited;
    clearTimeout(timer);
  }
}
