/**
 * Relays one WebSocket connection to its shard. The upgrade request goes to the shard
 * on a fresh connection while the client connection stays in charge: it holds (and
 * stops reading) whatever the client sends meanwhile. The shard's answer, read with
 * the strict response parser, decides:
 *
 * - 101: the client connection hands its socket over; the 101 goes to the client, the
 *   bytes the client sent early go to the shard, and from then on bytes flow unchanged
 *   both ways with backpressure. Frame boundaries are tracked so that a router shutdown
 *   can end the connection with a 1001 close frame on both sides.
 * - 421: as for any request (router/forward.ts): with a shard map under which the key
 *   has another owner, the upgrade goes again to that owner (a new relay) before any 101;
 *   without a map, 503 (router and shard disagree); otherwise the 421 passes.
 * - anything else: an ordinary response to the client; the upstream socket is closed
 *   (never reused, never a tunnel), and the client connection reads the bytes that
 *   followed the upgrade request as new requests.
 */
import net from 'node:net';
import type { ClientConnection, ExchangeHooks } from './client-connection.js';
import type { RouterError } from './errors.js';
import { ParseError, type ResponseCallbacks, type ResponseHead, ResponseParser } from './response-parser.js';
import { AnswerDecision, type MapReader, type Redispatch } from './shard-map.js';
import { closeFrame, FrameBoundaryTracker } from './ws-frames.js';

export interface RelayOwner extends MapReader {
  readonly retryAfter: number;
  readonly connectMs: number;
  readonly upstreamMs: number;
  opened(relay: WebSocketRelay): void;
  closed(relay: WebSocketRelay): void;
  refused(shard: number): void;
  connected(shard: number): void;
  misdirected(shard: number): void;
  upstreamFailure(shard: number, reason: string, err?: Error): void;
  answered(shard: number, code: number): void;
  /** Sends an upgrade answered 421 again, to `shard` (this relay is over). */
  redispatchUpgrade(conn: ClientConnection, r: Redispatch, shard: number): void;
}

/** Bound on the head of the shard's answer to an upgrade. */
const MAX_HEAD = 65536;
const GOING_AWAY = 1001;

type Phase = 'connecting' | 'handshake' | 'open' | 'closed';

/** The relay a socket belongs to, so that its listeners are shared functions, not closures per socket. */
const RELAY = Symbol('relay');
type RelaySocket = net.Socket & { [RELAY]: WebSocketRelay };
type SocketEvent =
  | 'upstream-timeout'
  | 'upstream-error'
  | 'upstream-close'
  | 'upstream-data'
  | 'upstream-drain'
  | 'client-gone'
  | 'client-data'
  | 'client-end'
  | 'client-drain';

/**
 * One listener per kind of event for every relay (`this` is the socket, which names its
 * relay): an idle relayed WebSocket holds no closures of its own.
 */
const listener = (event: SocketEvent) =>
  function (this: RelaySocket, arg?: unknown): void {
    this[RELAY].onSocketEvent(event, arg);
  };
const ON = {
  upstreamTimeout: listener('upstream-timeout'),
  upstreamError: listener('upstream-error'),
  upstreamClose: listener('upstream-close'),
  upstreamData: listener('upstream-data'),
  upstreamDrain: listener('upstream-drain'),
  clientGone: listener('client-gone'),
  clientData: listener('client-data'),
  clientEnd: listener('client-end'),
  clientDrain: listener('client-drain'),
};

/**
 * What only the handshake needs: the client connection answering the request, the
 * request head sent upstream, what a 421 needs to send it again, the answer's parser.
 * Dropped once the relay is open, so that an idle relayed socket holds its two TCP
 * sockets and little else (not the request's head, token included, twice).
 */
interface Handshake {
  readonly conn: ClientConnection;
  readonly requestHead: string;
  readonly requestId: string;
  /** What a 421 needs to send the upgrade again; undefined: it cannot be. */
  readonly retry: Redispatch | undefined;
  readonly parser: ResponseParser;
  /** Relayed, sent again to another shard, or a 421 answered by the router. */
  readonly answer: AnswerDecision;
  upgraded: ResponseHead | undefined;
}

