/**
 * `shardchat reshard-plan --from S --to T [--keys FILE | --sample N]`: how many keys
 * change shards when S changes, under both assignments (docs/architecture.md section 7).
 */
import { readFileSync } from 'node:fs';
import { jumpShard, moduloShard } from '../common/assignment.js';
import { initHash, xxh64 } from '../common/hash.js';

export interface AssignmentMoves {
  moved: number;
  fraction: number;
  /** Keys that move, by [from shard, to shard]: "0->3": n. */
  flows: Record<string, number>;
}

export interface ReshardPlan {
  from: number;
  to: number;
  keys: number;
  source: string;
  modulo: AssignmentMoves;
  jump: AssignmentMoves;
  /** The share of keys jump moves in theory when growing: (T - S) / T. */
  jumpIdealFraction: number | null;
}

export function sampleKeys(n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(`group-${i}`);
  return out;
}

export function keysFromFile(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
}

export async function reshardPlan(
  from: number,
  to: number,
  keys: string[],
  source: string,
): Promise<ReshardPlan> {
  await initHash();
  const mod: AssignmentMoves = { moved: 0, fraction: 0, flows: {} };
  const jmp: AssignmentMoves = { moved: 0, fraction: 0, flows: {} };
  for (const key of keys) {
    const h = xxh64(key);
    const m0 = moduloShard(h, from);
    const m1 = moduloShard(h, to);
    if (m0 !== m1) {
      mod.moved++;
      const f = `${m0}->${m1}`;
      mod.flows[f] = (mod.flows[f] ?? 0) + 1;
    }
    const j0 = jumpShard(h, from);
    const j1 = jumpShard(h, to);
    if (j0 !== j1) {
      jmp.moved++;
      const f = `${j0}->${j1}`;
      jmp.flows[f] = (jmp.flows[f] ?? 0) + 1;
    }
  }
  const n = keys.length;
  mod.fraction = n ? mod.moved / n : 0;
  jmp.fraction = n ? jmp.moved / n : 0;
  return {
    from,
    to,
    keys: n,
    source,
    modulo: mod,
    jump: jmp,
    jumpIdealFraction: to > from ? (to - from) / to : to < from ? (from - to) / from : 0,
  };
}
