/** common/open-files.ts: reading the limit and the warning, without processes. */
import { describe, expect, it } from 'vitest';
import type { Logger } from '../../../common/logger.js';
import { checkOpenFiles, openFilesLimit, parseOpenFilesLimit } from '../../../common/open-files.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

function recorder() {
  const warnings: [Record<string, unknown>, string][] = [];
  const log = { warn: (o: Record<string, unknown>, m: string) => warnings.push([o, m]) } as unknown as Logger;
  return { log, warnings };
}

describe('parseOpenFilesLimit', () => {
  it('reads the soft limit', () => {
    expect(parseOpenFilesLimit(LIMITS)).toBe(1024);
  });
  it('unlimited is Infinity; a text without the line or with garbage is undefined', () => {
    expect(parseOpenFilesLimit(LIMITS.replace('1024  ', 'unlimited'))).toBe(Number.POSITIVE_INFINITY);
    expect(parseOpenFilesLimit('Max cpu time   unlimited  unlimited  seconds\n')).toBeUndefined();
    expect(parseOpenFilesLimit('Max open files  lots  lots  files\n')).toBeUndefined();
  });
  it("this process's own limit is a number on Linux", () => {
    if (process.platform === 'linux') expect(openFilesLimit()).toBeGreaterThan(0);
  });
});

describe('checkOpenFiles', () => {
  const need = { needed: 4272, setting: 'router.limits.maxConnections', value: 2000 };
  it('warns below what the setting needs, naming the limit, the need and the setting', () => {
    const { log, warnings } = recorder();
    expect(checkOpenFiles(log, need, 3000)).toBe(false);
    expect(warnings).toHaveLength(1);
    const [fields, message] = warnings[0] as [Record<string, unknown>, string];
    expect(fields).toEqual({ openFilesLimit: 3000, needed: 4272, 'router.limits.maxConnections': 2000 });
    expect(message).toContain('router.limits.maxConnections=2000');
    expect(message).toContain('ulimit -n');
  });
  it('says nothing at or above the need, or when the limit is unknown', () => {
    const { log, warnings } = recorder();
    expect(checkOpenFiles(log, need, 4272)).toBe(true);
    expect(checkOpenFiles(log, need, Number.POSITIVE_INFINITY)).toBe(true);
    expect(checkOpenFiles(log, need, undefined)).toBe(true);
    expect(warnings).toHaveLength(0);
  });
});
