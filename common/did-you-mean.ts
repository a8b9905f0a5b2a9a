/**
 * "Did you mean": the closest of a few known names to a mistyped one, by the optimal
 * string alignment distance (Levenshtein plus transposition of two adjacent characters,
 * each edit costing 1), compared without regard to case.
 */

/** The optimal string alignment distance between `a` and `b` (case-sensitive). */
export function editDistance(a: string, b: string): number {
  const m = a.length;
  const n = b.length;
  if (m === 0) return n;
  if (n === 0) return m;
  // Three rows: the one before the previous (for transpositions), the previous, the current.
  let before = new Array<number>(n + 1).fill(0);
  let prev = Array.from({ length: n + 1 }, (_, j) => j);
  let cur = new Array<number>(n + 1).fill(0);
  for (let i = 1; i <= m; i++) {
    cur[0] = i;
    for (let j = 1; j <= n; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, (before[j - 2] as number) + 1);
      }
      cur[j] = d;
    }
    [before, prev, cur] = [prev, cur, before];
  }
  return prev[n] as number;
}

/**
 * The candidate closest to `word` (ignoring case) when it is at most `max` edits away and
 * the edits change less than half of the longer of the two (so that `xyz` does not
 * suggest `x`, nor `host` `port`); ties go to the earlier candidate. Undefined when
 * nothing is that close.
 */
export function closest(word: string, candidates: readonly string[], max = 2): string | undefined {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase());
    if (d <= max && 2 * d < Math.max(w.length, c.length) && d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}
