/** Address templates (common/topology.ts expandTemplate): `{ordinal}`, `{ordinal+N}` and `{namespace}`. */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../common/config.js';
import { expandTemplate, staticEndpoints } from '../../../common/topology.js';

describe('expandTemplate', () => {
  it('replaces {ordinal}, {ordinal+N} (the ordinal plus N) and {namespace}', () => {
    expect(expandTemplate('http://s-{ordinal}.{namespace}:8080', 2, 'chat')).toBe('http://s-2.chat:8080');
    expect(expandTemplate('http://127.0.0.1:{ordinal+8081}', 0, 'x')).toBe('http://127.0.0.1:8081');
    expect(expandTemplate('http://127.0.0.1:{ordinal+8081}', 5, 'x')).toBe('http://127.0.0.1:8086');
    expect(expandTemplate('http://h{ordinal}:{ordinal+9000}/{ordinal}', 3, 'x')).toBe('http://h3:9003/3');
    // Not a placeholder: left as it is.
    expect(expandTemplate('http://h:{ordinal-1}', 3, 'x')).toBe('http://h:{ordinal-1}');
  });

  it('config validation accepts a template with {ordinal+N}; static endpoints come from it', () => {
    const cfg = parseConfig({
      topology: {
        shards: 3,
        targetTemplate: 'http://127.0.0.1:{ordinal+8081}',
        adminTemplate: 'http://127.0.0.1:{ordinal+9091}',
      },
    });
    expect(staticEndpoints(cfg).map((e) => [e.target, e.admin])).toEqual([
      ['http://127.0.0.1:8081', 'http://127.0.0.1:9091'],
      ['http://127.0.0.1:8082', 'http://127.0.0.1:9092'],
      ['http://127.0.0.1:8083', 'http://127.0.0.1:9093'],
    ]);
    expect(() => parseConfig({ topology: { targetTemplate: 'http://127.0.0.1:{ordinal+}' } })).toThrow(
      /targetTemplate/,
    );
  });
});
