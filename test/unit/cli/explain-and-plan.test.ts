/**
 * The CLI's pure parts: `shardchat explain` (cli/explain.ts) and `shardchat
 * reshard-plan` (cli/reshard-plan.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { explain } from '../../../cli/explain.js';
import { keysFromFile, reshardPlan, sampleKeys } from '../../../cli/reshard-plan.js';
import { jumpShard, moduloShard } from '../../../common/assignment.js';
import { type Config, parseConfig } from '../../../common/config.js';
import { initHash, xxh64 } from '../../../common/hash.js';

beforeAll(async () => {
  await initHash();
});

function cfgWith(raw: Record<string, unknown> = {}): Config {
  return parseConfig(raw);
}

/** The default target of shard `ordinal` (namespace from the parsed configuration). */
function defaultTarget(cfg: Config, ordinal: number): string {
  return `http://shardchat-shard-${ordinal}.shardchat-shard.${cfg.topology.namespace}.svc.cluster.local:8080`;
}

describe('explain', () => {
  it('/groups/lobby under the default configuration: shard 0 of 3', async () => {
    const cfg = cfgWith();
    const e = await explain(cfg, '/groups/lobby', {});
    expect(e).toEqual({
      path: '/groups/lobby',
      rule: 'urlPattern',
      key: 'lobby',
      hash: '9476425263204922770',
      shard: 0,
      shards: 3,
      assignment: 'modulo',
      target: defaultTarget(cfg, 0),
      outcome: 'forward',
    });
    expect(e.target).toMatch(/^http:\/\/shardchat-shard-0\.shardchat-shard\./);
    // The output is the JSON the command prints: the hash is a decimal string, not a number.
    const json = JSON.parse(JSON.stringify(e)) as Record<string, unknown>;
    expect(json.hash).toBe('9476425263204922770');
  });

  it('the query string and fragment are not part of the path', async () => {
    const e = await explain(cfgWith(), '/groups/lobby/messages?since=5#x', {});
    expect(e).toMatchObject({ path: '/groups/lobby/messages', key: 'lobby', shard: 0, outcome: 'forward' });
  });

  it('percent-encoded and plain keys explain identically', async () => {
    const a = await explain(cfgWith(), '/groups/lobby%7E1', {});
    const b = await explain(cfgWith(), '/groups/lobby~1', {});
    expect({ ...a, path: undefined }).toEqual({ ...b, path: undefined });
    expect(a).toMatchObject({ key: 'lobby~1', hash: '2659047086184378660', shard: 0 });
  });

  it('a header overrides the path (header names are case-insensitive)', async () => {
    const cfg = cfgWith();
    const e = await explain(cfg, '/groups/lobby', { 'X-Group-Id': 'g42' });
    expect(e).toEqual({
      path: '/groups/lobby',
      rule: 'header',
      key: 'g42',
      hash: '18356045141016501101',
      shard: 2,
      shards: 3,
      assignment: 'modulo',
      target: defaultTarget(cfg, 2),
      outcome: 'forward',
    });
    // Other headers do nothing.
    expect(await explain(cfg, '/groups/lobby', { 'x-tenant': 'g42' })).toMatchObject({
      rule: 'urlPattern',
      key: 'lobby',
    });
  });

  it('a configured header name is honoured', async () => {
    const cfg = cfgWith({ shardSpec: { header: 'x-room' } });
    expect(await explain(cfg, '/groups/lobby', { 'x-room': 'alice' })).toMatchObject({
      rule: 'header',
      key: 'alice',
    });
    expect(await explain(cfg, '/groups/lobby', { 'x-group-id': 'alice' })).toMatchObject({
      rule: 'urlPattern',
      key: 'lobby',
    });
  });

  it('jump assignment and explicit targets', async () => {
    const cfg = cfgWith({
      shardSpec: { assignment: 'jump' },
      topology: {
        targets: [
          'http://127.0.0.1:8081',
          'http://127.0.0.1:8082',
          'http://127.0.0.1:8083',
          'http://127.0.0.1:8084',
        ],
      },
    });
    // Reference vectors: lobby -> jump(4) = 1, g42 -> jump(4) = 3.
    expect(await explain(cfg, '/groups/lobby', {})).toMatchObject({
      shard: 1,
      shards: 4,
      assignment: 'jump',
      target: 'http://127.0.0.1:8082',
    });
    expect(await explain(cfg, '/users/g42', {})).toMatchObject({ shard: 3, target: 'http://127.0.0.1:8084' });
  });

  it("onNoMatch 'path': the whole path is the key", async () => {
    const e = await explain(cfgWith(), '/healthz?x=1', {});
    const h = xxh64('/healthz');
    expect(e).toMatchObject({
      path: '/healthz',
      rule: 'path',
      key: '/healthz',
      hash: h.toString(),
      shard: Number(h % 3n),
      outcome: 'forward',
    });
  });

  it("onNoMatch 'reject': the router answers 404 itself", async () => {
    const cfg = cfgWith({ shardSpec: { onNoMatch: 'reject' } });
    expect(await explain(cfg, '/healthz', {})).toEqual({
      path: '/healthz',
      rule: 'onNoMatch',
      key: null,
      hash: null,
      shard: null,
      shards: 3,
      assignment: 'modulo',
      target: null,
      outcome: 'reject (404)',
    });
    // Matching paths are still forwarded.
    expect(await explain(cfg, '/groups/lobby', {})).toMatchObject({ outcome: 'forward', shard: 0 });
  });

  it('onNoMatch <number>: a fixed shard and its target', async () => {
    const cfg = cfgWith({ shardSpec: { onNoMatch: 1 } });
    expect(await explain(cfg, '/healthz', {})).toEqual({
      path: '/healthz',
      rule: 'onNoMatch',
      key: null,
      hash: null,
      shard: 1,
      shards: 3,
      assignment: 'modulo',
      target: defaultTarget(cfg, 1),
      outcome: 'forward',
    });
  });

  it('a malformed escape: the router answers 400, the raw key is shown', async () => {
    expect(await explain(cfgWith(), '/groups/lobby%E0%A4%A', {})).toEqual({
      path: '/groups/lobby%E0%A4%A',
      rule: null,
      key: 'lobby%E0%A4%A',
      hash: null,
      shard: null,
      shards: 3,
      assignment: 'modulo',
      target: null,
      outcome: 'malformed key (400)',
    });
    expect(await explain(cfgWith(), '/x', { 'x-group-id': '%zz' })).toMatchObject({
      key: '%zz',
      outcome: 'malformed key (400)',
    });
  });

  it('a path longer than router.limits.maxPathBytes: 414', async () => {
    const cfg = cfgWith();
    const limit = cfg.router.limits.maxPathBytes;
    const atLimit = `/groups/${'a'.repeat(limit - '/groups/'.length)}`;
    expect(atLimit.length).toBe(limit);
    expect(await explain(cfg, atLimit, {})).toMatchObject({ outcome: 'forward' });
    expect(await explain(cfg, `${atLimit}b`, {})).toMatchObject({
      outcome: 'path too long (414)',
      key: null,
      shard: null,
      target: null,
    });
    // The query string does not count.
    expect(await explain(cfg, `${atLimit}?${'q'.repeat(100)}`, {})).toMatchObject({ outcome: 'forward' });
  });

  it('the Metaparticle pattern shows the classic mistake', async () => {
    const cfg = cfgWith({ shardSpec: { urlPattern: '\\/users\\/(.*)[^\\/]' } });
    expect(await explain(cfg, '/users/alice', {})).toMatchObject({ key: 'alic', rule: 'urlPattern' });
  });
});

