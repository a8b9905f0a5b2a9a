/**
 * Presence on the group's shard (shard/delivery/presence.ts): group WebSocket users and
 * users reported by their session hosts; a user's effective status, every change of it
 * announced once, reports expiring without a refresh, stale offlines from another host
 * ignored.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GroupPresence } from '../../../../shard/delivery/presence.js';

let now: number;
let sockets: Map<string, number>; // `${group} ${user}` -> connections
let changes: string[];
let p: GroupPresence;

beforeEach(() => {
  now = 1_000_000;
  sockets = new Map();
  changes = [];
  p = new GroupPresence({
    local: (g) =>
      [...sockets]
        .filter(([k]) => k.startsWith(`${g} `))
        .map(([k, n]) => ({ userId: k.split(' ')[1] as string, connections: n })),
    isConnected: (g, u) => (sockets.get(`${g} ${u}`) ?? 0) > 0,
    changed: (g, u, s) => changes.push(`${g} ${u} ${s}`),
    ttlMs: 90_000,
    sweepMs: 3_600_000,
    now: () => now,
  });
});
afterEach(() => p.stop());

const connect = (g: string, u: string) => {
  sockets.set(`${g} ${u}`, (sockets.get(`${g} ${u}`) ?? 0) + 1);
  p.localChanged(g, u, true);
};
const disconnect = (g: string, u: string) => {
  sockets.delete(`${g} ${u}`);
  p.localChanged(g, u, false);
};

describe('GroupPresence', () => {
  it('announces each change of the effective status once: socket and inbox together', () => {
    p.report('g', 'ann', 'away', 1);
    expect(p.statusOf('g', 'ann')).toBe('away');
    connect('g', 'ann'); // a socket makes her online
    p.report('g', 'ann', 'away', 1); // still online through the socket: nothing to announce
    disconnect('g', 'ann'); // back to what the inbox says
    p.report('g', 'ann', 'offline', 1);
    expect(changes).toEqual(['g ann away', 'g ann online', 'g ann away', 'g ann offline']);
  });

  it('lists socket users with their connections and inbox users with theirs at 0', () => {
    connect('g', 'bob');
    connect('g', 'bob');
    p.report('g', 'cid', 'online', 2);
    p.report('g', 'bob', 'away', 2);
    expect(p.list('g')).toEqual([
      { userId: 'bob', connections: 2, status: 'online' },
      { userId: 'cid', connections: 0, status: 'online' },
    ]);
    expect(p.list('other')).toEqual([]);
  });

  it('lets a report expire without a refresh (the user goes offline unless connected here)', () => {
    p.report('g', 'ann', 'online', 1);
    p.report('g', 'bob', 'online', 1);
    connect('g', 'bob');
    now += 89_999;
    p.sweep();
    expect(p.statusOf('g', 'ann')).toBe('online');
    now += 2;
    p.sweep();
    expect(p.statusOf('g', 'ann')).toBe('offline');
    expect(p.statusOf('g', 'bob')).toBe('online');
    expect(changes).toEqual(['g ann online', 'g bob online', 'g ann offline']);
  });

  it('ignores an offline from another host than the one that reported online (the user moved)', () => {
    p.report('g', 'ann', 'online', 2);
    p.report('g', 'ann', 'offline', 1);
    expect(p.statusOf('g', 'ann')).toBe('online');
    p.report('g', 'ann', 'offline', 2);
    expect(p.statusOf('g', 'ann')).toBe('offline');
  });

  it('forgets what a host reported of a member who left', () => {
    p.report('g', 'ann', 'online', 0);
    p.removed('g', 'ann');
    p.removed('g', 'ann');
    expect(p.list('g')).toEqual([]);
    expect(changes).toEqual(['g ann online', 'g ann offline']);
  });
});
