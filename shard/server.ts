/**
 * The chat shard process: the public API and group WebSockets on `shard.port`, and the
 * admin port with /metrics, /healthz, /readyz (and the shard-to-shard /internal/*
 * calls, guarded by SHARDCHAT_INTERNAL_TOKEN).
 */

import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Request, Response } from 'express';
import { type Config, forwardedHeadLimit } from '../common/config.js';
import { initHash } from '../common/hash.js';
import { sendJson } from '../common/http-json.js';
import type { Logger } from '../common/logger.js';
import type { Topology } from '../common/topology.js';
import { createApi } from './api.js';
import { Authenticator } from './auth.js';
import { DeliveryModes } from './delivery-mode.js';
import { DeliverySequencer } from './delivery-sequencer.js';
import { ApiError, finalHandler } from './errors.js';
import { BatchRejected, Fanout, MemberCache } from './fanout.js';
import { GroupHub } from './hub.js';
import { InboxHub } from './inbox.js';
import { type DeliveryHandlers, handleInternal, InternalCallError, InternalClient } from './internal.js';
import { Membership } from './membership.js';
import { ShardMetrics } from './metrics.js';
import { Notifier } from './notifier.js';
import { Ownership, resolveOrdinal } from './ownership.js';
import { GroupPresence } from './presence.js';
import { RecentMessages } from './recent.js';
import { type Message, Store } from './store.js';
import { UserRateLimiter } from './user-rate.js';
import { GroupWaiters } from './waiters.js';
import { gathering } from './ws-conn.js';

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

function listen(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * `clientError` on the shard's servers: a request Node's HTTP parser refuses (a method it
 * does not know such as `get` or `FOO`, a malformed head, a head too large, a timeout)
 * gets a JSON error like every other answer, instead of Node's bare `400 Bad Request`,
 * then the connection is closed.
 */
export function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  // Nothing can be written on a reset or closed socket, nor after an answer began.
  const pending = (socket as Duplex & { _httpMessage?: http.ServerResponse })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || pending?.headersSent) {
    socket.destroy();
    return;
  }
  let status = 400;
  let code = 'bad_request';
  let message = `the request is not valid HTTP/1.1 (${err.code ?? err.message})`;
  switch (err.code) {
    case 'HPE_INVALID_METHOD':
      code = 'bad_method';
      message = 'unknown request method (methods are upper case: GET, PUT, POST, DELETE, ...)';
      break;
    case 'HPE_HEADER_OVERFLOW':
      status = 431;
      code = 'headers_too_large';
      message = 'the request head is too large';
      break;
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      status = 413;
      code = 'body_too_large';
      message = 'the chunk extensions are too large';
      break;
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'ERR_HTTP_HEADERS_TIMEOUT':
      status = 408;
      code = 'request_timeout';
      message = 'the request did not arrive in time';
      break;
  }
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
  );
  // A client that never closes its side does not keep the socket.
  const timer = setTimeout(() => socket.destroy(), 2000);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** Constant-time comparison of the internal token. */
