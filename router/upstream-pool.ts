/**
 * Keep-alive connections to one shard's public port. Idle connections are reused
 * (most recently used first, so that surplus ones time out), a bounded number is open
 * at once, and requests beyond that wait in a bounded queue.
 */
import net from 'node:net';
import type { DeadlineSweeper, Expirable } from './deadlines.js';
import { ParseError, ResponseParser } from './response-parser.js';

/**
 * Every upstream socket reads into this one buffer (`onread`), which spares a Buffer and
 * a trip through the stream layer per read. What is read is consumed before the callback
 * returns: the response parser copies a partial head, and the client connection copies
 * what it writes (ClientConnection.flush), so nothing keeps a view into this buffer.
 */
const READ_BUFFER = Buffer.allocUnsafe(65536);

/** What an in-flight exchange is told about its connection. */
export interface ExchangeSink {
  onData(chunk: Buffer): void;
  onSocketError(err: NodeJS.ErrnoException): void;
  onSocketClose(): void;
  onTimeout(): void;
}

export class UpstreamConnection implements Expirable {
  readonly socket: net.Socket;
  readonly parser: ResponseParser;
  sink: ExchangeSink | undefined;
  /** Number of exchanges this connection has carried. */
  uses = 0;
  idle = false;
  closed = false;
  /** When the exchange (no answer yet) or the idle period ends; see DeadlineSweeper. */
  deadline = 0;

  constructor(
    socket: net.Socket,
    maxHeadBytes: number,
    private readonly pool: UpstreamPool,
    /** The pool's address generation this connection was opened for (see UpstreamPool.retarget). */
    readonly generation = 0,
  ) {
    this.socket = socket;
    this.parser = new ResponseParser(maxHeadBytes);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.sink?.onSocketError(err);
    });
    socket.on('end', () => {
      // The shard closed its side: an idle connection is gone; an exchange learns it on 'close'.
      if (!this.sink) this.socket.destroy();
    });
    socket.on('close', () => {
      this.closed = true;
      this.deadline = 0;
      this.pool.forget(this);
      this.sink?.onSocketClose();
    });
  }

  /** Bytes read into READ_BUFFER: valid only until this returns. */
  onRead(chunk: Buffer): void {
    const sink = this.sink;
    if (sink) sink.onData(chunk);
    else this.socket.destroy(); // bytes on an idle connection: never reuse it
  }

  expire(): void {
    if (this.sink) this.sink.onTimeout();
    else this.socket.destroy();
  }
}

export interface PoolOptions {
  host: string;
  port: number;
  maxSockets: number;
  maxQueued: number;
  connectMs: number;
  idleMs: number;
  maxHeadBytes: number;
  clock: DeadlineSweeper;
}

export type AcquireCallback = (
  err: NodeJS.ErrnoException | null,
  conn?: UpstreamConnection,
  reused?: boolean,
) => void;

export class PoolFullError extends Error {
  override name = 'PoolFullError';
  code = 'EPOOLFULL';
}

export class UpstreamPool {
  private readonly idle: UpstreamConnection[] = [];
  /** Every open connection, for the deadline sweeper. */
  readonly all = new Set<UpstreamConnection>();
  private readonly waiting: AcquireCallback[] = [];
  private open = 0;
  private destroyed = false;
  /** Where new connections go; changes with retarget(). */
  private host: string;
  private port: number;
  /** Bumped by retarget(): connections of an older generation are never reused. */
  private generation = 0;

  constructor(readonly opts: PoolOptions) {
    this.host = opts.host;
    this.port = opts.port;
  }

  /**
   * The shard moved (kubernetes mode: its pod has a new IP). New connections go to the
   * new address; idle connections to the old one are closed now, busy ones when their
   * exchange ends.
   */
  retarget(host: string, port: number): void {
    if (host === this.host && port === this.port) return;
    this.host = host;
    this.port = port;
    this.generation++;
    for (const c of this.idle.splice(0)) c.socket.destroy();
  }

  get address(): { host: string; port: number } {
    return { host: this.host, port: this.port };
  }

