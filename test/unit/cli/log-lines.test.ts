import { describe, expect, it } from 'vitest';
import { humanLogLine } from '../../../cli/log-lines.js';

describe('humanLogLine (local mode terminal output)', () => {
  it('turns a pino JSON line into time, level, message and the other fields', () => {
    const line = JSON.stringify({
      level: 'info',
      time: '2026-11-22T20:30:39.828Z',
      component: 'shard',
      pid: 32032,
      shard: 2,
      db: '/tmp/x y/shard-2.sqlite',
      msg: 'shard listening',
    });
    expect(humanLogLine(line)).toBe('20:30:39 INFO  shard listening shard=2 db="/tmp/x y/shard-2.sqlite"');
  });

  it('keeps nested values as JSON and accepts epoch-millisecond times', () => {
    const line = JSON.stringify({ level: 'warn', time: 0, msg: 'x', err: { code: 'E' }, empty: '' });
    expect(humanLogLine(line)).toBe('00:00:00 WARN  x err={"code":"E"} empty=""');
  });

  it('passes through lines that are not pino JSON', () => {
    for (const line of ['plain text', '{not json', '{"a":1}', '[1,2]', ''])
      expect(humanLogLine(line)).toBe(line);
  });
});
