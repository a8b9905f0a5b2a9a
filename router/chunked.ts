/**
 * Incremental decoder of the chunked transfer coding (RFC 9112 section 7.1), shared by
 * the request and response parsers. Strict: a malformed size line, a bare LF or a
 * missing CRLF after chunk data is an error; chunk extensions are ignored; trailer
 * fields are read and dropped.
 */

export class ChunkedError extends Error {
  override name = 'ChunkedError';
}

enum S {
  Size = 0,
  Data = 1,
  DataEnd = 2,
  Trailers = 3,
  Done = 4,
}

const MAX_LINE = 4096;
// A trailer field line: token name, colon, value of tabs, visible characters and obs-text.
const TRAILER = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*$/;
// Chunk extensions after ';': no control characters.
const EXTENSION = /^[\t\x20-\x7e\x80-\xff]*$/;

export class ChunkedDecoder {
  private state = S.Size;
  private remaining = 0;
  private line = '';

  get done(): boolean {
    return this.state === S.Done;
  }

  reset(): void {
    this.state = S.Size;
    this.remaining = 0;
    this.line = '';
  }

  /**
   * Decodes from `data` starting at `off`, calling `onData` for each piece of payload;
   * returns the offset after the last byte consumed (the end of the body once `done`).
   */
  decode(data: Buffer, off: number, onData: (chunk: Buffer) => void): number {
    let pos = off;
    while (pos < data.length && this.state !== S.Done) {
      if (this.state === S.Data) {
        const n = Math.min(this.remaining, data.length - pos);
        onData(data.subarray(pos, pos + n));
        pos += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = S.DataEnd;
        continue;
      }
      const lf = data.indexOf(10, pos);
      const end = lf === -1 ? data.length : lf + 1;
      this.line += data.toString('latin1', pos, end);
      pos = end;
      if (this.line.length > MAX_LINE) throw new ChunkedError('chunk line too long');
      if (lf === -1) break;
      if (this.line.length < 2 || this.line.charCodeAt(this.line.length - 2) !== 13) {
        throw new ChunkedError('bare LF in chunked body');
      }
      const line = this.line.slice(0, -2);
      this.line = '';
      this.onLine(line);
    }
    return pos;
  }

  private onLine(line: string): void {
    switch (this.state) {
      case S.Size: {
        const semi = line.indexOf(';');
        const size = semi === -1 ? line : line.slice(0, semi);
        if (semi !== -1 && !EXTENSION.test(line.slice(semi)))
          throw new ChunkedError('invalid chunk extension');
        if (!/^[0-9a-fA-F]{1,12}$/.test(size)) throw new ChunkedError('invalid chunk size');
        this.remaining = Number.parseInt(size, 16);
        this.state = this.remaining === 0 ? S.Trailers : S.Data;
        return;
      }
      case S.DataEnd:
        if (line !== '') throw new ChunkedError('missing CRLF after chunk data');
        this.state = S.Size;
        return;
      case S.Trailers:
        if (line === '') this.state = S.Done;
        else if (!TRAILER.test(line)) throw new ChunkedError('malformed trailer field');
        return;
      default:
        return;
    }
  }
}
