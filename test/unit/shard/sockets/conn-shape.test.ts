/**
 * Idle memory per WebSocket: the state the shard keeps for each group and inbox connection
 * must share one hidden class in V8. Built as an object spread with added fields
 * (`{ ...base, userId }`), every connection past the first few got a map and descriptor
 * array of its own (about 0.6 KB per idle connection in a heap snapshot of 4,000 inbox
 * sockets); as instances of one class they share it. `%HaveSameMap` is V8's own test.
 */

import type { Duplex } from 'node:stream';
import v8 from 'node:v8';
import { describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { parseConfig } from '../../../../common/config.js';
import { GroupConn } from '../../../../shard/sockets/group-hub.js';
import { InboxConn } from '../../../../shard/sockets/inbox-hub.js';
import { readClientEvent } from '../../../../shard/sockets/ws-conn.js';

v8.setFlagsFromString('--allow-natives-syntax');
const haveSameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;

const limits = parseConfig({}).shard.limits;
const ws = { readyState: 1, OPEN: 1 } as unknown as WebSocket;
const socket = {} as Duplex;

/** Builds n connections and checks that each has the hidden class of the last one. */
function allShareOneMap<C extends object>(n: number, make: (i: number) => C, use?: (c: C) => void): number {
  const conns = Array.from({ length: n }, (_, i) => make(i));
  if (use) for (const c of conns) use(c);
  const last = conns[n - 1] as C;
  return conns.filter((c) => !haveSameMap(c, last)).length;
}

describe('per-connection state', () => {
  it('one hidden class for every inbox connection', () => {
    expect(allShareOneMap(200, (i) => new InboxConn(ws, socket, limits, `user-${i}`))).toBe(0);
  });

  it('one hidden class for every group connection', () => {
    expect(allShareOneMap(200, (i) => new GroupConn(ws, socket, limits, `g${i % 7}`, `user-${i}`))).toBe(0);
  });

  it('still one after the rate budget is spent (tokens become fractional)', () => {
    const frame = Buffer.from('{"type":"ping"}');
    const spend = (c: InboxConn) => {
      c.refilledAt -= 333;
      readClientEvent(c, frame, false, limits, () => {});
    };
    expect(allShareOneMap(200, (i) => new InboxConn(ws, socket, limits, `user-${i}`), spend)).toBe(0);
  });
});
