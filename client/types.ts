/** The shapes of the shardchat public API (docs/architecture.md section 4) as the SDK sees them. */
import type { DeliveryMode, Message } from '../common/protocol.js';

/** A stored message, and how a group's messages reach its clients (pushed, or ticks and reads). */
export type { DeliveryMode, ErrorBody, Message } from '../common/protocol.js';

export interface Ack {
  msgId: number;
  prevMsgId: number;
  epoch: string;
  ts: number;
}

export interface User {
  userId: string;
  name: string;
  email?: string;
  photoUrl: string | null;
  createdAt?: number;
  updatedAt?: number;
}

/** Pull mode: the group's head; a client behind it reads ?after= its last msgId. */
export interface TickEvent {
  type: 'tick';
  groupId: string;
  epoch: string;
  lastMsgId: number;
  /** The group's mode from now on (a switch is announced by a tick). */
  mode?: DeliveryMode;
}

export interface Group {
  groupId: string;
  subject: string;
  owner: string;
  memberCount: number;
  capacity: number;
  overflow: 'reject' | 'shard';
  closed: boolean;
  parent: string | null;
  epoch: string;
  lastMsgId: number;
  mode: DeliveryMode;
}

export interface PresenceEntry {
  userId: string;
  connections: number;
}

/** The events a group WebSocket sends. */
export type ServerEvent =
  | {
      type: 'hello';
      groupId: string;
      userId: string;
      epoch: string;
      lastMsgId: number;
      mode: DeliveryMode;
      shard?: number;
    }
  | ({ type: 'message' } & Message)
  | TickEvent
  | { type: 'typing'; groupId: string; userId: string }
  | { type: 'presence'; groupId: string; userId: string; status: 'online' | 'offline' }
  | ({ type: 'ack'; clientMsgId: string } & Ack)
  | { type: 'error'; code: string; message: string; clientMsgId?: string };

/** A WebSocket as browsers, Node 22+ and the `ws` package all provide it. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open', fn: () => void): void;
  addEventListener(type: 'message', fn: (ev: { data: unknown }) => void): void;
  addEventListener(type: 'close', fn: (ev: { code: number; reason: string }) => void): void;
  addEventListener(type: 'error', fn: (ev: unknown) => void): void;
}

export type WebSocketFactory = new (url: string) => WebSocketLike;
