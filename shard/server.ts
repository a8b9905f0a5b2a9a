/**
 * The chat shard process, composed: the parts of each room built, their events wired,
 * the public port (chat API and WebSockets) and the admin port (metrics, health,
 * /internal/*) listening. How a message flows: docs/architecture.md (the picture).
 */
import type { Config } from '../common/config.js';
import { shardCount } from '../common/config.js';
import { initHash } from '../common/hash.js';
import type { KubernetesTopology } from '../common/kubernetes-topology.js';
import { listen } from '../common/listen.js';
import type { Logger } from '../common/logger.js';
import { checkOpenFiles } from '../common/open-files.js';
import { configuredMap, shardsNeeded } from '../common/placement.js';
import { INTERNAL_TOKEN_HEADER } from '../common/protocol.js';
import { createShardAdmin } from './api/admin.js';
import { Authenticator } from './api/auth.js';
import { internalHandler } from './api/internal.js';
import { createApi } from './api/public.js';
import { createPublicServer } from './api/public-server.js';
import { reshardRoutes } from './api/reshard-routes.js';
import { GroupCalls } from './cluster/group-calls.js';
import { InternalClient, staticAdminOf } from './cluster/internal-client.js';
import { askPeers, bootstrapMap } from './cluster/map-bootstrap.js';
import { Membership } from './cluster/membership.js';
import { Ownership, resolveOrdinal } from './cluster/ownership.js';
import { registerReshardMetrics } from './cluster/reshard-metrics.js';
import { Resharding } from './cluster/resharding.js';
import { UserIndexSync } from './cluster/user-index.js';
import { Delivery } from './delivery/delivery.js';
import { DeliveryModes } from './delivery/modes.js';
import { MessageIntake } from './messages/intake.js';
import { UserRateLimiter } from './messages/user-rate.js';
import { ShardMetrics } from './metrics.js';
import { gathering } from './sockets/gathering.js';
import { GroupHub } from './sockets/group-hub.js';
import { InboxHub } from './sockets/inbox-hub.js';
import { Store } from './storage/store.js';

export interface RunningShard {
  ordinal: number;
  port: number;
  adminPort: number;
  stop(): Promise<void>;
}

export interface ShardSecrets {
  authSecret: string | undefined;
  internalToken: string | undefined;
}

export async function startShard(cfg: Config, log: Logger, secrets: ShardSecrets): Promise<RunningShard> {
  await initHash();
  if (!secrets.authSecret) throw new Error('SHARDCHAT_AUTH_SECRET is not set: the shard cannot check tokens');
  if (!secrets.internalToken)
    throw new Error('SHARDCHAT_INTERNAL_TOKEN is not set: shards cannot call each other');
  const auth = new Authenticator({
    secret: secrets.authSecret,
    issuer: cfg.auth.issuer,
    audience: cfg.auth.audience,
  });
  const place = await joinCluster(cfg, log, secrets.internalToken);
  const parts = buildParts(cfg, log, auth, place);
  wireEvents(parts);
  return serve(cfg, log, parts);
}

/** The shard's place in the cluster: its store, the shard map it serves by, its peers. */
interface Place {
  ordinal: number;
  internalToken: string;
  store: Store;
  metrics: ShardMetrics;
  topology: KubernetesTopology | undefined;
  own: Ownership;
  internal: InternalClient;
  /** Where the map came from (stored, peers, configuration). */
  mapFrom: string;
}

