/**
 * Writing events to many WebSockets cheaply: an event is framed once for all its
 * recipients (textFrame), and the writes of one commit or one delivered batch are
 * gathered per socket into one system call (WriteGathering).
 */
import type { Duplex } from 'node:stream';

/**
 * A text event as one complete WebSocket frame. Frames from a server are not masked
 * (RFC 6455 section 5.1), so one frame serves every connection an event goes to: the
 * event is encoded once, not once per recipient, and each recipient costs one write.
 */
export function textFrame(text: string): Buffer {
  const n = Buffer.byteLength(text);
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(head + n);
  frame[0] = 0x81; // FIN, text
  if (n < 126) frame[1] = n;
  else if (n < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(n), 2);
  }
  frame.write(text, head, 'utf8');
  return frame;
}

/**
 * Writes made while `run` runs are gathered per socket (cork) and leave in one write per
 * socket at its end: the messages of one commit, or the records of one fan-out batch,
 * reach a connection in one system call rather than one each. Writes outside a run
 * are gathered until the microtasks queued so far have run (flushAfterTurn). A socket's gathered bytes
 * are flushed early past GATHER_FLUSH_BYTES, so what waits uncorked stays bounded.
 *
 * With a window (`windowMs` > 0, `shard.fanout.flushMs`), the gathered sockets are
 * flushed at once when the last flush is at least that old, and otherwise when it
 * will be: an idle shard writes each event at once, and a busy one writes to each
 * socket at most once per window, however many commits came in between (fewer,
 * larger writes: the system calls per delivery fall as the rate rises, and no event
 * waits longer than the window).
 */
export class WriteGathering {
  /** Flush gathered sockets at most once per this many milliseconds (0: at the end of every run). */
  windowMs = 0;
  private depth = 0;
  /** Corked sockets and the bytes gathered on each since it was last flushed. */
  private readonly corked = new Map<Duplex, number>();
  private lastFlush = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private turnQueued = false;

  constructor(private readonly now: () => number = () => performance.now()) {}

  run(fn: () => void): void {
    this.depth++;
    try {
      fn();
    } finally {
      if (--this.depth === 0) this.flushSoon();
    }
  }

  /** Writes out every gathered socket now. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.lastFlush = this.now();
    for (const s of this.corked.keys()) s.uncork();
    this.corked.clear();
  }

  /**
   * A write outside a run (an ack, a presence or typing event) is gathered too, until the
   * microtasks queued so far have run: the acks of one commit are answered from one
   * resolution of their promises, each in a microtask of its own, and leave in one
   * write per socket rather than one each. Then it leaves like a run's writes.
   */
  private flushAfterTurn(): void {
    if (this.turnQueued) return;
    this.turnQueued = true;
    queueMicrotask(() => {
      this.turnQueued = false;
      if (this.depth === 0) this.flushSoon();
    });
  }

  private flushSoon(): void {
    if (this.corked.size === 0 || this.timer) return;
    const wait = this.lastFlush + this.windowMs - this.now();
    if (wait <= 0) {
      this.flush();
      return;
    }
    this.timer = setTimeout(() => this.flush(), Math.ceil(wait));
    this.timer.unref();
  }

  write(socket: Duplex, frame: Buffer): void {
    let n = this.corked.get(socket);
    if (n === undefined) {
      socket.cork();
      n = 0;
      if (this.depth === 0) this.flushAfterTurn();
    }
    socket.write(frame);
    n += frame.length;
    if (n >= GATHER_FLUSH_BYTES) {
      socket.uncork();
      socket.cork();
      n = 0;
    }
    this.corked.set(socket, n);
  }

  /** Bytes gathered on a socket and not yet handed to it (not a backlog of the client's). */
  gathered(socket: Duplex): number {
    return this.corked.get(socket) ?? 0;
  }
}

const GATHER_FLUSH_BYTES = 64 * 1024;

/** The one gathering of this process: group and inbox connections share it. */
export const gathering = new WriteGathering();
