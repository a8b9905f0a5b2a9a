/**
 * Checks a configured pattern for catastrophic backtracking (ReDoS) before it runs on
 * every request. Uses recheck, which proves a pattern linear or finds an attack string.
 */
import { createRequire } from 'node:module';

type Recheck = typeof import('recheck');
let recheck: Recheck | undefined;
/** recheck, loaded the first time a pattern is checked (it takes about 0.35 s to load). */
function checker(): Recheck {
  recheck ??= createRequire(import.meta.url)('recheck') as Recheck;
  return recheck;
}

export interface PatternVerdict {
  ok: boolean;
  reason?: string;
}

export function checkPatternSafety(source: string): PatternVerdict {
  try {
    new RegExp(source);
  } catch (err) {
    return { ok: false, reason: `not a valid JavaScript regular expression: ${(err as Error).message}` };
  }
  const diag = checker().checkSync(source, '', { timeout: 5000 });
  if (diag.status === 'safe') return { ok: true };
  if (diag.status === 'vulnerable') {
    const attack = diag.attack?.pattern ?? diag.attack?.string ?? '';
    return {
      ok: false,
      reason: `catastrophic backtracking (${diag.complexity.summary} time) on input such as ${JSON.stringify(
        attack.slice(0, 80),
      )}; rewrite it so that no two parts can match the same characters (e.g. [^/]+ instead of .*)`,
    };
  }
  return {
    ok: false,
    reason: `its backtracking could not be proven safe (${diag.error?.kind ?? 'unknown'}); use a simpler pattern without backreferences`,
  };
}
