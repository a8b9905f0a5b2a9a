/**
 * shard/sockets/ws-conn.ts on real sockets: pre-framed events, write gathering, and the close
 * grace (`shard.limits.wsCloseGraceMs`) after which a closing socket whose client does
 * not answer is ended.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { parseConfig } from '../../../../common/config.js';
import type { ShardMetrics } from '../../../../shard/metrics.js';
import { gathering, textFrame } from '../../../../shard/sockets/gathering.js';
import { ConnState, closeConn, sendConnFrame, type WsConn } from '../../../../shard/sockets/ws-conn.js';
import { waitFor } from '../../../helpers/processes.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const metrics = {
  deliveries: { inc() {} },
  slowConsumers: { inc() {} },
} as unknown as ShardMetrics;

/** A ws server on loopback whose connections become WsConns with the given limits. */
async function serve(limits: Record<string, number>) {
  const cfg = parseConfig({ shard: { limits } });
  const server = http.createServer();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const conns: WsConn[] = [];
  const closed: number[] = [];
  server.on('upgrade', (req, socket: Duplex, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      const conn = new ConnState(ws, socket, cfg.shard.limits);
      ws.on('close', (code) => closed.push(code));
      conns.push(conn);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const c of conns) c.ws.terminate();
        server.close(() => r());
      }),
  );
  const client = async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
    cleanups.push(() => ws.terminate());
    const got: string[] = [];
    ws.on('message', (d) => got.push(d.toString()));
    await new Promise((r, j) => {
      ws.once('open', r);
      ws.once('error', j);
    });
    await waitFor(() => conns.length > 0);
    return { ws, got };
  };
  return { conns, closed, client, limits: cfg.shard.limits };
}

describe('textFrame', () => {
  it('frames short, 16-bit and 64-bit lengths as RFC 6455 unmasked text frames', () => {
    for (const n of [0, 125, 126, 65535, 65536]) {
      const text = 'x'.repeat(n);
      const f = textFrame(text);
      expect(f[0]).toBe(0x81);
      const len7 = (f[1] as number) & 0x7f;
      expect((f[1] as number) & 0x80).toBe(0);
      const [len, head] =
        len7 < 126 ? [len7, 2] : len7 === 126 ? [f.readUInt16BE(2), 4] : [Number(f.readBigUInt64BE(2)), 10];
      expect(len).toBe(n);
      expect(f.subarray(head).toString()).toBe(text);
    }
  });
});

describe('sending pre-framed events', () => {
  it('delivers frames written inside and outside a gathering, in order, and UTF-8 intact', async () => {
    const s = await serve({});
    const { got } = await s.client();
    const conn = s.conns[0] as WsConn;
    const events = [
      'one',
      'zwei – drei',
      '四',
      JSON.stringify({ type: 'message', contents: 'ü'.repeat(70_000) }),
    ];
    expect(sendConnFrame(conn, textFrame(events[0] as string), s.limits, metrics)).toBe(true);
    gathering.run(() => {
      for (const e of events.slice(1)) sendConnFrame(conn, textFrame(e), s.limits, metrics);
      // Nothing leaves a corked socket before the gathering ends.
      expect(conn.socket.writableCorked).toBeGreaterThan(0);
    });
    expect(conn.socket.writableCorked).toBe(0);
    await waitFor(() => got.length === events.length);
    expect(got).toEqual(events);
  });
});

describe('wsCloseGraceMs', () => {
  it('ends a closing socket whose client never answers the close frame after the grace', async () => {
    const s = await serve({ wsCloseGraceMs: 200 });
    const { ws } = await s.client();
    // The client reads nothing more: the close handshake cannot complete.
    (ws as unknown as { _socket: Duplex })._socket.pause();
    closeConn(s.conns[0] as WsConn, 4008, 'slow consumer');
    // Ended by the server without a close frame from the client: 1006.
    await waitFor(() => s.closed.length === 1, { timeoutMs: 10_000, what: 'the server side to end' });
    expect(s.closed[0]).toBe(1006);
  });

  it('with a longer grace the same socket is still open when a shorter one would have ended it', async () => {
    const s = await serve({ wsCloseGraceMs: 60_000 });
    const { ws } = await s.client();
    (ws as unknown as { _socket: Duplex })._socket.pause();
    closeConn(s.conns[0] as WsConn, 4008, 'slow consumer');
    await new Promise((r) => setTimeout(r, 600));
    expect(s.closed).toEqual([]);
  });
});
