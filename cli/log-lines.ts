/**
 * Local mode prints every process's log in one terminal. The processes log JSON (pino),
 * which suits machines; for a person at a terminal each line becomes
 * `12:30:01 INFO  message key=value …`. Lines that are not pino JSON pass unchanged.
 */
const HIDDEN = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'component']);

function show(v: unknown): string {
  if (typeof v === 'string') return /[\s="]/.test(v) || v === '' ? JSON.stringify(v) : v;
  return JSON.stringify(v);
}

export function humanLogLine(line: string): string {
  if (!line.startsWith('{')) return line;
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  if (typeof rec.level !== 'string' || rec.msg === undefined) return line;
  const t = typeof rec.time === 'string' || typeof rec.time === 'number' ? new Date(rec.time) : undefined;
  const clock = t && !Number.isNaN(t.getTime()) ? t.toISOString().slice(11, 19) : '--:--:--';
  const fields = Object.entries(rec)
    .filter(([k]) => !HIDDEN.has(k))
    .map(([k, v]) => `${k}=${show(v)}`);
  return [clock, rec.level.toUpperCase().padEnd(5), String(rec.msg), ...fields].join(' ');
}
