/**
 * The worker thread that copies the WAL into the database file (see Checkpointer): its
 * own connection runs a PASSIVE checkpoint every `everyMs`, which waits for no one and
 * lets the writer thread go on committing meanwhile. It tells the main thread what each
 * checkpoint found (frames in the WAL, frames copied).
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { CheckpointerReply } from './checkpointer.js';

const port = parentPort;
if (!port) throw new Error('checkpointer-worker runs in a worker thread');

const { file, everyMs } = workerData as { file: string; everyMs: number };

// The statement lives as long as the thread (see NATIVE_OBJECTS in database.ts).
let db: Database.Database;
let checkpoint: Database.Statement;
try {
  db = new Database(file, { fileMustExist: true });
  db.exec('PRAGMA busy_timeout = 5000');
  checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
} catch (err) {
  const e = err as { message?: string; code?: string };
  port.postMessage({
    type: 'failed',
    error: { message: e.message ?? String(err), code: e.code ?? '' },
  } satisfies CheckpointerReply);
  process.exit(1);
}

let timer: NodeJS.Timeout | undefined;

function tick(): void {
  try {
    const r = checkpoint.get() as { busy: number; log: number; checkpointed: number };
    port?.postMessage({
      type: 'checkpointed',
      log: r.log,
      checkpointed: r.checkpointed,
    } satisfies CheckpointerReply);
  } catch (err) {
    const e = err as { message?: string; code?: string };
    port?.postMessage({
      type: 'failed',
      error: { message: e.message ?? String(err), code: e.code ?? '' },
    } satisfies CheckpointerReply);
  }
  timer = setTimeout(tick, everyMs);
}

port.on('message', (m: { type: 'close' }) => {
  if (m.type !== 'close') return;
  clearTimeout(timer);
  db.close();
  port.close();
});

timer = setTimeout(tick, everyMs);