export function tokenMatches(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function startShard(cfg: Config, log: Logger, secrets: ShardSecrets): Promise<RunningShard> {
  await initHash();
  if (!secrets.authSecret) throw new Error('SHARDCHAT_AUTH_SECRET is not set: the shard cannot check tokens');
  if (!secrets.internalToken)
    throw new Error('SHARDCHAT_INTERNAL_TOKEN is not set: shards cannot call each other');
  const internalToken = secrets.internalToken;
  const ordinal = resolveOrdinal(cfg);
  const own = new Ownership(cfg, ordinal);
  const auth = new Authenticator({
    secret: secrets.authSecret,
    issuer: cfg.auth.issuer,
    audience: cfg.auth.audience,
  });
  const store = new Store(cfg.shard.dataDir, ordinal, cfg.shard.commit.maxBatch);
  if (store.readOnly)
    log.warn(
      { db: store.file },
      'the data volume is read-only: serving reads, refusing writes (503 storage_readonly) until it is writable and the shard restarted',
    );
  const metrics = new ShardMetrics(ordinal, store);
  // Kubernetes mode: the other shards' admin addresses come from their pods (loaded only then).
  let topology: Topology | undefined;
  if (cfg.topology.mode === 'kubernetes') {
    const { KubernetesTopology } = await import('../common/kubernetes-topology.js');
    topology = new KubernetesTopology(cfg, log);
    topology.on('status', (st) => metrics.setTopologyStatus(st));
    metrics.setTopologyStatus(topology.status());
    topology.start();
  }
  const waiters = new GroupWaiters(cfg.shard.limits.maxConnections, (n) => metrics.longPollWaiters.set(n));
  const internal = new InternalClient(cfg, own, internalToken, log, topology);
  const membership = new Membership({ cfg, log, store, own, internal });

  // --- cross-shard delivery (docs/delivery-protocol.md) ---
  const members = new MemberCache(store, own, cfg.shard.limits.maxCapacity);
  store.onMembersChanged = (groupId) => members.invalidate(groupId);
  // Recent history in memory (docs/delivery-protocol.md section 7): ?after= reads of a recent range.
  const recent = new RecentMessages(
    cfg.shard.delivery.recent.messagesPerGroup,
    cfg.shard.delivery.recent.maxBytes,
  );
  const messagesAfter = (groupId: string, after: number, limit: number): Message[] => {
    const hit = recent.after(groupId, after, limit);
    metrics.historyReads.inc({ source: hit ? 'memory' : 'store' });
    return hit ?? store.messagesAfter(groupId, after, limit);
  };
  /** Of these members, those with a live WebSocket to the group on this shard (the hub). */
  const liveOf = (groupId: string, userIds: string[]): string[] =>
    hubRef ? userIds.filter((u) => hubRef?.isConnected(groupId, u)) : [];
  // Offline notifications go out from here, each user's session host (shard/notifier.ts).
  const notifier = new Notifier({ cfg, log, metrics });
  // The inbox hub is created below; the sequencer delivers to it.
  let inbox: InboxHub | undefined;
  const sequencer = new DeliverySequencer({
    fetch: async (groupId, after, limit) => {
      const owner = own.ownerOf(groupId);
      if (owner === ordinal) {
        const recipients = members.on(groupId, ordinal);
        return {
          messages: messagesAfter(groupId, after, limit),
          recipients,
          live: liveOf(groupId, recipients),
        };
      }
      const page = await internal.messagesAfter(owner, groupId, after, limit, ordinal);
      return { messages: page.messages, recipients: page.recipients ?? [], live: page.live };
    },
    deliver: (recipients, event, live) => {
      if (event.type === 'message' && typeof event.ts === 'number')
        metrics.deliveryLag.observe(Math.max(0, Date.now() - event.ts) / 1000);
      inbox?.deliver(recipients, event);
      if (event.type === 'message' && notifier.enabled) {
        // Offline: no inbox connection here, no group WebSocket on the group's shard, not the author.
        const m = event as unknown as Message;
        const offline = recipients.filter(
          (u) => u !== m.userId && !inbox?.isOnline(u) && !(live?.includes(u) ?? false),
        );
        notifier.offline(offline, m);
      }
    },
    onRepair: () => metrics.gapRepairs.inc(),
    onRepairError: (groupId, err) =>
      log.debug({ groupId, err: (err as Error).message }, 'gap repair failed; retrying'),
    retryMinMs: cfg.shard.fanout.retry.minMs,
    retryMaxMs: cfg.shard.fanout.retry.maxMs,
  });
  const fanout = new Fanout({
    cfg,
    log,
    own,
    metrics,
    members,
    local: (record) => sequencer.accept(record),
    // Only session hosts that notify need to know who is on the group's own sockets.
    ...(notifier.enabled ? { liveOf } : {}),
    send: async (dest, body) => {
      try {
        await internal.deliver(dest, body);
      } catch (err) {
        const status = err instanceof InternalCallError ? err.status : undefined;
        if (status !== undefined && status >= 400 && status < 500 && status !== 429 && status !== 421)
          throw new BatchRejected((err as Error).message);
        throw err;
      }
    },
    faultsEnabled: process.env.SHARDCHAT_TEST_FAULTS === '1',
  });
  if (process.env.SHARDCHAT_TEST_FAULTS === '1')
    log.warn({ faults: cfg.shard.fanout.faults }, 'fan-out fault injection on');
  // Push or pull per group (docs/delivery-protocol.md section 7); the hub is created below.
  let hubRef: GroupHub | undefined;
  const modes = new DeliveryModes({
    pull: cfg.shard.delivery.pull,
    tick: (t) => {
      metrics.ticks.inc();
      hubRef?.tick(t);
      fanout.tick(t);
    },
    changed: (groupId, mode) => {
      metrics.modeSwitches.inc({ mode });
      metrics.pullGroups.set(modes.pulling);
      log.info({ groupId, mode }, 'delivery mode switched');
    },
  });
  const memberCount = (groupId: string): number => {
    try {
      let n = 0;
      for (const list of members.byHost(groupId).values()) n += list.length;
      return n;
    } catch {
      return 0;
    }
  };
  store.onCommitted = (messages, seconds) => {
    metrics.writeDuration.observe(seconds);
    metrics.messages.inc(messages.length);
    // Every path that stores a message ends here, in commit order; the messages of one
    // commit reach each WebSocket in one write.
    gathering.run(() => {
      for (const m of messages) {
        recent.add(m);
        // Pushed to the group's WebSockets and the session hosts, or announced by a tick.
        if (modes.published(m, memberCount(m.groupId))) {
          hubRef?.publish(m);
          fanout.published(m);
        }
        if (waiters.notify(m.groupId) > 0) metrics.longPollWakeups.inc();
      }
    });
  };
  // One message budget per user on this shard: HTTP posts, group WebSockets and posts
  // forwarded from inbox hosts (through postLocal) take from it.
  const userRate = new UserRateLimiter({
    perSecond: cfg.shard.limits.userMessagesPerSecond,
    burst: cfg.shard.limits.userMessageBurst,
    maxUsers: cfg.shard.limits.userRateMaxUsers,
  });
  const admitMessage = (userId: string): void => {
    try {
      userRate.admit(userId);
    } catch (err) {
      metrics.rateLimited.inc();
      throw err;
    }
  };
  /** Stores a message on this shard (the group is here), as the public POST does. */
  const postLocal = async (groupId: string, userId: string, contents: string, clientMsgId: string) => {
    admitMessage(userId);
    return store.append(groupId, userId, contents, clientMsgId);
  };
  // Presence across shards (docs/delivery-protocol.md section 6).
  const presence = new GroupPresence({
    local: (groupId) => hubRef?.presence(groupId) ?? [],
    isConnected: (groupId, userId) => hubRef?.isConnected(groupId, userId) ?? false,
    changed: (groupId, userId, status) => {
      hubRef?.announcePresence(groupId, userId, status);
      fanout.presence(groupId, userId, status);
    },
  });
  const delivery: DeliveryHandlers = {
    post: postLocal,
    typing: (groupId, userId) => fanout.typing(groupId, userId),
    presence: (groupId, userId, status, host) => presence.report(groupId, userId, status, host),
    recipientsOn: (groupId, host) => members.on(groupId, host),
    liveOf,
    messagesAfter,
    deliver: (_from, _seq, records) => {
      // The batch's events reach each inbox connection in one write.
      gathering.run(() => {
        for (const r of records) sequencer.accept(r);
      });
    },
  };
  /** Checks a local group and membership for the inbox (as /internal/* does for remote ones). */
  const localMember = (groupId: string, userId: string): void => {
    if (!store.getGroup(groupId)) throw new ApiError(404, 'not_found', `group ${groupId} does not exist`);
    if (!store.isMember(groupId, userId))
      throw new ApiError(403, 'forbidden', `only members of ${groupId} may do this`);
  };
  const remoteError = (err: unknown): Error & { code?: string } => {
    if (err instanceof InternalCallError) {
      const code =
        err.code ?? (err.status === 403 ? 'forbidden' : err.status === 404 ? 'not_found' : 'unavailable');
      return Object.assign(new Error(err.message), { code });
    }
    return err as Error;
  };
  const hub: GroupHub = new GroupHub({
    cfg,
    log,
    store,
    auth,
    own,
    metrics,
    post: async (groupId, userId, contents, clientMsgId) =>
      (await postLocal(groupId, userId, contents, clientMsgId)).message,
    onPresence: (groupId, userId, connected) => presence.localChanged(groupId, userId, connected),
    modeOf: (groupId) => modes.modeOf(groupId),
  });
  hubRef = hub;
  inbox = new InboxHub({
    cfg,
    log,
    auth,
    own,
    metrics,
    otherConnections: () => hub.connections,
    forward: {
      post: async (groupId, userId, contents, clientMsgId): Promise<Message> => {
        const owner = own.ownerOf(groupId);
        if (owner === ordinal) {
          localMember(groupId, userId);
          return (await postLocal(groupId, userId, contents, clientMsgId)).message;
        }
        try {
          return await internal.postMessage(owner, groupId, { userId, contents, clientMsgId });
        } catch (err) {
          throw remoteError(err);
        }
      },
      typing: async (groupId, userId) => {
        const owner = own.ownerOf(groupId);
        if (owner === ordinal) {
          localMember(groupId, userId);
          fanout.typing(groupId, userId);
          return;
        }
        try {
          await internal.typing(owner, groupId, userId);
        } catch (err) {
          throw remoteError(err);
        }
      },
      presence: async (groupId, userId, status) => {
        const owner = own.ownerOf(groupId);
        if (owner === ordinal) {
          if (store.getGroup(groupId) && store.isMember(groupId, userId))
            presence.report(groupId, userId, status, ordinal);
          return;
        }
        await internal.presence(owner, groupId, { userId, status, host: ordinal });
      },
    },
  });
  const inboxHub = inbox;

  // A member who leaves (or is removed) stops receiving on the sockets already open.
  store.onMemberRemoved = (groupId, userId) => {
    hub.kick(groupId, userId);
    presence.removed(groupId, userId);
  };
  const app = createApi({
    cfg,
    log,
    store,
    auth,
    own,
    waiters,
    presence: (groupId) => presence.list(groupId),
    join: (g, userId) => membership.join(g, userId),
    leave: (g, userId) => membership.leave(g, userId),
    admitMessage,
    modeOf: (groupId) => modes.modeOf(groupId),
    messagesAfter,
  });
  // Express's own final handler answers HTML; every request ends in JSON instead.
  const finish = finalHandler(log);

  const server = http.createServer(
    // A head at the router's maxHeaderBytes plus the headers the router adds must pass.
    { maxHeaderSize: forwardedHeadLimit(cfg), keepAliveTimeout: 5000, requestTimeout: 120_000 },
    (req, res) => {
      const r = req as unknown as Request;
      const w = res as unknown as Response;
      app(r, w, finish(r, w));
    },
  );
  server.on('clientError', answerClientError);
  server.on('upgrade', (req, socket, head) => {
    if (InboxHub.matches(req.url)) inboxHub.handleUpgrade(req, socket, head);
    else hub.handleUpgrade(req, socket, head);
  });
  server.maxConnections = cfg.shard.limits.maxConnections + 1000;

  let draining = false;
  const admin = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path?.startsWith('/internal/')) {
      const token = req.headers['x-shardchat-internal-token'];
      if (!tokenMatches(typeof token === 'string' ? token : undefined, internalToken)) {
        sendJson(res, 401, {
          error: { code: 'unauthenticated', message: 'internal calls need x-shardchat-internal-token' },
        });
        return;
      }
      handleInternal({ cfg, log, store, own, delivery }, req, res, path);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, { error: { code: 'method_not_allowed', message: 'the admin port answers GET' } });
      return;
    }
    switch (path) {
      case '/healthz':
        sendJson(res, 200, { status: 'ok', shard: ordinal });
        return;
      case '/readyz': {
        // The topology is reported, never a reason to be unready: a shard serves its own
        // keys whatever the API server or the StatefulSet's replicas say.
        const { mode, synced, ...rest } = topology?.status() ?? { mode: 'static', synced: true };
        // Read-only storage keeps the shard ready: it serves reads (writes get 503
        // storage_readonly), which the router could not send anywhere else.
        sendJson(res, draining ? 503 : 200, {
          status: draining ? 'draining' : 'ready',
          shard: ordinal,
          shards: own.shards,
          storage: store.readOnly ? 'read-only' : 'read-write',
          ...(mode === 'kubernetes' ? { mode, topologySynced: synced, ...rest } : {}),
        });
        return;
      }
      case '/metrics':
        metrics.registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': metrics.registry.contentType });
            res.end(text);
          },
          (err: Error) => sendJson(res, 500, { error: { code: 'metrics_failed', message: err.message } }),
        );
        return;
      default:
        sendJson(res, 404, { error: { code: 'not_found', message: `no admin route ${path}` } });
    }
  });
  admin.on('clientError', answerClientError);

  const port = await listen(server, cfg.shard.port, cfg.shard.host);
  const adminPort = await listen(admin, cfg.shard.adminPort, cfg.shard.host);
  log.info({ shard: ordinal, shards: own.shards, port, adminPort, db: store.file }, 'shard listening');

  return {
    ordinal,
    port,
    adminPort,
    async stop() {
      draining = true;
      hub.close();
      inboxHub.close();
      modes.stop();
      fanout.stop();
      sequencer.stop();
      presence.stop();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), cfg.router.timeouts.shutdownMs).unref();
      });
      await new Promise<void>((resolve) => {
        admin.close(() => resolve());
        admin.closeAllConnections();
      });
      await topology?.stop();
      // Flushes queued notifications (bounded by notifications.timeoutMs) while the store is open.
      await notifier.stop();
      await store.close();
    },
  };
}
