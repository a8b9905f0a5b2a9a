/**
 * Relays one WebSocket connection to its shard: the upgrade request goes to the shard
 * on a fresh connection, the shard's answer decides (101: relay bytes both ways;
 * 421: 503 to the client; anything else: passed back as is), and from then on bytes
 * flow unchanged with backpressure. Frame boundaries are tracked so that a router
 * shutdown can end the connection with a 1001 close frame on both sides.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { type RouterError, writeRawError } from './errors.js';
import { closeFrame, FrameBoundaryTracker } from './ws-frames.js';

export interface RelayOwner {
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
}

const CRLFCRLF = Buffer.from('\r\n\r\n');
const MAX_HEAD = 65536;
const GOING_AWAY = 1001;

type Phase = 'connecting' | 'handshake' | 'open' | 'passthrough' | 'closed';

export class WebSocketRelay {
  private upstream: net.Socket | undefined;
  private phase: Phase = 'connecting';
  private headBuf: Buffer | undefined;
  private readonly down = new FrameBoundaryTracker(); // shard -> client
  private readonly up = new FrameBoundaryTracker(); // client -> shard
  private closing = false;
  private downClosed = false;
  private upClosed = false;
  private killTimer: NodeJS.Timeout | undefined;
  private counted = false;

  constructor(
    readonly shard: number,
    private readonly client: Duplex,
    private readonly clientHead: Buffer,
    private readonly host: string,
    private readonly port: number,
    private readonly requestHead: string,
    private readonly requestId: string,
    private readonly owner: RelayOwner,
  ) {}

  start(): void {
    const client = this.client;
    client.on('error', () => this.destroy());
    client.on('close', () => this.destroy());
    const upstream = net.connect({ host: this.host, port: this.port, noDelay: true });
    this.upstream = upstream;
    upstream.setTimeout(this.owner.connectMs);
    upstream.on('timeout', () => this.onUpstreamTimeout());
    upstream.on('error', (err: NodeJS.ErrnoException) => this.onUpstreamError(err));
    upstream.on('close', () => this.onUpstreamClose());
    upstream.once('connect', () => {
      this.owner.connected(this.shard);
      this.phase = 'handshake';
      upstream.setTimeout(this.owner.upstreamMs);
      upstream.cork();
      upstream.write(this.requestHead, 'latin1');
      if (this.clientHead.length > 0) upstream.write(this.clientHead);
      upstream.uncork();
    });
    upstream.on('data', (chunk: Buffer) => this.onUpstreamData(chunk));
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
    this.phase = 'closed';
    if (this.killTimer) clearTimeout(this.killTimer);
    this.client.destroy();
    this.upstream?.destroy();
    if (this.counted) this.owner.closed(this);
  }

  private fail(e: RouterError): void {
    if (this.phase === 'closed') return;
    this.owner.answered(this.shard, e.status);
    writeRawError(this.client, e, this.requestId);
    this.phase = 'closed';
    this.upstream?.destroy();
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
    } else if (this.phase === 'handshake') {
      this.owner.upstreamFailure(this.shard, 'reset', err);
      this.fail({
        status: 502,
        code: 'upstream_reset',
        message: `shard ${this.shard} closed the connection`,
      });
    }
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
      this.fail({
        status: 504,
        code: 'upstream_timeout',
        message: `shard ${this.shard} did not answer the upgrade within ${this.owner.upstreamMs} ms`,
      });
    }
  }

  private onUpstreamClose(): void {
    if (this.phase === 'connecting' || this.phase === 'handshake') {
      this.owner.upstreamFailure(this.shard, 'reset');
      this.fail({
        status: 502,
        code: 'upstream_reset',
        message: `shard ${this.shard} closed the connection`,
      });
      return;
    }
    if (this.phase === 'passthrough') {
      this.phase = 'closed';
      this.client.end();
      return;
    }
    // An open relay: let what was written reach the client, then close it.
    if (this.phase === 'open') {
      this.client.end();
      this.scheduleKill(1000);
    }
  }

  private onUpstreamData(chunk: Buffer): void {
    switch (this.phase) {
      case 'handshake':
        this.onHandshakeData(chunk);
        return;
      case 'open':
        this.relayDown(chunk);
        return;
      case 'passthrough':
        if (!this.client.write(chunk)) this.upstream?.pause();
        return;
      default:
        return;
    }
  }

  private onHandshakeData(chunk: Buffer): void {
    const buf = this.headBuf ? Buffer.concat([this.headBuf, chunk]) : chunk;
    const end = buf.indexOf(CRLFCRLF);
    if (end === -1) {
      if (buf.length > MAX_HEAD) {
        this.owner.upstreamFailure(this.shard, 'protocol');
        this.fail({
          status: 502,
          code: 'upstream_protocol_error',
          message: 'upgrade response head too large',
        });
        return;
      }
      this.headBuf = Buffer.from(buf);
      return;
    }
    this.headBuf = undefined;
    const statusLine = buf.toString('latin1', 0, Math.min(buf.indexOf(13), 64));
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
    if (!m) {
      this.owner.upstreamFailure(this.shard, 'protocol');
      this.fail({ status: 502, code: 'upstream_protocol_error', message: 'malformed upgrade response' });
      return;
    }
    const status = Number(m[1]);
    const upstream = this.upstream as net.Socket;
    if (status === 421) {
      this.owner.misdirected(this.shard);
      this.fail({
        status: 503,
        code: 'shard_misdirected',
        message: `shard ${this.shard} does not own this key under its topology: router and shard configurations disagree`,
        retryAfter: this.owner.retryAfter,
      });
      return;
    }
    this.owner.answered(this.shard, status);
    const headBytes = buf.subarray(0, end + 4);
    const rest = buf.subarray(end + 4);
    if (status !== 101) {
      // The shard refused the upgrade (401, 403, 404, ...): its answer goes back as is.
      this.phase = 'passthrough';
      upstream.setTimeout(this.owner.upstreamMs);
      this.client.write(buf);
      this.client.on('drain', () => upstream.resume());
      return;
    }
    this.phase = 'open';
    this.counted = true;
    this.owner.opened(this);
    upstream.setTimeout(0);
    upstream.setKeepAlive(true, 30_000);
    const client = this.client;
    if (client instanceof net.Socket) {
      client.setTimeout(0);
      client.setNoDelay(true);
      client.setKeepAlive(true, 30_000);
    }
    client.write(headBytes);
    if (rest.length > 0) this.relayDown(rest);
    client.on('data', (c: Buffer) => this.relayUp(c));
    client.on('end', () => {
      upstream.end();
      this.scheduleKill(1000);
    });
    client.on('drain', () => upstream.resume());
    upstream.on('drain', () => client.resume());
  }

  private relayDown(chunk: Buffer): void {
    if (this.downClosed) return;
    let data = chunk;
    if (this.closing) {
      const n = this.down.advance(chunk, true);
      data = chunk.subarray(0, n);
      if (data.length > 0) this.client.write(data);
      if (this.down.atBoundary) this.closeDown();
      return;
    }
    this.down.advance(chunk);
    if (!this.client.write(data)) this.upstream?.pause();
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
    if (!upstream.write(chunk)) this.client.pause();
  }

  private closeDown(): void {
    if (this.downClosed) return;
    this.downClosed = true;
    this.client.write(closeFrame(GOING_AWAY, false, 'router shutting down'));
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
    this.client.end();
    this.upstream?.end();
    this.scheduleKill(2000);
  }

  private scheduleKill(ms: number): void {
    if (this.killTimer || this.phase === 'closed') return;
    this.killTimer = setTimeout(() => this.destroy(), ms);
    this.killTimer.unref();
  }
}
