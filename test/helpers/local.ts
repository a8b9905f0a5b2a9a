/** Helpers for tests of `shardchat local` (npm start): port ranges and process groups. */
import { canConnect } from './processes.js';

/** A base port whose whole local-mode range (router, shards, admin ports) is free. */
export async function freeLocalBase(shards: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    // 30000-32767: below the ephemeral range (no outgoing connection takes these ports)
    // and above the slices freePorts draws from (test/helpers/processes.ts).
    const base = 30_000 + Math.floor(Math.random() * (32_768 - 1_100 - 30_000));
    const ports = [base, base + 1010];
    for (let i = 0; i < shards; i++) ports.push(base + 1 + i, base + 1011 + i);
    const busy = await Promise.all(ports.map((p) => canConnect(p)));
    if (!busy.some(Boolean)) return base;
  }
  throw new Error('no free port range');
}

/** Whether any process of the process group `pgid` is still alive. */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Kills what is left of a process group (cleanup after a failed test). */
export function killGroup(pgid: number | undefined): void {
  if (!pgid) return;
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // already gone
  }
}
