/** Structured JSON logs (pino) on stdout, one logger per process. */
import { type Logger, pino } from 'pino';

export type { Logger };

export function createLogger(component: string, level: string, extra: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { component, pid: process.pid, ...extra },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
