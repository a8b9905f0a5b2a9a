/**
 * What group WebSockets (shard/sockets/group-hub.ts) and inbox WebSockets (shard/sockets/inbox-hub.ts) share: the
 * upgrade (the id in the path owned by this shard, 421 otherwise; the token; refusals
 * answered as JSON), and per connection the close codes, the message rate limit and
 * JSON framing of what clients send, the bounded send queue (a consumer that falls
 * behind is closed with 4008), and closing with a bounded grace.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import type { Config } from '../../common/config.js';
import { ApiError, writeRawError } from '../../common/http-answers.js';
import type { Logger } from '../../common/logger.js';
import { idAmbiguity, pathAmbiguity } from '../../common/paths.js';
import { CLOSE_MOVED, isClientMsgId, type Message, SHARD_HEADER } from '../../common/protocol.js';
import { pathOf } from '../../common/shard-function.js';
import { type Authenticator, tokenOf } from '../api/auth.js';
import type { Ownership } from '../cluster/ownership.js';
import type { ShardMetrics } from '../metrics.js';
import { gathering, textFrame } from './gathering.js';

/** Close codes of the shard's WebSockets. */
export const CLOSE = {
  goingAway: 1001,
  policy: 1008,
  tooBig: 1009,
  tryAgain: 1013,
  slowConsumer: 4008,
  rateLimited: 4029,
  /** The group or user moved to another shard (resharding): reconnect at once through the router. */
  moved: CLOSE_MOVED,
} as const;

/** The per-connection state both hubs keep. */
export interface WsConn {
  ws: WebSocket;
  /** The connection's TCP socket: pre-framed events are written to it directly (sendConnFrame). */
  socket: Duplex;
  /** Rate-limit tokens left, and when they were last refilled. */
  tokens: number;
  refilledAt: number;
  /** Set once the connection is being closed: nothing more is sent or accepted. */
  done: boolean;
  /** How long a closing connection may take to flush its (bounded) queue and close frame. */
  closeGraceMs: number;
}

type Limits = Config['shard']['limits'];

/** Answers an upgrade request with an error (JSON, as every other answer) and ends the socket. */
export function refuse(socket: Duplex, e: ApiError): void {
  writeRawError(socket, e);
}

export const shuttingDown = () =>
  new ApiError(503, 'shutting_down', 'the shard is shutting down', { 'retry-after': '2' });

export const noRoom = () =>
  new ApiError(503, 'too_many_connections', 'this shard has no room for more connections', {
    'retry-after': '5',
  });

export interface UpgradeOptions<T> {
  wss: WebSocketServer;
  log: Logger;
  /** Names the socket in the log ('upgrade failed', 'inbox upgrade failed'). */
  what: string;
  /** Checks the request; its ApiError is the refusal. */
  admit(req: IncomingMessage): Promise<T>;
  closing(): boolean;
  open(ws: WebSocket, admitted: T, socket: Duplex): void;
}

/**
 * A socket's error listener for its whole life: a shared function, not a closure, which
 * would keep the upgrade request (its head and headers) alive as long as the connection.
 */
function destroyOnError(this: Duplex): void {
  this.destroy();
}

/** Answers an upgrade: admitted, then (unless the shard began shutting down meanwhile) opened. */
export function upgradeSocket<T>(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  o: UpgradeOptions<T>,
): void {
  socket.on('error', destroyOnError);
  o.admit(req)
    .then((admitted) => {
      if (socket.destroyed) return;
      if (o.closing()) {
        // The shard began shutting down while the request was being checked.
        refuse(socket, shuttingDown());
        return;
      }
      o.wss.handleUpgrade(req, socket, head, (ws) => o.open(ws, admitted, socket));
    })
    .catch((err: unknown) => {
      if (err instanceof ApiError) refuse(socket, err);
      else {
        o.log.error({ err: (err as Error).stack }, `${o.what} failed`);
        refuse(socket, new ApiError(503, 'unavailable', 'try again'));
      }
    });
}

/**
 * The first checks of an upgrade to `/{groups|users}/{id}/ws`: the id (decoded, `valid`),
 * owned by this shard under its own topology (421), the shard not shutting down, then
 * the token: resolves with the id and the token's user.
 */
