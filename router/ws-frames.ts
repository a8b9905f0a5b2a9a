import { randomBytes } from 'node:crypto';
/**
 * Tracks WebSocket frame boundaries (RFC 6455 section 5.2) in a relayed byte stream
 * without decoding payloads, so that the router can end a relayed connection with a
 * close frame of its own without cutting a frame in half.
 */

export class FrameBoundaryTracker {
  /** Bytes of the current frame's header seen so far (0 at a boundary). */
  private headerLen = 0;
  /** The header's second byte (MASK bit and 7-bit length), once seen. */
  private b1 = 0;
  /** The extended payload length (16 or 64 bits, big-endian) read so far. */
  private extLen = 0;
  /** Payload bytes still to come in the current frame. */
  private payloadLeft = 0;
  // Plain numbers, no Buffer: the router holds two trackers per relayed WebSocket, and a
  // 14-byte Buffer cost each of them a Buffer, an ArrayBuffer and a native backing store.

  get atBoundary(): boolean {
    return this.headerLen === 0 && this.payloadLeft === 0;
  }

  /**
   * Consumes bytes from `chunk`. With `stopAtBoundary`, stops at the first frame
   * boundary reached (possibly at offset 0); returns the number of bytes consumed.
   */
  advance(chunk: Buffer, stopAtBoundary = false): number {
    let off = 0;
    if (stopAtBoundary && this.atBoundary) return 0;
    while (off < chunk.length) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, chunk.length - off);
        this.payloadLeft -= n;
        off += n;
        if (this.payloadLeft === 0 && stopAtBoundary) return off;
        continue;
      }
      const byte = chunk[off++] as number;
      const at = this.headerLen++;
      if (at === 1) {
        this.b1 = byte;
        this.extLen = 0;
      } else if (at >= 2 && at < 2 + this.extBytes()) {
        // 64-bit lengths past 2^53 lose precision: no stream we relay gets there.
        this.extLen = this.extLen * 256 + byte;
      }
      if (this.headerLen < 2 || this.headerLen < this.neededHeaderBytes()) continue;
      const len7 = this.b1 & 0x7f;
      this.payloadLeft = len7 < 126 ? len7 : this.extLen;
      this.headerLen = 0;
      if (this.payloadLeft === 0 && stopAtBoundary) return off;
    }
    return off;
  }

  /** Bytes of extended payload length after the second byte (0, 2 or 8). */
  private extBytes(): number {
    const len7 = this.b1 & 0x7f;
    return len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
  }

  private neededHeaderBytes(): number {
    return 2 + this.extBytes() + ((this.b1 & 0x80) !== 0 ? 4 : 0);
  }
}

/** A close frame with the given status code, masked when sent by a client (to a server). */
export function closeFrame(code: number, masked: boolean, reason = ''): Buffer {
  // A close reason is at most 123 bytes of valid UTF-8: cut at a character boundary.
  let reasonBytes = Buffer.from(reason, 'utf8');
  if (reasonBytes.length > 123) {
    let end = 123;
    while (end > 0 && ((reasonBytes[end] as number) & 0xc0) === 0x80) end--;
    reasonBytes = reasonBytes.subarray(0, end);
  }
  const payload = Buffer.alloc(2 + reasonBytes.length);
  payload.writeUInt16BE(code, 0);
  reasonBytes.copy(payload, 2);
  if (!masked) return Buffer.concat([Buffer.from([0x88, payload.length]), payload]);
  const mask = randomBytes(4);
  const out = Buffer.alloc(2 + 4 + payload.length);
  out[0] = 0x88;
  out[1] = 0x80 | payload.length;
  mask.copy(out, 2);
  for (let i = 0; i < payload.length; i++) out[6 + i] = (payload[i] as number) ^ (mask[i & 3] as number);
  return out;
}