export class WebSocketRelay implements ResponseCallbacks, ExchangeHooks {
  private upstream: net.Socket | undefined;
  private client: net.Socket | undefined;
  private phase: Phase = 'connecting';
  /** Until the relay is open (see Handshake). */
  private hs: Handshake | undefined;
  private ended = false;
  /** The answer to the upgrade has gone to the client connection (it is the client's again). */
  private handedBack = false;
  private readonly down = new FrameBoundaryTracker(); // shard -> client
  private readonly up = new FrameBoundaryTracker(); // client -> shard
  private closing = false;
  private downClosed = false;
  private upClosed = false;
  private killTimer: NodeJS.Timeout | undefined;
  private counted = false;

  constructor(
    readonly shard: number,
    conn: ClientConnection,
    private readonly host: string,
    private readonly port: number,
    requestHead: string,
    requestId: string,
    private readonly owner: RelayOwner,
    /** What a 421 needs to send the upgrade again; undefined: it cannot be. */
    retry: Redispatch | undefined = undefined,
  ) {
    this.hs = {
      conn,
      requestHead,
      requestId,
      retry,
      parser: new ResponseParser(MAX_HEAD),
      answer: new AnswerDecision(),
      upgraded: undefined,
    };
  }

  /** The handshake's state; only read before the relay opens (open() drops it). */
  private get h(): Handshake {
    return this.hs as Handshake;
  }

  start(): void {
    this.h.conn.setHooks(this);
    this.h.parser.reset(this, 'GET', true);
    const upstream = net.connect({ host: this.host, port: this.port, noDelay: true }) as RelaySocket;
    upstream[RELAY] = this;
    this.upstream = upstream;
    upstream.setTimeout(this.owner.connectMs);
    upstream.on('timeout', ON.upstreamTimeout);
    upstream.on('error', ON.upstreamError);
    upstream.on('close', ON.upstreamClose);
    upstream.once('connect', () => {
      if (this.phase !== 'connecting') return;
      this.owner.connected(this.shard);
      this.phase = 'handshake';
      upstream.setTimeout(this.owner.upstreamMs);
      upstream.write(this.h.requestHead, 'latin1');
    });
    upstream.on('data', ON.upstreamData);
  }

  /**
   * What happened on one of this relay's sockets (the listeners every relay shares call
   * it; not for other callers).
   */
  onSocketEvent(event: SocketEvent, arg: unknown): void {
    switch (event) {
      case 'upstream-timeout':
        this.onUpstreamTimeout();
        return;
      case 'upstream-error':
        this.onUpstreamError(arg as NodeJS.ErrnoException);
        return;
      case 'upstream-close':
        this.onUpstreamClose();
        return;
      case 'upstream-data':
        this.onUpstreamData(arg as Buffer);
        return;
      case 'upstream-drain':
        this.client?.resume();
        return;
      case 'client-gone':
        this.destroy();
        return;
      case 'client-data':
        this.relayUp(arg as Buffer);
        return;
      case 'client-end':
        this.upstream?.end();
        this.scheduleKill(1000);
        return;
      case 'client-drain':
        this.upstream?.resume();
        return;
    }
  }

  /** Ends an open relay with close frames (1001 going away) at frame boundaries. */
  shutdown(): void {
    if (this.phase !== 'open') {
      this.destroy();
      return;
    }
    if (this.closing) return;
    this.closing = true;
    if (this.down.atBoundary) this.closeDown();
    if (this.up.atBoundary) this.closeUp();
  }

  destroy(): void {
    if (this.phase === 'closed') return;
    const wasOpen = this.phase === 'open';
    this.phase = 'closed';
    if (this.killTimer) clearTimeout(this.killTimer);
    this.upstream?.destroy();
    if (wasOpen) this.client?.destroy();
    else if (!this.handedBack) this.h.conn.abort();
    if (this.counted) this.owner.closed(this);
  }

  // --- ExchangeHooks: the client went away during the handshake ---

  onClientClose(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.handedBack = true;
    this.upstream?.destroy();
  }

  // --- the handshake ---

  /** An answer the router gives itself instead of the shard's. */
  private fail(e: RouterError): void {
    if (this.phase === 'closed' || this.handedBack) return;
    this.phase = 'closed';
    this.handedBack = true;
    this.upstream?.destroy();
    this.owner.answered(this.shard, e.status);
    this.h.conn.setHooks(undefined);
    this.h.conn.respondError(e, this.h.requestId);
  }

