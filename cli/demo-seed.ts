/**
 * The demo `shardchat local` seeds on its first start, as the seed tutorial's script
 * does: a few users and a sharded conversation with some messages. `cafe` has a
 * capacity of 4, so the fifth user already sits in `cafe~1` on another shard, and
 * people who enter from the browser land in the sub-conversations.
 *
 * Every call is idempotent (PUT, join, clientMsgId), so a seed cut short by Ctrl-C
 * simply runs again on the next start.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ChatApi, ShardChatError } from '../client/index.js';

export const DEMO_GROUP = 'cafe';
export const DEMO_CAPACITY = 4;

const USERS = [
  { userId: 'alice', name: 'Alice', email: 'alice@example.com' },
  { userId: 'bob', name: 'Bob', email: 'bob@example.com' },
  { userId: 'carol', name: 'Carol', email: 'carol@example.com' },
  { userId: 'dave', name: 'Dave', email: 'dave@example.com' },
  { userId: 'erin', name: 'Erin', email: 'erin@example.com' },
];

const SCRIPT: { userId: string; contents: string }[] = [
  { userId: 'alice', contents: 'Welcome to shardchat! This is the demo conversation, cafe.' },
  { userId: 'bob', contents: 'Its capacity is 4 members, so with Carol and Dave it is full.' },
  {
    userId: 'carol',
    contents:
      'Everyone who joins now is placed in a sub-conversation, cafe~1, cafe~2, … on whichever shard owns it.',
  },
  {
    userId: 'dave',
    contents: 'Every message has a msgId and a prevMsgId, so a client that misses one notices.',
  },
];

const OVERFLOW_SCRIPT = [
  {
    userId: 'erin',
    contents:
      'Hi, I am in cafe~1: the parent was full when I joined. It lives on whichever shard its id hashes to.',
  },
  {
    userId: 'erin',
    contents: 'Open this page in another browser (or a private window) to chat as someone else.',
  },
];

export interface DemoSummary {
  conversations: { groupId: string; shard: number | undefined; members: string[] }[];
}

/** Seeds the demo once per data folder; returns where its conversations live. */
export async function seedDemo(baseUrl: string, dataDir: string, deadlineMs = 60_000): Promise<DemoSummary> {
  const marker = path.join(dataDir, 'demo.json');
  if (existsSync(marker)) return JSON.parse(readFileSync(marker, 'utf8')) as DemoSummary;
  const until = Date.now() + deadlineMs;
  const anon = new ChatApi({ baseUrl });
  const apis = new Map<string, ChatApi>();
  for (const u of USERS) {
    const api = new ChatApi({ baseUrl, token: await retry(() => anon.devToken(u.userId), until) });
    await retry(() => api.putUser(u.userId, { name: u.name, email: u.email }), until);
    apis.set(u.userId, api);
  }
  const as = (userId: string) => apis.get(userId) as ChatApi;
  await retry(
    () =>
      as('alice').putGroup(DEMO_GROUP, {
        subject: 'The shardchat café',
        capacity: DEMO_CAPACITY,
        overflow: 'shard',
      }),
    until,
  );
  const placed = new Map<string, string[]>();
  for (const u of USERS) {
    const conv = await retry(() => as(u.userId).join(DEMO_GROUP, u.userId), until);
    placed.set(conv, [...(placed.get(conv) ?? []), u.userId]);
  }
  const post = async (script: { userId: string; contents: string }[], prefix: string) => {
    for (const [i, line] of script.entries()) {
      const conv = [...placed].find(([, members]) => members.includes(line.userId))?.[0] ?? DEMO_GROUP;
      await retry(() => as(line.userId).post(conv, line.contents, `${prefix}-${i + 1}`), until);
    }
  };
  await post(SCRIPT, 'demo-seed');
  await post(OVERFLOW_SCRIPT, 'demo-seed-overflow');
  const conversations: DemoSummary['conversations'] = [];
  for (const [groupId, members] of placed) {
    const g = await retry(() => as(members[0] as string).getGroup(groupId), until);
    conversations.push({ groupId, shard: g.shard, members });
  }
  const summary = { conversations };
  writeFileSync(marker, `${JSON.stringify(summary, null, 2)}\n`);
  return summary;
}

/** Retries what fails for a reason that passes (shards still starting), until the deadline. */
async function retry<T>(fn: () => Promise<T>, until: number): Promise<T> {
  for (let delay = 100; ; delay = Math.min(delay * 2, 1000)) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof ShardChatError) || !err.retryable || Date.now() + delay > until) throw err;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
