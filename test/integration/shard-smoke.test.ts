import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type Cluster, startCluster } from '../helpers/cluster.js';
import { defaultRegistry, useProcessCleanup } from '../helpers/processes.js';

useProcessCleanup();

describe('a cluster of three shards behind the router', () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster(await defaultRegistry.tempDir());
  });
  afterAll(() => defaultRegistry.cleanup());

  it('creates a group, joins, posts and reads back through the router', async () => {
    const alice = await c.token('alice');
    const bob = await c.token('bob');
    expect((await api(c.router.url, 'PUT', '/groups/smoke', alice, { subject: 'Smoke' })).status).toBe(201);
    expect((await api(c.router.url, 'POST', '/groups/smoke/members', bob, { userId: 'bob' })).body).toEqual({
      groupId: 'smoke',
    });
    const posted = await api(c.router.url, 'POST', '/groups/smoke/messages', bob, {
      contents: 'hi',
      clientMsgId: 'm1',
    });
    expect(posted.status).toBe(201);
    expect(posted.body).toMatchObject({ msgId: 1, prevMsgId: 0 });
    const read = await api(c.router.url, 'GET', '/groups/smoke/messages?after=0', alice);
    expect(read.body.messages.map((m: { contents: string }) => m.contents)).toEqual(['hi']);
  });
});
