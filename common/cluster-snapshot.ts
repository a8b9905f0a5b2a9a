/**
 * What the router's cluster view answers at `/cluster.json` (router/cluster-view.ts), as
 * the page (web/cluster/app.ts) reads it: plain types, shared by both.
 */
export interface ShardRow {
  ordinal: number;
  /** The shard's public address. */
  address: string;
  ready: boolean;
  /** Why it is not ready, as the router last saw it. */
  reason: string | null;
  /** Read from the shard's /metrics; null when it could not be read (`error` says why). */
  mapVersion: number | null;
  groups: number | null;
  members: number | null;
  connections: number | null;
  messagesPerSecond: number | null;
  dbBytes: number | null;
  /** The migration state this shard stores, or null when none runs. */
  reshardPhase: string | null;
  /** Groups and users this shard imported and exported since it started. */
  keysImported: number | null;
  keysExported: number | null;
  /** This router's traffic to the shard. */
  requestsPerSecond: number | null;
  errorsPerSecond: number | null;
  websockets: number;
  error: string | null;
}

export interface ClusterSnapshot {
  at: string;
  map: {
    version: number;
    shards: number;
    assignment: string;
    migration?: {
      from: { shards: number; assignment: string };
      to: { shards: number; assignment: string };
      state: string;
      startedAt: number;
    };
  };
  mode: 'static' | 'kubernetes';
  router: { requestsPerSecond: number | null; errorsPerSecond: number | null; websockets: number };
  shards: ShardRow[];
}
