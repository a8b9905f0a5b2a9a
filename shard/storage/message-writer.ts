/**
 * Group commit on a worker thread. Appends queue here; one batch at a time goes to the
 * writer thread (shard/storage/message-writer-worker.ts), which stores it in one transaction
 * (one fsync) on its own connection. While a batch commits, the event loop keeps serving
 * and the next batch fills, so the batch grows with the load. Every caller is answered
 * only after the transaction holding its message committed.
 */
import { Worker } from 'node:worker_threads';
import type { WireError } from './errors.js';
import type { AppendRequest, AppendResult, Message, WriterReply, WriterRequest } from './message-sql.js';

interface Pending {
  /** Posted to the writer thread as it is. */
  req: AppendRequest;
  resolve(r: AppendResult): void;
  reject(e: Error): void;
}

export interface MessageWriterOptions {
  /** The database file (created and migrated by the store before the writer starts). */
  file: string;
  /** Messages per transaction at most. */
  maxBatch: number;
  /** The writer connection's `wal_autocheckpoint` (SQLite's default, 1000, when undefined). */
  autocheckpointPages?: number | undefined;
  /** An error from the writer thread as the store reports it (StorageError for disk trouble). */
  toError(e: WireError): Error;
  /** After each committed batch: the new messages, in commit order, and the transaction's time. */
  committed(messages: Message[], seconds: number): void;
}

const WORKER_URL = new URL('./message-writer-worker.js', import.meta.url);
const CLOSE_MS = 5000;

export class MessageWriter {
  private worker: Worker | undefined;
  private readonly queue: Pending[] = [];
  private inFlight: { id: number; items: Pending[] } | undefined;
  private scheduled = false;
  private nextId = 1;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly o: MessageWriterOptions) {}

  /** Appends a message; resolves once it is durable (or with the earlier one for a repeated clientMsgId). */
  append(req: AppendRequest): Promise<AppendResult> {
    if (this.closed) {
      return Promise.reject(this.o.toError({ message: 'the store is closed', code: 'SQLITE_MISUSE' }));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ req, resolve, reject });
      if (!this.inFlight && !this.scheduled) {
        // What arrives in this turn of the event loop goes into the same batch.
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  /** Resolves when no append is queued or committing. */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Appends waiting or being committed. */
  get pending(): number {
    return this.queue.length + (this.inFlight?.items.length ?? 0);
  }

  /** Sends the next batch if none is committing; tells the idle waiters when nothing is left. */
  private pump(): void {
    this.sendNext();
    if (!this.inFlight && this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private sendNext(): void {
    if (this.inFlight || this.queue.length === 0) return;
    const worker = this.worker ?? this.spawn();
    const items = this.queue.splice(0, this.o.maxBatch);
    const id = this.nextId++;
    this.inFlight = { id, items };
    worker.postMessage({ type: 'batch', id, items: items.map((p) => p.req) } satisfies WriterRequest);
  }

  private spawn(): Worker {
    const worker = new Worker(WORKER_URL, {
      workerData: { file: this.o.file, autocheckpointPages: this.o.autocheckpointPages },
    });
    this.worker = worker;
    worker.unref();
    worker.on('message', (r: WriterReply) => this.onReply(r));
    worker.on('error', (err) => this.gone(worker, err.message));
    worker.on('exit', (code) => this.gone(worker, `the message writer exited (${code})`));
    return worker;
  }

  private onReply(r: WriterReply): void {
    switch (r.type) {
      case 'ready':
        return;
      case 'open-failed': {
        // The thread exits; what waits now fails, the next append tries again.
        const e = this.o.toError(r.error);
        this.failInFlight(e);
        for (const p of this.queue.splice(0)) p.reject(e);
        return;
      }
      case 'failed': {
        if (this.inFlight?.id !== r.id) return;
        this.failInFlight(this.o.toError(r.error));
        this.pump();
        return;
      }
      case 'done': {
        const batch = this.inFlight;
        if (batch?.id !== r.id) return;
        this.inFlight = undefined;
        // The next batch (what queued while this one committed) goes to the thread before
        // this one is answered: its commit overlaps the answers, acks and fan-out below.
        this.sendNext();
        const fresh: Message[] = [];
        batch.items.forEach((p, i) => {
          const out = r.results[i];
          if (!out)
            p.reject(this.o.toError({ message: 'no result from the message writer', code: 'SQLITE_ERROR' }));
          else if ('error' in out) p.reject(this.o.toError(out.error));
          else if ('existing' in out) p.resolve({ message: out.existing, created: false });
          else {
            const { req } = p;
            // The columns' order (MESSAGE_COLUMNS), as a message read back has it.
            const message: Message = {
              groupId: req.groupId,
              msgId: out.msgId,
              prevMsgId: out.prevMsgId,
              epoch: out.epoch,
              ts: out.ts,
              userId: req.userId,
              contents: req.contents,
              clientMsgId: req.clientMsgId,
            };
            fresh.push(message);
            p.resolve({ message, created: true });
          }
        });
        this.o.committed(fresh, r.seconds);
        this.pump();
        return;
      }
    }
  }

  private failInFlight(e: Error): void {
    const batch = this.inFlight;
    this.inFlight = undefined;
    if (batch) for (const p of batch.items) p.reject(e);
  }

  /** The thread is gone: its batch may or may not have committed; the clients' retries (same clientMsgId) tell. */
  private gone(worker: Worker, why: string): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    this.failInFlight(this.o.toError({ message: why, code: 'SQLITE_IOERR' }));
    if (this.closed) {
      for (const p of this.queue.splice(0)) p.reject(this.o.toError({ message: why, code: 'SQLITE_IOERR' }));
      for (const w of this.idleWaiters.splice(0)) w();
      return;
    }
    this.pump();
  }

  /** Lets queued appends commit (at most CLOSE_MS), then stops the thread. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.pending > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CLOSE_MS);
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.closed = true;
    const worker = this.worker;
    this.worker = undefined;
    for (const p of this.queue.splice(0))
      p.reject(this.o.toError({ message: 'the store is closed', code: 'SQLITE_MISUSE' }));
    if (!worker) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage({ type: 'close' });
    const timer = setTimeout(() => void worker.terminate(), CLOSE_MS);
    await exited;
    clearTimeout(timer);
  }
}
