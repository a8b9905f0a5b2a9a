/**
 * The migration's progress on stderr: on a terminal, one line redrawn in place (phase,
 * a bar of the keys copied, messages and bytes, rate and ETA); otherwise one line per
 * phase and per note, so logs stay readable.
 */
import type { Progress } from './coordinator.js';

const WIDTH = 24;

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

export class ProgressBar {
  private readonly tty: boolean;
  private phaseStarted = performance.now();
  private lastPhase = '';
  private drawn = false;
  private lastDraw = 0;

  constructor(private readonly out: NodeJS.WriteStream) {
    this.tty = out.isTTY === true;
  }

  /** The line for a progress report (exported for tests through render()). */
  render(p: Progress, now = performance.now()): string {
    const secs = (now - this.phaseStarted) / 1000;
    let line = `${p.phase.padEnd(8)}`;
    if (p.keysTotal !== undefined && p.keysTotal > 0) {
      const frac = Math.min(1, p.keys / p.keysTotal);
      const fill = Math.round(frac * WIDTH);
      const rate = secs > 0 ? p.keys / secs : 0;
      const eta = rate > 0 ? (p.keysTotal - p.keys) / rate : undefined;
      line += ` [${'#'.repeat(fill)}${'.'.repeat(WIDTH - fill)}] ${p.keys}/${p.keysTotal} keys`;
      line += ` ${rate.toFixed(0)} keys/s${eta === undefined ? '' : ` ETA ${eta.toFixed(0)} s`}`;
    }
    line += ` | ${p.messages} messages, ${bytes(p.bytes)}`;
    return line;
  }

  update(p: Progress): void {
    if (p.phase !== this.lastPhase) {
      this.lastPhase = p.phase;
      this.phaseStarted = performance.now();
      if (!this.tty) {
        this.lastDraw = this.phaseStarted;
        this.out.write(`${this.render(p)}\n`);
      }
    }
    const now = performance.now();
    // A terminal is redrawn 10 times a second; a log gets a line every 2 s.
    if (now - this.lastDraw < (this.tty ? 100 : 2000)) return;
    this.lastDraw = now;
    if (!this.tty) {
      this.out.write(`${this.render(p, now)}\n`);
      return;
    }
    this.out.write(`\r\x1b[2K${this.render(p, now)}`);
    this.drawn = true;
  }

  note(message: string): void {
    if (this.tty && this.drawn) this.out.write('\r\x1b[2K');
    this.out.write(`shardchat reshard: ${message}\n`);
    this.drawn = false;
  }

  done(): void {
    if (this.tty && this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}
