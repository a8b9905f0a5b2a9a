/**
 * What the group hub and the inbox hub have in common: a WebSocket server of their own
 * (no compression, a payload limit), the upgrade (admitted, then opened unless the shard
 * began shutting down), connection bookkeeping with a gauge, the per-connection rate
 * limit and JSON framing of what clients send, events sent with a bounded queue, and
 * closing every connection with 1001 on shutdown.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Gauge } from 'prom-client';
import { type WebSocket, WebSocketServer } from 'ws';
import type { Config } from '../../common/config.js';
import type { Logger } from '../../common/logger.js';
import type { ShardMetrics } from '../metrics.js';
import {
  attachConn,
  CLOSE,
  type ConnHandler,
  closeConn,
  readClientEvent,
  sendConnFrame,
  sendConnText,
  upgradeSocket,
  type WsConn,
} from './ws-conn.js';

export interface SocketHubBase {
  cfg: Config;
  log: Logger;
  metrics: ShardMetrics;
}

// biome-ignore lint/suspicious/noExplicitAny: EventEmitter's own constraint for its event map.
type EventMap = Record<string, any[]>;

/** A hub of WebSocket connections `C` admitted as `A`, emitting events `E`. */
export abstract class SocketHub<
  C extends WsConn,
  A,
  E extends EventMap = Record<never, never>,
> extends EventEmitter<E> {
  protected readonly limits: Config['shard']['limits'];
  protected closing = false;
  private readonly wss: WebSocketServer;
  private count = 0;

  constructor(
    protected readonly base: SocketHubBase,
    /** Names the hub in the log ('group', 'inbox'). */
    private readonly kind: string,
    /** The gauge that counts its open connections. */
    private readonly gauge: Gauge,
  ) {
    super();
    this.limits = base.cfg.shard.limits;
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: this.limits.wsMaxPayloadBytes,
      perMessageDeflate: false,
      // The hub keeps its own connections (all()); ws's set would add an entry and a
      // close listener per connection.
      clientTracking: false,
    });
  }

  /** Open connections of this hub. */
  get connections(): number {
    return this.count;
  }

  /** Answers an upgrade request: admitted (its ApiError is the refusal), then opened. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    upgradeSocket(req, socket, head, {
      wss: this.wss,
      log: this.base.log,
      what: `${this.kind} upgrade`,
      admit: (r) => this.admit(r),
      closing: () => this.closing,
      open: (ws, admitted, s) => this.connect(ws, s, admitted),
    });
  }

  /** Checks an upgrade request: resolves with what the connection is for, or throws the refusal. */
  protected abstract admit(req: IncomingMessage): Promise<A>;
  /** The state of a new connection. */
  protected abstract create(ws: WebSocket, socket: Duplex, admitted: A): C;
  /** Registers an open connection (and greets it). */
  protected abstract added(conn: C): void;
  /** Unregisters a closed connection; false when it was not registered. */
  protected abstract removed(conn: C): boolean;
  /** An event the client sent (rate-limited and parsed as a JSON object). */
  protected abstract received(conn: C, event: Record<string, unknown>): void;
  /** Every open connection. */
  protected abstract all(): Iterable<C>;
  /** The key (group or user id) whose owner serves a connection. */
  protected abstract keyOf(conn: C): string;

  /** Closes once, with 4012 "moved", every connection whose key `stays` no longer keeps here. */
  closeMoved(stays: (key: string) => boolean): number {
    let n = 0;
    for (const c of [...this.all()]) {
      if (stays(this.keyOf(c))) continue;
      closeConn(c, CLOSE.moved, 'moved to another shard');
      n++;
    }
    return n;
  }

  /** The events of every connection of this hub (one handler, no closures per connection). */
  private readonly handler: ConnHandler<C> = {
    message: (conn, data, isBinary) => {
      const ev = readClientEvent(conn, data, isBinary, this.limits, (e) => this.send(conn, e));
      if (ev) this.received(conn, ev);
    },
    error: (_conn, err) => this.base.log.debug({ err: err.message }, `${this.kind} WebSocket error`),
    close: (conn) => {
      conn.done = true;
      if (!this.removed(conn)) return;
      this.count--;
      this.gauge.set(this.count);
    },
  };

  private connect(ws: WebSocket, socket: Duplex, admitted: A): void {
    const conn = this.create(ws, socket, admitted);
    const registered = attachConn(conn, this.closing, this.handler);
    if (!registered) return;
    this.count++;
    this.gauge.set(this.count);
    this.added(conn);
  }

  /** Sends an event; a client that does not keep up is closed with 4008 rather than buffered without bound. */
  protected send(conn: C, event: object): boolean {
    return sendConnText(conn, JSON.stringify(event), this.limits, this.base.metrics);
  }

  /** Sends a pre-framed event (one frame for all its recipients). */
  protected sendFrame(conn: C, frame: Buffer): boolean {
    return sendConnFrame(conn, frame, this.limits, this.base.metrics);
  }

  /** Closes every connection with 1001 (shutdown); sockets that do not close in time are ended. */
  close(): void {
    this.closing = true;
    for (const c of this.all()) closeConn(c, CLOSE.goingAway, 'shard shutting down');
  }
}
