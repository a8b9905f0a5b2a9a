/**
 * The open-files limit (RLIMIT_NOFILE) against what a process's connection limits need.
 * Node raises its soft limit to the hard limit when it starts, so the hard limit set by
 * the shell (`ulimit -n`), systemd (`LimitNOFILE`), Docker (`--ulimit nofile`) or the
 * container runtime (Kubernetes has no pod field for it) is what the process gets. Like
 * nginx's "worker_connections exceed open file resource limit", a process whose limit
 * is below what its settings allow says so when it starts: otherwise the first sign is
 * `EMFILE` under load. Linux only (/proc/self/limits); elsewhere nothing is checked.
 */
import fs from 'node:fs';
import type { Logger } from './logger.js';

/** The soft "Max open files" of a /proc/<pid>/limits text; Infinity for unlimited. */
export function parseOpenFilesLimit(limitsText: string): number | undefined {
  const m = /^Max open files\s+(\S+)\s+\S+/m.exec(limitsText);
  if (!m) return undefined;
  if (m[1] === 'unlimited') return Number.POSITIVE_INFINITY;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** This process's open-files limit; undefined where /proc/self/limits cannot be read. */
export function openFilesLimit(): number | undefined {
  try {
    return parseOpenFilesLimit(fs.readFileSync('/proc/self/limits', 'utf8'));
  } catch {
    return undefined;
  }
}

export interface OpenFilesNeed {
  /** Descriptors the process may need at its configured limits. */
  needed: number;
  /** The setting that drives it, as the configuration names it, and its value. */
  setting: string;
  value: number;
}

/**
 * Warns (once, at start) when the limit is below what `need` says; returns whether it
 * is enough (true when the limit is unknown).
 */
export function checkOpenFiles(log: Logger, need: OpenFilesNeed, limit = openFilesLimit()): boolean {
  if (limit === undefined || limit >= need.needed) return true;
  log.warn(
    { openFilesLimit: limit, needed: need.needed, [need.setting]: need.value },
    `the open-files limit (${limit}) is below the ${need.needed} descriptors that ${need.setting}=${need.value} may need: ` +
      'connections past it fail with EMFILE. Raise the limit (ulimit -n, systemd LimitNOFILE, docker --ulimit nofile, ' +
      `the container runtime's default on Kubernetes) or lower ${need.setting}`,
  );
  return false;
}
