/**
 * The shard map as the router knows it (common/placement.ts), and what a 421 with a map
 * makes of a request.
 *
 * The router starts from its configuration as map version 0, so that any map a shard
 * serves by (version 1 and up) wins. It learns newer maps from the `x-shardchat-map`
 * header on shard answers (forwarded requests, upgrade answers) and on readiness probes,
 * whose JSON body also carries the full map (with its migration). On the hot path the
 * header is compared with the last value seen and parsed only when it differs.
 *
 * A 421 guarantees the shard wrote nothing. When it carries a map at least as new as the
 * router's (adopted first when newer) under which the key has another owner, the request
 * goes again, unchanged, to that owner: at most MAX_HOPS times, and only for requests
 * kept for it (a Redispatch: a key hash, a body within router.limits.retryBodyBytes).
 */
import type { ShardMap } from '../common/placement.js';
import { ownerUnder, Placement, parseMapHeader } from '../common/placement.js';
import type { ProbedMap } from '../common/topology.js';
import type { ParsedRequest } from './request-parser.js';

/** Re-dispatches of one request after 421s, at most; the 421 after the last passes to the client. */
export const MAX_HOPS = 3;

/** What the router keeps of a request so that a 421 can send it again elsewhere. */
export interface Redispatch {
  readonly req: ParsedRequest;
  readonly body: Buffer | undefined;
  /** The XXH64 hash of the request's key. */
  readonly hash: bigint;
  /** The x-request-id the first attempt carried: every attempt carries the same. */
  readonly requestId: string;
  /** Re-dispatches so far. */
  hops: number;
}

/** How the router reads the shard maps its shards' answers carry. */
export interface MapReader {
  /** A shard answer's x-shardchat-map value (called only when present). */
  mapSeen(value: string): void;
  /** A 421 with a map: the shard to send the request to instead, or undefined (the 421 passes). */
  misdirectedWithMap(shard: number, map: string, redispatch: Redispatch | undefined): number | undefined;
}

/**
 * What to do with an answer's head as far as the map goes: `misdirected` (a 421 without
 * a map: the router answers it), a shard to send the request to instead, or `relay`.
 */
export function answerRoute(
  reader: MapReader,
  shard: number,
  statusCode: number,
  map: string | undefined,
  retry: Redispatch | undefined,
): 'misdirected' | 'relay' | number {
  if (statusCode === 421) {
    if (map === undefined) return 'misdirected';
    return reader.misdirectedWithMap(shard, map, retry) ?? 'relay';
  }
  if (map !== undefined) reader.mapSeen(map);
  return 'relay';
}

/**
 * What one exchange (a request or an upgrade) does with its answer as far as the map goes,
 * decided on the answer's head: relay it, send the request again to another shard once
 * the answer is read (`rerouteTo`), or answer a 421 without a map itself (`misdirected`).
 */
export class AnswerDecision {
  misdirected = false;
  rerouteTo: number | undefined;

  /** Decides on the answer's head; true when it goes to the client. */
  relays(
    reader: MapReader,
    shard: number,
    head: { statusCode: number; map?: string | undefined },
    retry: Redispatch | undefined,
  ): boolean {
    const route = answerRoute(reader, shard, head.statusCode, head.map, retry);
    if (route === 'misdirected') this.misdirected = true;
    else if (route !== 'relay') this.rerouteTo = route;
    return route === 'relay';
  }

  /** Nothing of the answer goes to the client. */
  get withheld(): boolean {
    return this.misdirected || this.rerouteTo !== undefined;
  }
}

/** The map's owner layout and version, and the migration when a probe reported one for that version. */
export type MapView = Pick<ShardMap, 'version' | 'shards' | 'assignment' | 'migration'>;

export class RouterShardMap {
  private current: Placement;
  /** The last x-shardchat-map value seen: an equal one needs no parsing. */
  private lastHeader: string | undefined;
  /** The newest full map seen in a probe's /readyz body. */
  private probed: ShardMap | undefined;

  constructor(
    initial: ShardMap,
    /** A newer map was adopted (or the same version with the migration a header does not carry). */
    private readonly onAdopt: (map: Readonly<ShardMap>, previous: Readonly<ShardMap>) => void,
  ) {
    this.current = new Placement(initial);
  }

  get placement(): Placement {
    return this.current;
  }

  get version(): number {
    return this.current.map.version;
  }

  /** The map as the admin port shows it. */
  view(): MapView {
    const m = this.current.map;
    const out: MapView = { version: m.version, shards: m.shards, assignment: m.assignment };
    const migration = m.migration ?? (this.probed?.version === m.version ? this.probed.migration : undefined);
    if (migration) out.migration = migration;
    return out;
  }

  /** A shard's x-shardchat-map header value: adopts the map when it is newer. */
  seen(header: string): void {
    if (header === this.lastHeader) return;
    this.lastHeader = header;
    const layout = parseMapHeader(header);
    if (!layout || layout.version <= this.current.map.version) return;
    // The header carries no migration: a probe's full map of the same version has it.
    const full = this.probed?.version === layout.version ? this.probed : undefined;
    this.adopt(full ?? { version: layout.version, shards: layout.shards, assignment: layout.assignment });
  }

  /** What a readiness probe's answer said about the map. */
  probedMap(p: ProbedMap): void {
    const map = p.map;
    if (map && map.version >= (this.probed?.version ?? 0)) this.probed = map;
    const current = this.current.map;
    if (map && map.version > current.version) this.adopt(map);
    else if (map && map.version === current.version && map.migration && !current.migration) {
      // The map adopted from a header, now with its migration: the same owners, more shards to address.
      this.adopt(map);
    } else if (p.header !== undefined) this.seen(p.header);
  }

  /**
   * A 421 from shard `answered` with a map header: the owner to send the request to
   * instead, or undefined when it goes to the client as it is (no map, a map older than
   * the router's, the same owner, or no re-dispatch left).
   */
  redirect(answered: number, header: string, r: Redispatch | undefined): number | undefined {
    this.seen(header);
    if (!r || r.hops >= MAX_HOPS) return undefined;
    const layout = parseMapHeader(header);
    if (!layout || layout.version < this.current.map.version) return undefined;
    const owner = ownerUnder(layout, r.hash);
    return owner === answered ? undefined : owner;
  }

  private adopt(map: ShardMap): void {
    const previous = this.current.map;
    this.current = new Placement(map);
    this.onAdopt(this.current.map, previous);
  }
}
