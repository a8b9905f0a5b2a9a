/** The shardchat client SDK for browsers and Node: the HTTP API and reliable group connections. */

export { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from '../common/backoff.js';
export { type ApiOptions, ChatApi, type Served, type TokenSource } from './api.js';
export { ShardChatError } from './errors.js';
export {
  type ConnectionState,
  GroupConnection,
  type GroupConnectionOptions,
  type GroupEvents,
  type Outgoing,
  type OutgoingState,
} from './group-connection.js';
export { GroupSequencer, type SequencerHooks, type SequencerOptions } from './group-sequencer.js';
export { randomId } from './ids.js';
export {
  InboxConnection,
  type InboxConnectionOptions,
  type InboxEvents,
  type InboxMode,
  type InboxStatus,
} from './inbox-connection.js';
export { Outbox, type OutboxOptions } from './outbox.js';
export type * from './types.js';