  get openSockets(): number {
    return this.open;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** A connection for one exchange: an idle one, a new one, or a place in the queue. */
  acquire(cb: AcquireCallback, fresh = false): void {
    if (!fresh) {
      const conn = this.idle.pop();
      if (conn) {
        conn.idle = false;
        conn.deadline = 0;
        cb(null, conn, true);
        return;
      }
    }
    if (this.open < this.opts.maxSockets) {
      this.connect(cb);
      return;
    }
    if (this.waiting.length >= this.opts.maxQueued) {
      cb(new PoolFullError(`more than ${this.opts.maxQueued} requests waiting for a connection`));
      return;
    }
    this.waiting.push(cb);
  }

  /** Withdraws a queued acquire (its client went away). */
  cancel(cb: AcquireCallback): void {
    const i = this.waiting.indexOf(cb);
    if (i !== -1) this.waiting.splice(i, 1);
  }

  /** Returns a connection whose exchange ended cleanly. */
  release(conn: UpstreamConnection): void {
    conn.sink = undefined;
    if (
      conn.closed ||
      this.destroyed ||
      conn.generation !== this.generation ||
      conn.socket.readableEnded ||
      conn.socket.destroyed
    ) {
      conn.socket.destroy();
      this.next();
      return;
    }
    const waiter = this.waiting.shift();
    if (waiter) {
      waiter(null, conn, true);
      return;
    }
    conn.idle = true;
    conn.deadline = this.opts.clock.now + this.opts.idleMs;
    this.idle.push(conn);
  }

  /** Closes a connection that must not be reused. */
  discard(conn: UpstreamConnection): void {
    conn.sink = undefined;
    conn.socket.destroy();
  }

  /** Called by a connection once its socket closed. */
  forget(conn: UpstreamConnection): void {
    this.open--;
    this.all.delete(conn);
    if (conn.idle) {
      const i = this.idle.indexOf(conn);
      if (i !== -1) this.idle.splice(i, 1);
    }
    this.next();
  }

  destroy(): void {
    this.destroyed = true;
    for (const c of this.idle.splice(0)) c.socket.destroy();
    const err = Object.assign(new Error('router shutting down'), { code: 'ESHUTDOWN' });
    for (const w of this.waiting.splice(0)) w(err);
  }

  private next(): void {
    if (this.waiting.length === 0 || this.open >= this.opts.maxSockets || this.destroyed) return;
    const waiter = this.waiting.shift();
    if (waiter) this.connect(waiter);
  }

  private connect(cb: AcquireCallback): void {
    if (!this.host) {
      // No address known yet (kubernetes mode, no pod IP seen): as good as refused.
      queueMicrotask(() =>
        cb(Object.assign(new Error('no address known for this shard'), { code: 'ECONNREFUSED' })),
      );
      return;
    }
    this.open++;
    const generation = this.generation;
    let conn: UpstreamConnection | undefined;
    const socket = net.connect({
      host: this.host,
      port: this.port,
      noDelay: true,
      onread: {
        buffer: READ_BUFFER,
        callback: (n: number): boolean => {
          if (conn) conn.onRead(READ_BUFFER.subarray(0, n));
          else socket.destroy();
          return true;
        },
      },
    });
    socket.setTimeout(this.opts.connectMs);
    let state: 'connecting' | 'connected' | 'failed' = 'connecting';
    const fail = (err: NodeJS.ErrnoException) => {
      if (state !== 'connecting') return;
      state = 'failed';
      socket.destroy();
      cb(err);
    };
    const onTimeout = () =>
      fail(
        Object.assign(new Error(`connect timed out after ${this.opts.connectMs} ms`), {
          code: 'ECONNTIMEOUT',
        }),
      );
    socket.on('timeout', onTimeout);
    socket.on('error', fail);
    socket.once('close', () => {
      if (state === 'connected') return; // the UpstreamConnection accounts for it
      fail(Object.assign(new Error('connection closed while connecting'), { code: 'ECONNRESET' }));
      this.open--;
      this.next();
    });
    socket.once('connect', () => {
      if (state !== 'connecting') return;
      state = 'connected';
      socket.off('timeout', onTimeout);
      socket.off('error', fail);
      socket.setTimeout(0);
      socket.setKeepAlive(true, 30_000);
      conn = new UpstreamConnection(socket, this.opts.maxHeadBytes, this, generation);
      this.all.add(conn);
      cb(null, conn, false);
    });
  }
}

export { ParseError };