/** Opens the store and takes the shard map: its own, else its peers', else the configuration's. */
async function joinCluster(cfg: Config, log: Logger, internalToken: string): Promise<Place> {
  const ordinal = resolveOrdinal(cfg);
  const store = new Store(
    cfg.shard.dataDir,
    ordinal,
    cfg.shard.commit.maxBatch,
    cfg.shard.commit.checkpointEveryMs,
  );
  store.on('checkpoint-failed', (e) =>
    log.warn(
      { err: e.message, code: e.code, db: store.file },
      'WAL checkpoints are failing (told once until they succeed again): commits checkpoint by themselves once the WAL is past 64 MiB',
    ),
  );
  store.on('checkpoint-recovered', (failures) =>
    log.info({ failures, db: store.file }, 'WAL checkpoints succeed again'),
  );
  if (store.readOnly)
    log.warn(
      { db: store.file },
      'the data volume is read-only: serving reads, refusing writes (503 storage_readonly) until it is writable and the shard restarted',
    );
  const metrics = new ShardMetrics(ordinal, store);
  const topology = await shardTopology(cfg, log, metrics);
  const adminOf = topology ? (o: number) => topology.adminOf(o) : staticAdminOf(cfg, log);
  const peers = Array.from({ length: shardCount(cfg) + 1 }, (_, i) => i).filter((i) => i !== ordinal);
  const { map, source } = await bootstrapMap(cfg, store, log, async () => {
    // In kubernetes mode the peers' addresses are their pods' IPs, unknown until the pods
    // are listed: a new pod that asked before would find nobody and take the
    // configuration's map instead of the cluster's.
    if (topology && !(await topology.whenSynced(PEERS_SYNC_WAIT_MS)))
      log.warn('the pods are not listed yet: the shard map cannot be asked of the other shards');
    return askPeers(peers.map(adminOf), internalToken, INTERNAL_TOKEN_HEADER, cfg.shard.internal.timeoutMs)();
  });
  const own = new Ownership(map, ordinal, cfg.shard.reshard.holdMs);
  if (topology) {
    // The pods of every ordinal the map needs are addressed, as the router does: after
    // growing 3 to 4, internal calls to shard 3 (fan-out, sub-conversations) need its IP.
    topology.resize(shardsNeeded(map));
    own.on('map', (m) => topology.resize(shardsNeeded(m)));
  }
  if (ordinal >= shardsNeeded(map))
    log.warn(
      { shard: ordinal, shards: map.shards, version: map.version },
      'this shard is not in the shard map yet: it owns nothing until shardchat reshard moves keys here',
    );
  const internal = new InternalClient(cfg, own, internalToken, log, topology);
  return { ordinal, internalToken, store, metrics, topology, own, internal, mapFrom: source };
}

type Parts = ReturnType<typeof buildParts>;

/** The rooms: message intake, sockets, delivery, membership, resharding. */
function buildParts(cfg: Config, log: Logger, auth: Authenticator, place: Place) {
  const { store, metrics, own, internal } = place;
  const limits = cfg.shard.limits;
  const rate = new UserRateLimiter({
    perSecond: limits.userMessagesPerSecond,
    burst: limits.userMessageBurst,
    maxUsers: limits.userRateMaxUsers,
  });
  const intake = new MessageIntake({ cfg, store, own, internal, rate, metrics });
  const modes = new DeliveryModes({ pull: cfg.shard.delivery.pull });
  const groups = new GroupHub({
    cfg,
    log,
    store,
    auth,
    own,
    metrics,
    intake,
    modeOf: (g) => modes.modeOf(g),
  });
  // An inbox's typing and presence go to the group's shard: delivery, here or there.
  const groupCalls = new GroupCalls({
    own,
    store,
    internal,
    typing: (g, u) => delivery.typing(g, u),
    presence: (g, u, status, host) => delivery.presence.report(g, u, status, host),
  });
  const inboxes = new InboxHub({
    cfg,
    log,
    auth,
    own,
    metrics,
    intake,
    groupCalls,
    otherConnections: () => groups.connections,
  });
  const delivery = new Delivery({ cfg, log, store, own, internal, metrics, modes, groups, inboxes });
  gathering.windowMs = cfg.shard.fanout.flushMs;
  const membership = new Membership({ cfg, log, store, own, internal });
  const userIndex = new UserIndexSync({ store, own, internal, log, retry: cfg.shard.fanout.retry });
  const resharding = new Resharding(
    store,
    own,
    log,
    () => groups.closeMoved((g) => own.owns(g)) + inboxes.closeMoved((u) => own.owns(u)),
  );
  registerReshardMetrics(metrics.registry, own, resharding, configuredMap(cfg));
  return { ...place, auth, intake, modes, groups, inboxes, delivery, membership, resharding, userIndex };
}

