/**
 * Live resharding (docs/architecture.md section 7) on real processes: a cluster grown
 * from 3 to 4 shards and shrunk back with `shardchat reshard`, under modulo and jump.
 * Everything written before is read back through the router afterwards, identical
 * (epochs, msgIds, members, profiles), from exactly one shard each.
 */
import { afterAll, describe, expect, it, vi } from 'vitest';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';
import { expectContiguous, mapOf, readContent, runReshard, seed, tokensFor } from '../helpers/reshard.js';

useProcessCleanup();
// Each test starts a cluster and migrates it, on 2 cores shared with other suites.
vi.setConfig({ testTimeout: 180_000, hookTimeout: 60_000 });
afterAll(() => defaultRegistry.cleanup());

async function groupsStored(c: Cluster, i: number): Promise<number> {
  const text = await (await fetch(`${c.shards[i]?.adminUrl}/metrics`)).text();
  const m = /^shardchat_shard_groups\{[^}]*\} (\d+)/m.exec(text);
  return Number(m?.[1]);
}

describe.each(['modulo', 'jump'] as const)('shardchat reshard (%s)', (assignment) => {
  let c: Cluster;
  const tokens = new Map<string, string>();
  let groups: string[];
  let users: string[];
  let before: Awaited<ReturnType<typeof readContent>>;
  const asUser = (g: string) => `u${Number(g.slice(1)) % 12}`;

  it('grows 3 to 4 shards: every group and profile moves to its new owner, unchanged', async () => {
    c = await startCluster(await defaultRegistry.tempDir(), {
      shards: 3,
      maxShards: 4,
      config: { shardSpec: { assignment } },
    });
    users = Array.from({ length: 12 }, (_, i) => `u${i}`);
    for (const [u, t] of await tokensFor(c, users)) tokens.set(u, t);
    groups = await seed(c, { groups: 30, messagesPerGroup: 4, users: 12 }, tokens);
    before = await readContent(c, groups, users, tokens, asUser);
    expectContiguous(before);

    await c.startShard(3);
    const r = await runReshard(c, ['--to', '4']);
    expect(r.code, `${r.stderr}\n${r.stdout}\n${r.signal}`).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary).toMatchObject({ migrated: true, to: { shards: 4, assignment } });
    expect(summary.keys.groups).toBeGreaterThan(0);
    expect(r.stderr).toMatch(/switched/);
    for (let i = 0; i < 4; i++) {
      const m = await mapOf(c, i);
      expect(m).toMatchObject({ shards: 4, assignment, version: summary.version });
      expect(m.migration).toBeUndefined();
    }
    const after = await readContent(c, groups, users, tokens, asUser);
    expect(after).toEqual(before);
    // The sources deleted what moved: every group is stored exactly once.
    let stored = 0;
    for (let i = 0; i < 4; i++) stored += await groupsStored(c, i);
    expect(stored).toBe(groups.length);
    expect(await groupsStored(c, 3)).toBeGreaterThan(0);
    // Messages continue after the move: lastMsgId + 1, same epoch.
    const g = groups[0] as string;
    const post = await api(c.router.url, 'POST', `/groups/${g}/messages`, tokens.get(asUser(g)), {
      contents: 'after the move',
      clientMsgId: 'after-move',
    });
    expect(post.status, JSON.stringify(post.body)).toBe(201);
    expect(post.body).toMatchObject({
      msgId: (before.groups[g]?.lastMsgId ?? 0) + 1,
      epoch: before.groups[g]?.epoch,
    });
    // A repeated clientMsgId of a message written before the move is recognised.
    const again = await api(c.router.url, 'POST', `/groups/${g}/messages`, tokens.get(asUser(g)), {
      contents: `${g} message 0`,
      clientMsgId: `${g}-0`,
    });
    expect(again.status).toBe(200);
    expect(again.body.msgId).toBe(1);
    before = await readContent(c, groups, users, tokens, asUser);
  });

  it('says so and changes nothing when the cluster already has that many shards', async () => {
    const r = await runReshard(c, ['--to', '4']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ migrated: false });
  });

  it('--status prints the map of every shard as JSON', async () => {
    const r = await runReshard(c, ['--status']);
    expect(r.code, r.stderr).toBe(0);
    const st = JSON.parse(r.stdout);
    expect(st.map).toMatchObject({ shards: 4, assignment });
    expect(st.shards).toHaveLength(4);
  });

  it('shrinks 4 to 3 shards: shard 3 ends empty, everything else unchanged', async () => {
    const r = await runReshard(c, ['--to', '3']);
    expect(r.code, r.stderr).toBe(0);
    for (let i = 0; i < 4; i++) expect(await mapOf(c, i)).toMatchObject({ shards: 3, assignment });
    expect(await groupsStored(c, 3)).toBe(0);
    const after = await readContent(c, groups, users, tokens, asUser);
    expect(after).toEqual(before);
    let stored = 0;
    for (let i = 0; i < 3; i++) stored += await groupsStored(c, i);
    expect(stored).toBe(groups.length);
  });
});
