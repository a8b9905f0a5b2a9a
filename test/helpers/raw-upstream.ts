/**
 * A small misbehaving upstream for router tests: a `net` server on a free test port that
 * reads request heads (and Content-Length bodies) off each connection and lets the test
 * answer with raw bytes, exactly as written: extra bytes after a response, bodies on
 * 204/304/HEAD, two responses in one write, a refused upgrade that keeps the socket
 * open, a late 101. It records every request, every connection and who closed it.
 */
import net from 'node:net';
import { freePort } from './processes.js';

export interface UpstreamRequest {
  /** Which connection (1, 2, ... in order of accept). */
  conn: number;
  /** The request's number on its connection (1, 2, ...). */
  index: number;
  method: string;
  target: string;
  /** Lower-cased names; repeated headers in order. */
  headers: Record<string, string[]>;
  head: string;
  body: Buffer;
}

export interface UpstreamConn {
  id: number;
  socket: net.Socket;
  requests: number;
  /** When the connection closed (Date.now()), undefined while open. */
  closedAt: number | undefined;
  /** Whether the router (the peer) ended or reset the connection, rather than this side. */
  closedByPeer: boolean;
  /** Bytes read after the test called tunnel() (an accepted upgrade). */
  tunnelBytes: Buffer;
  tunnel: boolean;
}

/** Answers one request: write to `conn.socket` as the test pleases (or nothing). */
export type Reply = (req: UpstreamRequest, conn: UpstreamConn, up: RawUpstream) => void;

const CRLFCRLF = Buffer.from('\r\n\r\n');

export class RawUpstream {
  readonly requests: UpstreamRequest[] = [];
  readonly conns: UpstreamConn[] = [];
  private constructor(
    readonly server: net.Server,
    readonly port: number,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Connections still open. */
  get open(): UpstreamConn[] {
    return this.conns.filter((c) => c.closedAt === undefined);
  }

  static async start(reply: Reply): Promise<RawUpstream> {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      let up: RawUpstream | undefined;
      const server = net.createServer((socket) => up?.accept(socket, reply));
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(port, '127.0.0.1', () => {
            server.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        if (attempt < 3 && /EADDRINUSE/.test(String(err))) continue;
        throw err;
      }
      up = new RawUpstream(server, port);
      return up;
    }
  }

  private accept(socket: net.Socket, reply: Reply): void {
    const conn: UpstreamConn = {
      id: this.conns.length + 1,
      socket,
      requests: 0,
      closedAt: undefined,
      closedByPeer: false,
      tunnelBytes: Buffer.alloc(0),
      tunnel: false,
    };
    this.conns.push(conn);
    let buf = Buffer.alloc(0);
    let ownEnd = false;
    const write = socket.end.bind(socket);
    socket.end = ((...args: Parameters<typeof socket.end>) => {
      ownEnd = true;
      return write(...args);
    }) as typeof socket.end;
    socket.on('error', () => {});
    socket.on('end', () => {
      if (!ownEnd) conn.closedByPeer = true;
      socket.end();
    });
    socket.on('close', (hadError) => {
      if (hadError && !ownEnd) conn.closedByPeer = true;
      conn.closedAt = Date.now();
    });
    socket.on('data', (chunk: Buffer) => {
      if (conn.tunnel) {
        conn.tunnelBytes = Buffer.concat([conn.tunnelBytes, chunk]);
        return;
      }
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (conn.tunnel) {
          conn.tunnelBytes = Buffer.concat([conn.tunnelBytes, buf]);
          buf = Buffer.alloc(0);
          return;
        }
        const end = buf.indexOf(CRLFCRLF);
        if (end === -1) return;
        const head = buf.toString('latin1', 0, end);
        const lines = head.split('\r\n');
        const [method = '', target = ''] = (lines[0] ?? '').split(' ');
        const headers: Record<string, string[]> = {};
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(':');
          const name = line.slice(0, colon).trim().toLowerCase();
          const list = headers[name] ?? [];
          list.push(line.slice(colon + 1).trim());
          headers[name] = list;
        }
        const length = Number(headers['content-length']?.[0] ?? 0);
        if (buf.length < end + 4 + length) return;
        const body = Buffer.from(buf.subarray(end + 4, end + 4 + length));
        buf = buf.subarray(end + 4 + length);
        conn.requests++;
        const req: UpstreamRequest = {
          conn: conn.id,
          index: conn.requests,
          method,
          target,
          headers,
          head,
          body,
        };
        this.requests.push(req);
        reply(req, conn, this);
      }
    });
  }

  /** From now on the connection's bytes are a tunnel (after a 101), kept in `tunnelBytes`. */
  tunnel(conn: UpstreamConn): void {
    conn.tunnel = true;
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A complete `HTTP/1.1` response with a Content-Length body. */
export function httpResponse(status: number, body: string, extra = ''): string {
  return `HTTP/1.1 ${status} X\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
}

export const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
export const WS_ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=';

/** A WebSocket upgrade request head. */
export function upgradeRequest(target: string, extra = ''): string {
  return `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${WS_KEY}\r\n${extra}\r\n`;
}

export const SWITCHING = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${WS_ACCEPT}\r\n\r\n`;
