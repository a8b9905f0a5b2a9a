/** topology.mode: kubernetes in the configuration (common/config.ts): the shape the chart writes. */
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig, shardCount } from '../../../common/config.js';

function invalid(raw: unknown): string {
  try {
    parseConfig(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('topology.mode kubernetes', () => {
  it('defaults: static mode, S = 3, and the kubernetes section filled in', () => {
    const cfg = parseConfig({});
    expect(cfg.topology.mode).toBe('static');
    expect(cfg.topology.shards).toBe(3);
    expect(cfg.topology.kubernetes).toEqual({ statefulSet: 'shardchat-shard', port: 8080, adminPort: 9090 });
  });

  it('S is topology.shards; the StatefulSet name and ports are kept', () => {
    const cfg = parseConfig({
      topology: {
        mode: 'kubernetes',
        shards: 5,
        namespace: 'chat',
        kubernetes: { statefulSet: 'my-shards', port: 8081, adminPort: 9091 },
      },
    });
    expect(shardCount(cfg)).toBe(5);
    expect(cfg.topology).toMatchObject({
      mode: 'kubernetes',
      shards: 5,
      namespace: 'chat',
      kubernetes: { statefulSet: 'my-shards', port: 8081, adminPort: 9091 },
    });
  });

  it('topology.shards is required in kubernetes mode', () => {
    expect(invalid({ topology: { mode: 'kubernetes' } })).toMatch(
      /^\s*topology\.shards: is required in kubernetes mode/m,
    );
  });

  it('targets and adminTargets are refused in kubernetes mode', () => {
    expect(invalid({ topology: { mode: 'kubernetes', shards: 2, targets: ['http://a:1'] } })).toMatch(
      /^\s*topology\.targets: must be empty in kubernetes mode/m,
    );
    expect(invalid({ topology: { mode: 'kubernetes', shards: 2, adminTargets: ['http://a:1'] } })).toMatch(
      /^\s*topology\.adminTargets: /m,
    );
  });

  it('bad kubernetes fields are reported with their path', () => {
    expect(
      invalid({ topology: { mode: 'kubernetes', shards: 2, kubernetes: { statefulSet: 'Bad_Name' } } }),
    ).toMatch(/^\s*topology\.kubernetes\.statefulSet: /m);
    expect(invalid({ topology: { mode: 'kubernetes', shards: 2, kubernetes: { port: 70000 } } })).toMatch(
      /^\s*topology\.kubernetes\.port: /m,
    );
    expect(invalid({ topology: { mode: 'kubernetes', shards: 2, kubernetes: { replicas: 3 } } })).toMatch(
      /topology\.kubernetes/,
    );
    expect(invalid({ topology: { mode: 'dns' } })).toMatch(/^\s*topology\.mode: /m);
  });

  it('onNoMatch as a shard number is checked against topology.shards', () => {
    expect(invalid({ shardSpec: { onNoMatch: 4 }, topology: { mode: 'kubernetes', shards: 4 } })).toMatch(
      /shardSpec\.onNoMatch: shard 4 does not exist/,
    );
  });

  it('environment overrides reach the kubernetes fields (as the chart sets them)', () => {
    const cfg = loadConfig(undefined, {
      SHARDCHAT__topology__mode: 'kubernetes',
      SHARDCHAT__topology__shards: '4',
      SHARDCHAT__topology__kubernetes__statefulSet: 'chat-shard',
      SHARDCHAT__topology__kubernetes__adminPort: '9999',
    });
    expect(shardCount(cfg)).toBe(4);
    expect(cfg.topology.kubernetes).toEqual({ statefulSet: 'chat-shard', port: 8080, adminPort: 9999 });
  });
});
