/**
 * local.yaml of `shardchat local` (cli/local/config.ts): address templates for any
 * ordinal, the shard count a data folder records (a different --shards refused, as are
 * shard databases the count would hide), and rewriting the count keeping the rest.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import yaml from 'js-yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../../cli/args.js';
import {
  localConfig,
  localConfigPath,
  recordedShards,
  rewriteShards,
  shardsOnStart,
  writeLocalConfig,
} from '../../../cli/local/config.js';
import { parseConfig } from '../../../common/config.js';
import { staticEndpoints } from '../../../common/topology.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function dataDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'shardchat-local-'));
  dirs.push(d);
  return d;
}

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('not refused');
}

describe('local.yaml', () => {
  it('addresses shards by template: shard i on port+1+i, its admin port on port+1011+i', () => {
    const d = dataDir();
    const cfg = parseConfig(localConfig({ shards: 3, dataDir: d, port: 8080 }));
    expect(cfg.topology.shards).toBe(3);
    expect(cfg.topology.targets).toEqual([]);
    expect(staticEndpoints(cfg).map((e) => [e.target, e.admin])).toEqual([
      ['http://127.0.0.1:8081', 'http://127.0.0.1:9091'],
      ['http://127.0.0.1:8082', 'http://127.0.0.1:9092'],
      ['http://127.0.0.1:8083', 'http://127.0.0.1:9093'],
    ]);
    // Any ordinal is addressable: the same file with 5 shards reaches shard 4.
    const five = parseConfig(localConfig({ shards: 5, dataDir: d, port: 8080 }));
    expect(staticEndpoints(five)[4]?.admin).toBe('http://127.0.0.1:9095');
  });

  it('a new data folder starts with --shards, or 3', () => {
    expect(shardsOnStart(dataDir(), undefined)).toBe(3);
    expect(shardsOnStart(dataDir(), 5)).toBe(5);
  });

  it('a data folder with local.yaml keeps its count; a different --shards is refused with the way to reshard', () => {
    const d = dataDir();
    writeLocalConfig(localConfigPath(d), localConfig({ shards: 3, dataDir: d, port: 8080 }));
    expect(shardsOnStart(d, undefined)).toBe(3);
    expect(shardsOnStart(d, 3)).toBe(3);
    expect(refusal(() => shardsOnStart(d, 4))).toBe(
      `${d}/ holds a cluster of 3 shards; --shards 4 would hide the groups of the others. ` +
        `To change the number of shards of a running cluster: shardchat reshard --to 4 --config ${d}/local.yaml ` +
        '(see README "Growing and shrinking a cluster")',
    );
    expect(refusal(() => shardsOnStart(d, 2))).toMatch(/--shards 2 would hide the groups of the others/);
  });

  it('an older local.yaml (targets lists) counts its targets', () => {
    const d = dataDir();
    writeFileSync(
      localConfigPath(d),
      yaml.dump({ topology: { targets: ['http://127.0.0.1:1', 'http://127.0.0.1:2'], adminTargets: [] } }),
    );
    expect(recordedShards(localConfigPath(d))).toBe(2);
    expect(shardsOnStart(d, undefined)).toBe(2);
  });

  it('shard databases at or beyond the count are refused (their groups would be hidden)', () => {
    const d = dataDir();
    for (const i of [0, 1, 2, 3]) writeFileSync(path.join(d, `shard-${i}.sqlite`), '');
    writeFileSync(path.join(d, 'shard-3.sqlite-wal'), '');
    expect(refusal(() => shardsOnStart(d, undefined))).toMatch(
      /holds shard-3\.sqlite beyond a cluster of 3 shards \(0\.\.2\): starting 3 would hide the groups in it\. Start with --shards 4 .*shardchat reshard --to N/,
    );
    expect(shardsOnStart(d, 4)).toBe(4);
    writeLocalConfig(localConfigPath(d), localConfig({ shards: 2, dataDir: d, port: 8080 }));
    expect(refusal(() => shardsOnStart(d, undefined))).toMatch(
      /holds shard-2\.sqlite, shard-3\.sqlite beyond/,
    );
  });

  it('rewriteShards changes topology.shards and keeps every other field', () => {
    const d = dataDir();
    const file = localConfigPath(d);
    const cfg = localConfig({ shards: 3, dataDir: d, port: 8080 });
    writeLocalConfig(file, { ...cfg, log: { level: 'debug' } });
    rewriteShards(file, 4);
    const after = yaml.load(readFileSync(file, 'utf8')) as Record<string, Record<string, unknown>>;
    expect(after.topology?.shards).toBe(4);
    expect(after.topology?.targetTemplate).toBe('http://127.0.0.1:{ordinal+8081}');
    expect(after.log).toEqual({ level: 'debug' });
    expect(after.router).toEqual(cfg.router);
    expect(recordedShards(file)).toBe(4);
    expect(parseConfig(after).topology.shards).toBe(4);
  });
});