export async function socketRequest(
  req: IncomingMessage,
  o: {
    path: RegExp;
    kind: 'group' | 'user';
    valid(id: string): boolean;
    own: Pick<Ownership, 'check'>;
    auth: Pick<Authenticator, 'verify'>;
    closing: boolean;
  },
): Promise<{ id: string; userId: string }> {
  // The id comes from the raw path, as the router read it (no URL normalisation).
  const target = req.url ?? '/';
  const path = pathOf(target);
  const ambiguous = pathAmbiguity(path);
  if (ambiguous) throw new ApiError(400, 'ambiguous_path', `the path has ${ambiguous}`);
  const m = o.path.exec(path);
  if (!m) throw new ApiError(404, 'not_found', 'no WebSocket at this path');
  const idAmbiguous = idAmbiguity(m[1] as string);
  if (idAmbiguous) throw new ApiError(400, 'ambiguous_path', `the path has ${idAmbiguous}`);
  let id: string;
  try {
    id = decodeURIComponent(m[1] as string);
  } catch {
    throw new ApiError(400, 'bad_id', `malformed ${o.kind} id`);
  }
  if (!o.valid(id)) throw new ApiError(400, 'bad_id', `malformed ${o.kind} id`);
  const routed = req.headers[SHARD_HEADER];
  o.own.check(id, typeof routed === 'string' ? routed : undefined);
  if (o.closing) throw shuttingDown();
  const userId = await o.auth.verify(
    tokenOf(req.headers.authorization, queryOf(target).get('token') ?? undefined),
  );
  return { id, userId };
}

/** The query of a request target (after '?', before '#'). */
function queryOf(target: string): URLSearchParams {
  const q = target.indexOf('?');
  if (q === -1) return new URLSearchParams();
  const hash = target.indexOf('#', q);
  return new URLSearchParams(target.slice(q + 1, hash === -1 ? undefined : hash));
}

/**
 * The state of a new connection: a full rate budget. A hub's connection extends this class
 * with its own fields: instances built this way share one hidden class in V8, where an
 * object spread with added fields (`{ ...base, userId }`) gets a map of its own per
 * object, about 0.6 KB more per idle connection.
 */
export class ConnState implements WsConn {
  tokens: number;
  refilledAt: number;
  done = false;
  closeGraceMs: number;

  constructor(
    readonly ws: WebSocket,
    readonly socket: Duplex,
    limits: Limits,
  ) {
    this.tokens = limits.wsBurst;
    this.refilledAt = Date.now();
    this.closeGraceMs = limits.wsCloseGraceMs;
  }
}

/**
 * Wires a new connection's socket (listeners first: an error or close at any later point
 * must find the connection registered): its frames to `message`, an error (logged by
 * `error`) ends it, its close to `close`. A shard shutting down closes it at once with
 * 1001; returns whether it may be registered.
 */
/** What a hub does with its connections' events (one object per hub, shared by its connections). */
export interface ConnHandler<C extends WsConn = WsConn> {
  message(conn: C, data: Buffer, isBinary: boolean): void;
  error(conn: C, err: Error): void;
  close(conn: C): void;
}

const CONN = Symbol('conn');
const HANDLER = Symbol('handler');
type ConnSocket = WebSocket & { [CONN]: WsConn; [HANDLER]: ConnHandler };

// Listeners every connection shares (`this` is the WebSocket, which names its connection
// and hub): an idle connection holds no closures of its own.
function onWsMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  const ws = this as ConnSocket;
  ws[HANDLER].message(ws[CONN], data, isBinary);
}
function onWsError(this: WebSocket, err: Error): void {
  const ws = this as ConnSocket;
  ws[HANDLER].error(ws[CONN], err);
  finishConn(ws[CONN]);
}
function onWsClose(this: WebSocket): void {
  const ws = this as ConnSocket;
  ws[HANDLER].close(ws[CONN]);
}

/**
 * Registers a new connection's events with its hub's handler; false when the shard is
 * closing (the connection is closed with 1001 at once).
 */
export function attachConn<C extends WsConn>(conn: C, closing: boolean, handler: ConnHandler<C>): boolean {
  const ws = conn.ws as ConnSocket;
  ws[CONN] = conn;
  ws[HANDLER] = handler as unknown as ConnHandler;
  ws.on('message', onWsMessage);
  // ws closes the connection itself on protocol errors (1002, 1007, 1009: the close
  // frame is already queued); terminating here would lose that close code.
  ws.on('error', onWsError);
  ws.on('close', onWsClose);
  if (!closing) return true;
  closeConn(conn, CLOSE.goingAway, 'shard shutting down');
  return false;
}