  private onUpstreamError(err: NodeJS.ErrnoException): void {
    if (this.phase === 'connecting') {
      if (err.code === 'ECONNREFUSED') this.owner.refused(this.shard);
      this.owner.upstreamFailure(this.shard, 'refused', err);
      this.fail({
        status: 503,
        code: 'shard_unavailable',
        message: `shard ${this.shard} is unavailable (${err.code ?? 'connect failed'})`,
        retryAfter: this.owner.retryAfter,
      });
    }
    // Otherwise 'close' follows and decides.
  }

  private onUpstreamTimeout(): void {
    if (this.phase === 'connecting') {
      this.owner.upstreamFailure(this.shard, 'connect_timeout');
      this.fail({
        status: 503,
        code: 'shard_unavailable',
        message: `shard ${this.shard} did not accept a connection within ${this.owner.connectMs} ms`,
        retryAfter: this.owner.retryAfter,
      });
    } else if (this.phase === 'handshake') {
      this.owner.upstreamFailure(this.shard, 'timeout');
      this.failAnswer(
        504,
        'upstream_timeout',
        `shard ${this.shard} did not answer the upgrade within ${this.owner.upstreamMs} ms`,
      );
    }
  }

  private onUpstreamClose(): void {
    if (this.phase === 'connecting' || this.phase === 'handshake') {
      if (this.phase === 'handshake' && this.h.parser.finishOnClose()) {
        // A refusal delimited by the end of the connection.
        this.finishAnswer();
        return;
      }
      this.owner.upstreamFailure(this.shard, 'reset');
      this.failAnswer(502, 'upstream_reset', `shard ${this.shard} closed the connection`);
      return;
    }
    // An open relay: let what was written reach the client, then close it.
    if (this.phase === 'open') {
      this.client?.end();
      this.scheduleKill(1000);
    }
  }

  /** Fails the handshake: an error answer if nothing was sent yet, else a cut connection. */
  private failAnswer(status: number, code: string, message: string): void {
    if (this.h.conn.committed) {
      this.phase = 'closed';
      this.handedBack = true;
      this.upstream?.destroy();
      this.owner.answered(this.shard, 0);
      this.h.conn.abort();
      return;
    }
    this.fail({ status, code, message });
  }

  private onUpstreamData(chunk: Buffer): void {
    if (this.phase === 'open') {
      this.relayDown(chunk);
      return;
    }
    if (this.phase !== 'handshake') return;
    let used: number;
    try {
      used = this.h.parser.consume(chunk);
    } catch (err) {
      this.owner.upstreamFailure(this.shard, 'protocol', err as Error);
      const message = err instanceof ParseError ? err.message : 'invalid response';
      this.failAnswer(
        502,
        'upstream_protocol_error',
        `shard ${this.shard} sent an invalid answer to the upgrade: ${message}`,
      );
      return;
    }
    const upgraded = this.h.upgraded;
    if (upgraded) {
      this.open(upgraded, chunk.subarray(used));
      return;
    }
    if (this.ended) {
      if (used < chunk.length) {
        this.owner.upstreamFailure(
          this.shard,
          'overflow',
          new Error(`${chunk.length - used} bytes after the answer to an upgrade`),
        );
      }
      this.finishAnswer();
      return;
    }
    const upstream = this.upstream as net.Socket;
    if (!this.h.conn.flush()) {
      // The client is slower than the shard: the shard is not late meanwhile.
      upstream.pause();
      upstream.setTimeout(0);
      this.h.conn.onceDrain(() => {
        if (this.phase !== 'handshake') return;
        upstream.setTimeout(this.owner.upstreamMs);
        upstream.resume();
      });
    }
  }

  // --- ResponseCallbacks: the shard's answer to the upgrade ---

  onHead(head: ResponseHead): void {
    if (!this.h.answer.relays(this.owner, this.shard, head, this.h.retry)) return;
    this.h.conn.respondHead(head.statusCode, head.statusMessage, head.headers, head.framing);
  }

  onBody(chunk: Buffer): void {
    if (!this.h.answer.withheld) this.h.conn.respondBody(chunk);
  }

  onEnd(): void {
    this.ended = true;
  }

  onUpgrade(head: ResponseHead): void {
    if (head.map !== undefined) this.owner.mapSeen(head.map);
    this.h.upgraded = head;
  }

