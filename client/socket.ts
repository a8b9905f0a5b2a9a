/**
 * What GroupConnection and InboxConnection share about their WebSocket: opening one
 * attempt (JSON events in, the close with whether the server said hello), writing an
 * event, closing it from the client's side, and the reconnect timer with its backoff
 * (`SocketClient`).
 */

import { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from '../common/backoff.js';
import { CLOSE_MOVED } from '../common/protocol.js';
import type { ChatApi } from './api.js';
import { Emitter } from './emitter.js';
import type { ShardChatError } from './errors.js';
import { asError } from './group-sequencer.js';
import type { OutboxOptions } from './outbox.js';
import type { WebSocketFactory, WebSocketLike } from './types.js';

/** What GroupConnection and InboxConnection both take (and the outbox's ack timeout, attempts and size). */
export interface ConnectionOptions extends OutboxOptions {
  api: ChatApi;
  /** Defaults to the global WebSocket (browsers, Node 22+); pass `ws`'s on older Node. */
  WebSocket?: WebSocketFactory;
  /** Without a resume point: how many recent messages (of a group) to deliver first (default 50). */
  initialHistory?: number;
  backoff?: BackoffOptions;
  /** At most one typing event (per group) per this interval (default 2 s). */
  typingIntervalMs?: number;
  /** Page size for catch-up reads (default 100). */
  pageSize?: number;
  /** A connection that stayed open this long resets the backoff (default 5 s). */
  stableAfterMs?: number;
  /**
   * After close 4012 (moved) the client reconnects at once; another 4012 within this
   * long of that immediate retry waits the normal backoff instead (default 10 s).
   */
  movedRetryWindowMs?: number;
  random?: () => number;
}

export { CLOSE_MOVED };

/** WebSocket readyState OPEN. */
export const OPEN = 1;

export interface SocketHandlers<E> {
  /** Whether this attempt is still the one that counts (a later one, or a close, makes it stale). */
  current(): boolean;
  /** The socket was made (before any of its events can arrive). */
  opened(ws: WebSocketLike): void;
  /** A JSON event from the server. */
  event(e: E): void;
  /**
   * The socket closed: `greeted` when the server had said hello; `refusedWith`, the HTTP
   * status that refused the upgrade when the implementation tells it (the ws package does,
   * browsers do not).
   */
  closed(code: number, reason: string, greeted: boolean, refusedWith: number | undefined): void;
  /** The address could not be had or the socket not be made: report it and try again later. */
  failed(e: ShardChatError): void;
}

/** One connection attempt to `url()`; events of a stale attempt are ignored. */
export async function openSocket<E extends { type: string }>(
  url: () => Promise<string>,
  WS: WebSocketFactory,
  h: SocketHandlers<E>,
): Promise<void> {
  let address: string;
  try {
    address = await url();
  } catch (err) {
    h.failed(asError(err));
    return;
  }
  if (!h.current()) return;
  let ws: WebSocketLike;
  try {
    ws = new WS(address);
  } catch (err) {
    h.failed(asError(err));
    return;
  }
  h.opened(ws);
  let greeted = false;
  let refusedWith: number | undefined;
  ws.addEventListener('message', (ev) => {
    if (!h.current()) return;
    const text = typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(ev.data as ArrayBuffer);
    let e: E;
    try {
      e = JSON.parse(text) as E;
    } catch {
      return;
    }
    if (e.type === 'hello') greeted = true;
    h.event(e);
  });
  ws.addEventListener('close', (ev) => {
    if (!h.current()) return;
    h.closed(ev.code, ev.reason, greeted, refusedWith);
  });
  ws.addEventListener('error', (ev) => {
    // A 'close' always follows. Browsers give no detail; the ws package names the status.
    const m = /Unexpected server response: (\d{3})/.exec(
      String((ev as { message?: unknown })?.message ?? ''),
    );
    if (m) refusedWith = Number(m[1]);
  });
}

/** Writes one event on an open socket; false when it is not open (or the write failed). */
export function sendEvent(ws: WebSocketLike | undefined, event: object): boolean {
  if (!ws || ws.readyState !== OPEN) return false;
  try {
    ws.send(JSON.stringify(event));
    return true;
  } catch {
    return false;
  }
}

/** Closes a socket from the client's side (1000), unless it is closing already. */
export function closeSocket(ws: WebSocketLike | undefined): void {
  if (ws && ws.readyState <= OPEN) ws.close(1000, 'closed by the client');
}

/**
 * A client of one reconnecting WebSocket: the socket of the current attempt, a generation
 * that makes the events of older sockets stale, the reconnect timer with exponential
 * backoff and jitter, and closing for good. Subclasses say where to connect and what to
 * do with events, closes and state.
 */
export abstract class SocketClient<
  Events extends Record<string, unknown[]>,
  ServerEvent extends { type: string },
> extends Emitter<Events> {
  protected readonly WS: WebSocketFactory;
  protected readonly backoff: Backoff;
  protected ws: WebSocketLike | undefined;
  /** Bumped by every attempt and every stop: events of an older socket are ignored. */
  protected generation = 0;
  protected userClosed = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Resets the backoff once a connection stayed open `stableAfterMs`. */
  private stableTimer: ReturnType<typeof setTimeout> | undefined;
  /** Checks the outbox's unacknowledged messages while open. */
  private ackTimer: ReturnType<typeof setInterval> | undefined;
  private readonly movedRetryWindowMs: number;
  /** When the last immediate retry after a move (close 4012) was made. */
  private movedRetryAt = Number.NEGATIVE_INFINITY;

  constructor(o: {
    WebSocket?: WebSocketFactory;
    backoff?: BackoffOptions;
    random?: () => number;
    movedRetryWindowMs?: number;
  }) {
    super();
    const WS = o.WebSocket ?? (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
    if (!WS) throw new Error('no WebSocket implementation: pass options.WebSocket (e.g. the ws package)');
    this.WS = WS;
    this.backoff = new Backoff(o.backoff ?? DEFAULT_BACKOFF, o.random);
    this.movedRetryWindowMs = o.movedRetryWindowMs ?? 10_000;
  }

  /** Closes for good. */
  abstract close(): void;
  /** The socket's address (with the token). */
  protected abstract socketUrl(): Promise<string>;
  protected abstract onEvent(e: ServerEvent): void;
  protected abstract onClose(
    code: number,
    reason: string,
    greeted: boolean,
    refusedWith: number | undefined,
  ): void;
  /** Tells the application about an error. */
  protected abstract reportError(e: ShardChatError): void;
  /** Marks the state as reconnecting and calls `retryIn` (or `retryMoved` when `moved`). */
  protected abstract scheduleReconnect(retryAfterSeconds?: number, moved?: boolean): void;
  /** Stops the timers of an open socket. */
  protected abstract clearTimers(): void;

  /** One connection attempt; a failure to start it is reported and retried. */
  protected async connect(): Promise<void> {
    if (this.userClosed) return;
    const gen = ++this.generation;
    await openSocket<ServerEvent>(() => this.socketUrl(), this.WS, {
      current: () => gen === this.generation && !this.userClosed,
      opened: (ws) => {
        this.ws = ws;
      },
      event: (e) => this.onEvent(e),
      closed: (code, reason, greeted, refusedWith) => this.onClose(code, reason, greeted, refusedWith),
      failed: (e) => {
        this.reportError(e);
        this.scheduleReconnect();
      },
    });
  }

  /** The delay chosen for the last reconnect scheduled (0: at once). */
  get retryDelayMs(): number | undefined {
    return this.lastRetryDelay;
  }
  private lastRetryDelay: number | undefined;

  /** The next attempt after the backoff's delay (at least `retryAfterSeconds`). */
  protected retryIn(retryAfterSeconds?: number): void {
    const delay = Math.max(this.backoff.next(), (retryAfterSeconds ?? 0) * 1000);
    this.lastRetryDelay = delay;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  /**
   * The server closed with 4012 (the key moved to another shard): the next attempt at
   * once, not counted by the backoff. A stale router may send the client to the old
   * owner again: a further move within `movedRetryWindowMs` of the immediate retry waits
   * the normal backoff instead, so repeated 4012s do not spin.
   */
  protected retryMoved(): void {
    const now = Date.now();
    if (now - this.movedRetryAt < this.movedRetryWindowMs) {
      this.retryIn();
      return;
    }
    this.movedRetryAt = now;
    this.lastRetryDelay = 0;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), 0);
  }

  /**
   * A connection said hello: the backoff is reset once it stayed open `stableAfterMs`, and
   * `checkAcks` runs every `ackIntervalMs` until it closes (clearOpenTimers).
   */
  protected startOpenTimers(stableAfterMs: number, checkAcks: () => void, ackIntervalMs: number): void {
    this.clearOpenTimers();
    this.stableTimer = setTimeout(() => this.backoff.reset(), stableAfterMs);
    this.ackTimer = setInterval(checkAcks, ackIntervalMs);
  }

  protected clearOpenTimers(): void {
    clearTimeout(this.stableTimer);
    clearInterval(this.ackTimer);
    this.stableTimer = undefined;
    this.ackTimer = undefined;
  }

  /** An error retrying cannot help: reported, then closed for good. */
  protected fatal(e: ShardChatError): void {
    this.reportError(e);
    this.close();
  }

  /** Drops the current socket (closed from this side) and any pending attempt. */
  protected stop(): void {
    this.generation++;
    this.clearTimers();
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = undefined;
    closeSocket(ws);
  }

  /** Writes one event on the current socket; false when it is not open. */
  protected raw(event: object): boolean {
    return sendEvent(this.ws, event);
  }
}
