/**
 * One HTTP exchange between a client request and the shard that owns its key: the
 * router's hot path. The request head (and bounded body) is written in one go on a
 * pooled keep-alive connection; the response is parsed with ResponseParser and
 * written back to the client connection with backpressure. Failures map to the
 * answers of docs/architecture.md section 2.
 *
 * A 421 that carries a shard map under which the key has another owner (see
 * router/shard-map.ts) is read to its end and never reaches the client: once it is
 * complete (its connection back in the pool or closed) the owner sends the request
 * again, as a new Exchange with the new shard. A 421 without a map is a configuration
 * mismatch (503); any other 421 passes to the client unchanged.
 */
import type { ClientConnection, ExchangeHooks } from './client-connection.js';
import type { DeadlineSweeper } from './deadlines.js';
import type { RouterError } from './errors.js';
import type { ResponseCallbacks, ResponseHead } from './response-parser.js';
import { ParseError } from './response-parser.js';
import { AnswerDecision, type MapReader, type Redispatch } from './shard-map.js';
import type { ExchangeSink, UpstreamConnection, UpstreamPool } from './upstream-pool.js';

/** What an exchange reports back to the router. */
export interface ExchangeOwner extends MapReader {
  /** Sends a request answered 421 again, to `shard` (its previous exchange is over). */
  redispatch(client: ClientConnection, r: Redispatch, shard: number, startedAt: number): void;
  readonly retryAfter: number;
  readonly upstreamMs: number;
  readonly clock: DeadlineSweeper;
  /** The exchange finished; `code` is what the client got (0 when its connection was cut). */
  finished(shard: number, code: number, startedAt: number): void;
  upstreamFailure(shard: number, reason: string, err?: Error): void;
  refused(shard: number): void;
  connected(shard: number): void;
  misdirected(shard: number): void;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

export class Exchange implements ExchangeSink, ResponseCallbacks, ExchangeHooks {
  private conn: UpstreamConnection | undefined;
  private reused = false;
  private retried = false;
  /** Relayed, sent again to another shard, or a 421 answered by the router. */
  private readonly answer = new AnswerDecision();
  private done = false;
  /** The parser saw the end of the response (onEnd), and whether the connection may be reused. */
  private ended = false;
  private reusable = false;
  private readonly acquireCb = this.onAcquire.bind(this);

  constructor(
    private readonly client: ClientConnection,
    private readonly method: string,
    private readonly shard: number,
    private readonly pool: UpstreamPool,
    private readonly head: string,
    private readonly body: Buffer | undefined,
    private readonly requestId: string,
    private readonly startedAt: number,
    private readonly owner: ExchangeOwner,
    /** What a 421 needs to send the request again; undefined: it cannot be. */
    private readonly retry: Redispatch | undefined = undefined,
  ) {}

  start(): void {
    this.client.setHooks(this);
    this.pool.acquire(this.acquireCb);
  }

  private onAcquire(err: NodeJS.ErrnoException | null, conn?: UpstreamConnection, reused?: boolean): void {
    if (this.done) {
      if (conn) this.pool.release(conn);
      return;
    }
    if (err || !conn) {
      const code = err?.code;
      if (code === 'EPOOLFULL') {
        this.owner.upstreamFailure(this.shard, 'overloaded', err ?? undefined);
        this.fail(503, 'shard_overloaded', `shard ${this.shard} has too many requests waiting`, true);
      } else if (code === 'ESHUTDOWN') {
        this.fail(503, 'router_shutting_down', 'the router is shutting down', true);
      } else {
        if (code === 'ECONNREFUSED') this.owner.refused(this.shard);
        this.owner.upstreamFailure(
          this.shard,
          code === 'ECONNTIMEOUT' ? 'connect_timeout' : 'refused',
          err ?? undefined,
        );
        this.fail(
          503,
          'shard_unavailable',
          `shard ${this.shard} is unavailable (${code ?? 'connect failed'})`,
          true,
        );
      }
      return;
    }
    if (!reused) this.owner.connected(this.shard);
    this.conn = conn;
    this.reused = reused === true;
    conn.uses++;
    conn.sink = this;
    this.ended = false;
    conn.parser.reset(this, this.method);
    const socket = conn.socket;
    conn.deadline = this.owner.clock.now + this.owner.upstreamMs;
    const body = this.body;
    if (body && body.length > 0) {
      // Head and body in one write.
      const buf = Buffer.allocUnsafe(this.head.length + body.length);
      const n = buf.write(this.head, 0, 'latin1');
      body.copy(buf, n);
      socket.write(buf);
    } else {
      socket.write(this.head, 'latin1');
    }
  }

  // --- ExchangeSink: events of the upstream socket ---

