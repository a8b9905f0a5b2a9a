/**
 * Static topology growth (common/topology.ts): `{ordinal+N}` templates, staticEndpoint
 * for ordinals past S, resize() with templates and with an explicit targets list, and the
 * shard map a readiness probe reports; the template checks of common/config.ts.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../../common/config.js';
import {
  expandTemplate,
  mapOfBody,
  type ProbedMap,
  StaticTopology,
  staticEndpoint,
} from '../../../common/topology.js';

function invalid(raw: unknown): string {
  try {
    parseConfig(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('expandTemplate', () => {
  it('{ordinal}, {ordinal+N} and {namespace}', () => {
    expect(expandTemplate('http://s-{ordinal}.{namespace}:8080', 3, 'chat')).toBe('http://s-3.chat:8080');
    expect(expandTemplate('http://127.0.0.1:{ordinal+8081}', 0, 'x')).toBe('http://127.0.0.1:8081');
    expect(expandTemplate('http://127.0.0.1:{ordinal+8081}', 7, 'x')).toBe('http://127.0.0.1:8088');
    expect(expandTemplate('http://h{ordinal}:{ordinal+9000}/{ordinal}', 12, 'x')).toBe('http://h12:9012/12');
    expect(expandTemplate('http://h:{ordinal+0}', 5, 'x')).toBe('http://h:5');
  });
});

describe('template validation (common/config.ts)', () => {
  it('accepts {ordinal+N} as the ordinal of targetTemplate', () => {
    const cfg = parseConfig({
      topology: {
        shards: 2,
        targetTemplate: 'http://127.0.0.1:{ordinal+8081}',
        adminTemplate: 'http://127.0.0.1:{ordinal+9091}',
      },
    });
    expect(staticEndpoint(cfg, 5)).toMatchObject({
      ordinal: 5,
      target: 'http://127.0.0.1:8086',
      port: 8086,
      admin: 'http://127.0.0.1:9096',
    });
  });

  it('refuses unknown or malformed placeholders, and a template without an ordinal', () => {
    expect(invalid({ topology: { targetTemplate: 'http://127.0.0.1:{ordinal-1}' } })).toMatch(
      /topology\.targetTemplate: .*unknown placeholder \{ordinal-1\}/,
    );
    expect(invalid({ topology: { adminTemplate: 'http://127.0.0.1:{ordinal+}' } })).toMatch(
      /topology\.adminTemplate: unknown placeholder \{ordinal\+\}/,
    );
    expect(invalid({ topology: { targetTemplate: 'http://{shard}:8080' } })).toMatch(
      /topology\.targetTemplate: must contain \{ordinal\} \(or \{ordinal\+N\}\)/,
    );
    expect(invalid({ topology: { targetTemplate: 'http://h:{ordinal+70000}' } })).toMatch(
      /N in \{ordinal\+N\} is at most 65535/,
    );
  });
});

describe('StaticTopology.resize', () => {
  it('with templates: new ordinals get an address from the template', () => {
    const cfg = parseConfig({
      topology: { shards: 2, targetTemplate: 'http://127.0.0.1:{ordinal+8081}', adminTemplate: '' },
    });
    const t = new StaticTopology(cfg);
    const grown: number[] = [];
    t.on('grown', (n) => grown.push(n));
    expect(t.shards).toBe(2);
    expect(t.resize(4)).toBe(4);
    expect(t.shards).toBe(4);
    expect(t.states.map((s) => s.port)).toEqual([8081, 8082, 8083, 8084]);
    expect(t.states[3]).toMatchObject({ ordinal: 3, ready: true, admin: undefined });
    // Never shrinks.
    expect(t.resize(3)).toBe(4);
    expect(grown).toEqual([4]);
    expect(t.snapshot()).toMatchObject({ shards: 4, configuredShards: 2 });
  });

  it('with a targets list: no address past its end', () => {
    const cfg = parseConfig({ topology: { targets: ['http://127.0.0.1:1', 'http://127.0.0.1:2'] } });
    const t = new StaticTopology(cfg);
    expect(t.growable).toBe(false);
    expect(t.resize(5)).toBe(2);
    expect(t.shards).toBe(2);
    expect(staticEndpoint(cfg, 2)).toBeUndefined();
  });
});

describe('probes report the shard map', () => {
  let servers: http.Server[] = [];
  let topo: StaticTopology | undefined;
  afterEach(async () => {
    topo?.stop();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    servers = [];
  });

  it('the header and the full map of a /readyz answer come as a map event; new ordinals are probed', async () => {
    const full = { version: 4, shards: 3, assignment: 'jump' };
    const seen: string[] = [];
    const start = async () => {
      const s = http.createServer((req, res) => {
        seen.push(req.url ?? '');
        res.writeHead(200, { 'content-type': 'application/json', 'x-shardchat-map': '4:3:jump' });
        res.end(JSON.stringify({ status: 'ready', map: full }));
      });
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
      servers.push(s);
      return (s.address() as AddressInfo).port;
    };
    const port = await start();
    const cfg = parseConfig({
      topology: {
        shards: 1,
        targetTemplate: 'http://127.0.0.1:{ordinal+1}',
        adminTemplate: `http://127.0.0.1:{ordinal+${port}}`,
        probeIntervalMs: 60_000,
      },
    });
    topo = new StaticTopology(cfg);
    const maps: ProbedMap[] = [];
    topo.on('map', (m) => maps.push(m));
    topo.start();
    await expect.poll(() => maps.length).toBe(1);
    expect(maps[0]).toEqual({ ordinal: 0, header: '4:3:jump', map: full });
    // Ordinal 1 is the next port: nothing listens there, so its probe fails (no map event).
    topo.resize(2);
    await expect.poll(() => topo?.states[1]?.consecutiveFailures).toBe(1);
    expect(maps).toHaveLength(1);
  });

  it('mapOfBody takes only a valid map', () => {
    expect(mapOfBody(undefined)).toBeUndefined();
    expect(mapOfBody('{"status":"ready"}')).toBeUndefined();
    expect(mapOfBody('{"map":{"version":0,"shards":2,"assignment":"modulo"}}')).toBeUndefined();
    expect(mapOfBody('{"map":')).toBeUndefined();
    expect(mapOfBody('{"map":{"version":2,"shards":2,"assignment":"modulo"}}')).toEqual({
      version: 2,
      shards: 2,
      assignment: 'modulo',
    });
  });
});