  /**
   * A refusal (not 101) is complete: the upstream socket is closed (an upgrade's
   * connection is never reused), and the client connection goes on with its next request.
   */
  private finishAnswer(): void {
    if (this.phase === 'closed' || this.handedBack) return;
    if (this.h.answer.rerouteTo !== undefined && this.h.retry) {
      // Nothing of the 421 went to the client: the upgrade goes again, to the new owner.
      this.phase = 'closed';
      this.handedBack = true;
      this.upstream?.destroy();
      this.h.conn.setHooks(undefined);
      this.owner.redispatchUpgrade(this.h.conn, this.h.retry, this.h.answer.rerouteTo);
      return;
    }
    if (this.h.answer.misdirected) {
      this.owner.misdirected(this.shard);
      this.fail({
        status: 503,
        code: 'shard_misdirected',
        message: `shard ${this.shard} does not own this key under its topology: router and shard configurations disagree`,
        retryAfter: this.owner.retryAfter,
      });
      return;
    }
    this.phase = 'closed';
    this.handedBack = true;
    this.upstream?.destroy();
    this.owner.answered(this.shard, this.h.conn.status);
    this.h.conn.setHooks(undefined);
    this.h.conn.respondEnd();
    this.h.conn.flush();
  }

  /** 101: the socket becomes a relay; `rest` are the shard's first bytes after the 101. */
  private open(head: ResponseHead, rest: Buffer): void {
    const upstream = this.upstream as net.Socket;
    this.phase = 'open';
    this.handedBack = true;
    this.owner.answered(this.shard, 101);
    this.counted = true;
    this.owner.opened(this);
    const { socket, early } = this.h.conn.takeOver();
    this.hs = undefined;
    const client = socket as RelaySocket;
    client[RELAY] = this;
    this.client = client;
    upstream.setTimeout(0);
    upstream.setKeepAlive(true, 30_000);
    client.setTimeout(0);
    client.setNoDelay(true);
    client.setKeepAlive(true, 30_000);
    let text = `HTTP/1.1 101 ${head.statusMessage || 'Switching Protocols'}\r\n`;
    for (let i = 0; i < head.headers.length; i += 2) text += `${head.headers[i]}: ${head.headers[i + 1]}\r\n`;
    client.write(`${text}connection: upgrade\r\nupgrade: websocket\r\n\r\n`, 'latin1');
    client.on('error', ON.clientGone);
    client.on('close', ON.clientGone);
    if (rest.length > 0) this.relayDown(Buffer.from(rest));
    // What the client sent before the 101 goes first, in order.
    if (early && early.length > 0) this.relayUp(early);
    client.on('data', ON.clientData);
    client.on('end', ON.clientEnd);
    client.on('drain', ON.clientDrain);
    upstream.on('drain', ON.upstreamDrain);
    if (!upstream.writableNeedDrain) client.resume();
  }

  // --- the open relay ---

  private relayDown(chunk: Buffer): void {
    const client = this.client;
    if (this.downClosed || !client) return;
    let data = chunk;
    if (this.closing) {
      const n = this.down.advance(chunk, true);
      data = chunk.subarray(0, n);
      if (data.length > 0) client.write(data);
      if (this.down.atBoundary) this.closeDown();
      return;
    }
    this.down.advance(chunk);
    if (!client.write(data)) this.upstream?.pause();
  }

  private relayUp(chunk: Buffer): void {
    if (this.upClosed) return;
    const upstream = this.upstream as net.Socket;
    if (this.closing) {
      const n = this.up.advance(chunk, true);
      if (n > 0) upstream.write(chunk.subarray(0, n));
      if (this.up.atBoundary) this.closeUp();
      return;
    }
    this.up.advance(chunk);
    if (!upstream.write(chunk)) this.client?.pause();
  }

  private closeDown(): void {
    if (this.downClosed) return;
    this.downClosed = true;
    this.client?.write(closeFrame(GOING_AWAY, false, 'router shutting down'));
    this.afterClose();
  }

  private closeUp(): void {
    if (this.upClosed) return;
    this.upClosed = true;
    this.upstream?.write(closeFrame(GOING_AWAY, true, 'router shutting down'));
    this.afterClose();
  }

  private afterClose(): void {
    if (!this.downClosed || !this.upClosed) return;
    // Give both peers a moment to answer the close, then end the TCP connections.
    this.client?.end();
    this.upstream?.end();
    this.scheduleKill(2000);
  }

  private scheduleKill(ms: number): void {
    if (this.killTimer || this.phase === 'closed') return;
    this.killTimer = setTimeout(() => this.destroy(), ms);
    this.killTimer.unref();
  }
}