  onData(chunk: Buffer): void {
    const conn = this.conn;
    if (!conn) return;
    let used: number;
    try {
      used = conn.parser.consume(chunk);
    } catch (err) {
      this.protocolError(err as Error);
      return;
    }
    if (this.ended) {
      // The response is complete. Bytes beyond it mean the upstream connection is broken
      // (a second response, a body longer than its length, a body on 204/304/HEAD): the
      // response still goes to the client; the socket is closed, never handed to another
      // request, whose response those bytes would become.
      this.conn = undefined;
      if (used < chunk.length) {
        this.pool.discard(conn);
        this.owner.upstreamFailure(
          this.shard,
          'overflow',
          new Error(`${chunk.length - used} bytes after the end of the response`),
        );
      } else if (this.reusable) this.pool.release(conn);
      else this.pool.discard(conn);
      this.complete();
      return;
    }
    // More to come: the upstream has upstreamMs for its next bytes. (A response that ended
    // here needs no deadline: its connection went back to the pool or was closed.)
    conn.deadline = this.owner.clock.now + this.owner.upstreamMs;
    // One write for whatever this chunk produced.
    const ok = this.client.flush();
    if (!ok && !this.done && this.conn === conn) {
      // The client is slower than the shard: stop reading the shard until it catches up.
      // The shard is not late meanwhile; the client's wait has its own bound (onceDrain).
      const socket = conn.socket;
      socket.pause();
      conn.deadline = 0;
      this.client.onceDrain(() => {
        if (this.conn === conn) conn.deadline = this.owner.clock.now + this.owner.upstreamMs;
        socket.resume();
      });
    }
  }

  onSocketError(_err: NodeJS.ErrnoException): void {
    // 'close' follows every 'error'; the outcome is decided there.
  }

  onSocketClose(): void {
    const conn = this.conn;
    if (!conn || this.done) return;
    this.conn = undefined;
    if (conn.parser.finishOnClose()) {
      this.complete();
      return;
    }
    if (this.reused && !conn.parser.started && !this.retried && this.retryable()) {
      // A kept-alive connection the shard had already closed: nothing of this request reached it.
      this.retried = true;
      this.pool.acquire(this.acquireCb, true);
      return;
    }
    this.owner.upstreamFailure(this.shard, 'reset');
    this.fail(502, 'upstream_reset', `shard ${this.shard} closed the connection before answering`, false);
  }

  onTimeout(): void {
    const conn = this.conn;
    if (!conn || this.done) return;
    this.conn = undefined;
    this.pool.discard(conn);
    this.owner.upstreamFailure(this.shard, 'timeout');
    this.fail(
      504,
      'upstream_timeout',
      `shard ${this.shard} did not answer within ${this.owner.upstreamMs} ms`,
      false,
    );
  }

  // --- ResponseCallbacks: the parsed response ---

  onHead(head: ResponseHead): void {
    if (!this.answer.relays(this.owner, this.shard, head, this.retry)) return;
    this.client.respondHead(head.statusCode, head.statusMessage, head.headers, head.framing);
  }

  onBody(chunk: Buffer): void {
    if (this.answer.withheld || this.done) return;
    this.client.respondBody(chunk);
  }

  onEnd(reusable: boolean): void {
    // Settled by the caller of the parser, which knows whether bytes followed (onData, onSocketClose).
    this.ended = true;
    this.reusable = reusable;
  }

  /** The response ended: its last bytes go to the client (or the 421 becomes a 503). */
  private complete(): void {
    if (this.done) return;
    if (this.answer.rerouteTo !== undefined && this.retry) {
      // Nothing of the 421 went to the client: the request goes again, to the new owner.
      this.done = true;
      this.client.setHooks(undefined);
      this.owner.redispatch(this.client, this.retry, this.answer.rerouteTo, this.startedAt);
      return;
    }
    if (this.answer.misdirected) {
      this.owner.misdirected(this.shard);
      this.fail(
        503,
        'shard_misdirected',
        `shard ${this.shard} does not own this key under its topology: router and shard configurations disagree`,
        true,
      );
      return;
    }
    this.done = true;
    this.client.respondEnd();
    // Counted before the flush: finishing the response may start the client's next request.
    this.owner.finished(this.shard, this.client.status, this.startedAt);
    this.client.flush();
  }

  // --- ExchangeHooks: the client went away ---

  onClientClose(): void {
    if (this.done) return;
    this.done = true;
    const conn = this.conn;
    this.conn = undefined;
    if (conn) this.pool.discard(conn);
    else this.pool.cancel(this.acquireCb);
    this.owner.finished(this.shard, 0, this.startedAt);
  }

  // --- helpers ---

  private retryable(): boolean {
    return IDEMPOTENT.has(this.method) || !this.body || this.body.length === 0;
  }

  private protocolError(err: Error): void {
    const conn = this.conn;
    this.conn = undefined;
    if (conn) this.pool.discard(conn);
    if (this.done) return;
    this.owner.upstreamFailure(this.shard, 'protocol', err);
    const message = err instanceof ParseError ? err.message : 'invalid response';
    this.fail(
      502,
      'upstream_protocol_error',
      `shard ${this.shard} sent an invalid response: ${message}`,
      false,
    );
  }

  private fail(status: number, code: string, message: string, retryAfter: boolean): void {
    if (this.done) return;
    this.done = true;
    if (this.client.committed) {
      // Part of the response is already on its way: the client must see a cut connection.
      this.client.abort();
      this.owner.finished(this.shard, 0, this.startedAt);
      return;
    }
    const e: RouterError = { status, code, message };
    if (retryAfter) e.retryAfter = this.owner.retryAfter;
    this.client.respondError(e, this.requestId);
    this.owner.finished(this.shard, status, this.startedAt);
  }
}