/** Who follows whom: the store's and the map's events, and the sockets' typing and presence. */
function wireEvents(p: Parts): void {
  const { store, metrics, own, delivery, groups, inboxes, userIndex } = p;
  store.on('committed', (messages, seconds) => metrics.committed(messages.length, seconds));
  store.on('committed', (messages) => delivery.committed(messages));
  store.on('members-changed', (groupId) => delivery.members.invalidate(groupId));
  store.on('replaced', (groupId) => delivery.replaced(groupId));
  // A new map can move users: their session hosts, cached by group, are computed again,
  // and recently active groups get heads at the new hosts (and the groups moved here too).
  own.on('map', () => {
    delivery.members.invalidateAll();
    delivery.resumeHeads();
  });
  // A killed shard's fan-out queues died with it: recently active groups get heads.
  delivery.resumeHeads();
  // A member who leaves (or is removed) stops receiving on the sockets already open.
  store.on('member-removed', (groupId, userId) => {
    groups.kick(groupId, userId);
    delivery.presence.removed(groupId, userId);
  });
  // Joins and leaves go to the users' shards (queued with the membership, sent from there),
  // and a user's shard tells the user's inbox connections.
  userIndex.start();
  own.on('map', () => userIndex.kick());
  store.on('user-groups-changed', (c) =>
    inboxes.deliver([c.userId], { type: c.member ? 'joined' : 'left', groupId: c.groupId }),
  );
  groups.on('typing', (groupId, userId) => delivery.typing(groupId, userId));
  groups.on('presence', (groupId, userId, on) => delivery.presence.localChanged(groupId, userId, on));
}

/** The public port (chat API, WebSockets) and the admin port (metrics, health, /internal/*). */
async function serve(cfg: Config, log: Logger, p: Parts): Promise<RunningShard> {
  const { store, metrics, topology, own, auth, intake, modes, groups, inboxes, delivery, membership } = p;
  const api = createApi({
    cfg,
    log,
    store,
    auth,
    own,
    intake,
    waiters: delivery.waiters,
    presence: (groupId) => delivery.presence.list(groupId),
    join: (g, userId) => membership.join(g, userId),
    leave: (g, userId) => membership.leave(g, userId),
    modeOf: (groupId) => modes.modeOf(groupId),
    messagesAfter: (groupId, after, limit) => delivery.history.after(groupId, after, limit),
  });
  const server = createPublicServer({ cfg, log, api, groups, inboxes });
  let draining = false;
  const admin = createShardAdmin({
    own,
    configured: configuredMap(cfg),
    store,
    metrics,
    topology,
    internalToken: p.internalToken,
    internal: internalHandler({
      cfg,
      log,
      store,
      own,
      intake,
      delivery: delivery.internalRoutes(),
      reshard: reshardRoutes(p.resharding),
    }),
    draining: () => draining,
  });
  const port = await listen(server, cfg.shard.port, cfg.shard.host);
  const adminPort = await admin.listen(cfg.shard.adminPort, cfg.shard.host);
  log.info(
    {
      shard: own.ordinal,
      shards: own.shards,
      map: own.map.version,
      mapFrom: p.mapFrom,
      port,
      adminPort,
      db: store.file,
    },
    'shard listening',
  );
  // One descriptor per WebSocket, plus the HTTP connections of two routers' pools
  // (router.limits.maxSocketsPerShard, as configured here) and the database's files.
  checkOpenFiles(log, {
    needed: cfg.shard.limits.maxConnections + 2 * cfg.router.limits.maxSocketsPerShard + 16,
    setting: 'shard.limits.maxConnections',
    value: cfg.shard.limits.maxConnections,
  });

  return {
    ordinal: own.ordinal,
    port,
    adminPort,
    async stop() {
      draining = true;
      groups.close();
      inboxes.close();
      delivery.stop();
      p.userIndex.stop();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), cfg.router.timeouts.shutdownMs).unref();
      });
      await admin.close();
      await topology?.stop();
      // Flushes queued notifications (bounded by notifications.timeoutMs) while the store is open.
      await delivery.notifier.stop();
      await store.close();
    },
  };
}

/** How long a new shard waits for the pods to be listed before it asks its peers for the map. */
const PEERS_SYNC_WAIT_MS = 10_000;

/** Kubernetes mode: the other shards' admin addresses come from their pods (loaded only then). */
async function shardTopology(
  cfg: Config,
  log: Logger,
  metrics: ShardMetrics,
): Promise<KubernetesTopology | undefined> {
  if (cfg.topology.mode !== 'kubernetes') return undefined;
  const { KubernetesTopology } = await import('../common/kubernetes-topology.js');
  const topology = new KubernetesTopology(cfg, log);
  topology.on('status', (st) => metrics.setTopologyStatus(st));
  metrics.setTopologyStatus(topology.status());
  topology.start();
  return topology;
}