describe('reshardPlan', () => {
  const keys = sampleKeys(20000);

  function sum(flows: Record<string, number>): number {
    return Object.values(flows).reduce((a, b) => a + b, 0);
  }

  it('sampleKeys and keysFromFile', () => {
    expect(sampleKeys(3)).toEqual(['group-0', 'group-1', 'group-2']);
    expect(sampleKeys(0)).toEqual([]);
    const dir = mkdtempSync(path.join(tmpdir(), 'shardchat-cli-test-'));
    try {
      const f = path.join(dir, 'keys.txt');
      writeFileSync(f, 'lobby\r\n  alice  \n\n\ng42\n');
      expect(keysFromFile(f)).toEqual(['lobby', 'alice', 'g42']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('growing 3 -> 4: jump moves about 1/4, all to the new shard 3; modulo about 3/4', async () => {
    const plan = await reshardPlan(3, 4, keys, 'sample');
    expect(plan).toMatchObject({ from: 3, to: 4, keys: 20000, source: 'sample', jumpIdealFraction: 0.25 });
    expect(Math.abs(plan.jump.fraction - 0.25)).toBeLessThan(0.02);
    expect(Math.abs(plan.modulo.fraction - 0.75)).toBeLessThan(0.02);
    expect(plan.jump.fraction).toBe(plan.jump.moved / 20000);
    expect(plan.modulo.fraction).toBe(plan.modulo.moved / 20000);
    const flows = Object.keys(plan.jump.flows);
    expect(flows.length).toBeGreaterThan(0);
    for (const f of flows) expect(f).toMatch(/^[0-2]->3$/);
    expect(sum(plan.jump.flows)).toBe(plan.jump.moved);
    expect(sum(plan.modulo.flows)).toBe(plan.modulo.moved);
    // Modulo moves keys between old shards too.
    expect(Object.keys(plan.modulo.flows).some((f) => !f.endsWith('->3'))).toBe(true);
    for (const f of Object.keys(plan.modulo.flows)) {
      const [a, b] = f.split('->').map(Number);
      expect(a).not.toBe(b);
      expect(a).toBeLessThan(3);
      expect(b).toBeLessThan(4);
    }
  });

  it('counts agree with the assignment functions key by key', async () => {
    const some = keys.slice(0, 500);
    const plan = await reshardPlan(3, 4, some, 'x');
    let jm = 0;
    let md = 0;
    for (const k of some) {
      const h = xxh64(k);
      if (jumpShard(h, 3) !== jumpShard(h, 4)) jm++;
      if (moduloShard(h, 3) !== moduloShard(h, 4)) md++;
    }
    expect(plan.jump.moved).toBe(jm);
    expect(plan.modulo.moved).toBe(md);
  });

  it('growing 3 -> 5: jump moves about 2/5, only to the new shards', async () => {
    const plan = await reshardPlan(3, 5, keys, 'sample');
    expect(plan.jumpIdealFraction).toBeCloseTo(0.4, 10);
    expect(Math.abs(plan.jump.fraction - 0.4)).toBeLessThan(0.02);
    for (const f of Object.keys(plan.jump.flows)) expect(f).toMatch(/^[0-2]->[34]$/);
  });

  it('shrinking 4 -> 3: jump moves only the keys of the removed shard (about 1/4); modulo about 3/4', async () => {
    const plan = await reshardPlan(4, 3, keys, 'sample');
    expect(plan.jumpIdealFraction).toBe(0.25);
    expect(Math.abs(plan.jump.fraction - 0.25)).toBeLessThan(0.02);
    expect(Math.abs(plan.modulo.fraction - 0.75)).toBeLessThan(0.02);
    for (const f of Object.keys(plan.jump.flows)) expect(f).toMatch(/^3->[0-2]$/);
    // Shrinking is the exact reverse of growing.
    const grow = await reshardPlan(3, 4, keys, 'sample');
    expect(plan.jump.moved).toBe(grow.jump.moved);
    expect(plan.modulo.moved).toBe(grow.modulo.moved);
  });

  it('the same S moves nothing; no keys gives zero fractions', async () => {
    const same = await reshardPlan(3, 3, keys.slice(0, 1000), 'sample');
    expect(same.jump).toEqual({ moved: 0, fraction: 0, flows: {} });
    expect(same.modulo).toEqual({ moved: 0, fraction: 0, flows: {} });
    expect(same.jumpIdealFraction).toBe(0);
    const none = await reshardPlan(3, 4, [], 'empty');
    expect(none).toMatchObject({
      keys: 0,
      jump: { moved: 0, fraction: 0 },
      modulo: { moved: 0, fraction: 0 },
    });
  });

  it('growing from 1 shard: jump moves half to shard 1; modulo the same', async () => {
    const plan = await reshardPlan(1, 2, keys, 'sample');
    expect(Math.abs(plan.jump.fraction - 0.5)).toBeLessThan(0.02);
    expect(Object.keys(plan.jump.flows)).toEqual(['0->1']);
    expect(Object.keys(plan.modulo.flows)).toEqual(['0->1']);
  });
});