/** Stops sending and accepting on a connection, and bounds how long its socket may linger. */
export function finishConn(conn: WsConn): void {
  if (conn.done && conn.ws.readyState === conn.ws.CLOSED) return;
  conn.done = true;
  const ws = conn.ws;
  const timer = setTimeout(() => ws.terminate(), conn.closeGraceMs);
  timer.unref();
  ws.once('close', () => clearTimeout(timer));
}

/** Closes with a code: the close frame follows what is queued; the socket is ended after a grace. */
export function closeConn(conn: WsConn, code: number, reason: string): void {
  if (conn.done) return;
  finishConn(conn);
  conn.ws.close(code, reason);
}

/**
 * A frame a client sent: takes one token of the connection's rate budget (none left: an
 * `error` event and close 4029), then reads a JSON object from it. What is wrong is
 * answered with an `error` event through `send`; returns the event, or undefined.
 */
export function readClientEvent(
  conn: WsConn,
  data: Buffer,
  isBinary: boolean,
  limits: Limits,
  send: (event: object) => void,
): Record<string, unknown> | undefined {
  if (conn.done || conn.ws.readyState !== conn.ws.OPEN) return undefined;
  const now = Date.now();
  conn.tokens = Math.min(
    limits.wsBurst,
    conn.tokens + ((now - conn.refilledAt) / 1000) * limits.wsMessagesPerSecond,
  );
  conn.refilledAt = now;
  if (conn.tokens < 1) {
    send({ type: 'error', code: 'rate_limited', message: 'too many messages; slow down' });
    closeConn(conn, CLOSE.rateLimited, 'rate limited');
    return undefined;
  }
  conn.tokens -= 1;
  if (isBinary) {
    send({ type: 'error', code: 'bad_frame', message: 'send JSON text frames' });
    return undefined;
  }
  let ev: Record<string, unknown>;
  try {
    ev = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
    if (typeof ev !== 'object' || ev === null || Array.isArray(ev)) throw new Error('not an object');
  } catch {
    send({ type: 'error', code: 'malformed_json', message: 'events are JSON objects with a type' });
    return undefined;
  }
  return ev;
}

/**
 * Sends a pre-framed event (textFrame) on an open connection, counted as a delivery; false
 * when the connection is done, or when the client does not keep up: rather than buffer
 * without bound it is closed with 4008 (nothing more is queued; the close frame follows
 * what is queued, and the socket is ended after a grace whether or not the client reads
 * it). The frame goes to the socket beneath ws: frames are whole, and ws (without
 * compression) writes its own control frames to the socket at once, so the two never
 * interleave within a frame.
 */
export function sendConnFrame(conn: WsConn, frame: Buffer, limits: Limits, metrics: ShardMetrics): boolean {
  const ws = conn.ws;
  if (conn.done || ws.readyState !== ws.OPEN) return false;
  if (ws.bufferedAmount - gathering.gathered(conn.socket) > limits.wsSendQueueBytes) {
    metrics.slowConsumers.inc();
    closeConn(conn, CLOSE.slowConsumer, 'slow consumer');
    return false;
  }
  gathering.write(conn.socket, frame);
  metrics.deliveries.inc();
  return true;
}

/** Sends one event's text on a connection (see sendConnFrame). */
export function sendConnText(conn: WsConn, text: string, limits: Limits, metrics: ShardMetrics): boolean {
  return sendConnFrame(conn, textFrame(text), limits, metrics);
}

/**
 * Answers a message a client sent once it is stored: `ack` with its msgId, prevMsgId,
 * epoch and ts, or `error` with the code (and the clientMsgId, when it is one); `extra`
 * (the inbox's groupId) goes in both. Resolves once answered: with the error, if it failed.
 */
export function answerPost(
  posted: Promise<{ message: Message }>,
  clientMsgId: unknown,
  extra: object,
  send: (event: object) => void,
): Promise<(Error & { code?: string; status?: number }) | undefined> {
  return posted.then(
    ({ message: m }) => {
      send({
        type: 'ack',
        ...extra,
        clientMsgId,
        msgId: m.msgId,
        prevMsgId: m.prevMsgId,
        epoch: m.epoch,
        ts: m.ts,
      });
      return undefined;
    },
    (err: Error & { code?: string; status?: number }) => {
      send({
        type: 'error',
        code: err.code ?? 'unavailable',
        ...extra,
        ...(isClientMsgId(clientMsgId) ? { clientMsgId } : {}),
        message: err.message,
      });
      return err;
    },
  );
}
