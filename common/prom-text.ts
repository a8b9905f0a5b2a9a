/**
 * Reads the Prometheus text exposition format (what `/metrics` answers) into samples:
 * enough for the cluster view to sum a series by name and labels. Comments, `# HELP`
 * and `# TYPE` lines are skipped; label values keep their escapes decoded.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parsePromText(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[2]) {
      for (const l of m[2].matchAll(LABEL))
        labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const value = Number(m[3]);
    if (!Number.isNaN(value) || m[3] === 'NaN') out.push({ name: m[1] as string, labels, value });
  }
  return out;
}

/** A label's wanted value, or a test of its value. */
export type LabelMatch = string | ((value: string) => boolean);

/** The sum of the samples named `name` whose labels match `labels` (0 when there is none). */
export function sumOf(
  samples: readonly Sample[],
  name: string,
  labels: Record<string, LabelMatch> = {},
): number {
  let sum = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    let match = true;
    for (const [k, want] of Object.entries(labels)) {
      const v = s.labels[k];
      if (v === undefined || (typeof want === 'string' ? v !== want : !want(v))) match = false;
    }
    if (match && Number.isFinite(s.value)) sum += s.value;
  }
  return sum;
}

/** Whether any sample is named `name`. */
export function hasSeries(samples: readonly Sample[], name: string): boolean {
  return samples.some((s) => s.name === name);
}
