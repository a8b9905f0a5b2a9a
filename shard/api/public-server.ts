/**
 * The shard's public port: the chat API (express, shard/api/public.ts) and the
 * WebSocket upgrades of group sockets and inboxes, behind the router.
 */
import http from 'node:http';
import type { Request, Response } from 'express';
import { type Config, forwardedHeadLimit } from '../../common/config.js';
import { answerClientError } from '../../common/http-answers.js';
import type { Logger } from '../../common/logger.js';
import type { GroupHub } from '../sockets/group-hub.js';
import { InboxHub } from '../sockets/inbox-hub.js';
import { finalHandler } from './errors.js';
import type { PublicApi } from './public.js';

export interface PublicServerDeps {
  cfg: Config;
  log: Logger;
  api: PublicApi;
  groups: GroupHub;
  inboxes: InboxHub;
}

export function createPublicServer(d: PublicServerDeps): http.Server {
  // Express's own final handler answers HTML; every request ends in JSON instead.
  const finish = finalHandler(d.log);
  const server = http.createServer(
    // A head at the router's maxHeaderBytes plus the headers the router adds must pass.
    { maxHeaderSize: forwardedHeadLimit(d.cfg), keepAliveTimeout: 5000, requestTimeout: 120_000 },
    (req, res) => {
      if (d.api.hot(req, res)) return;
      const r = req as unknown as Request;
      const w = res as unknown as Response;
      d.api.app(r, w, finish(r, w));
    },
  );
  server.on('clientError', answerClientError);
  server.on('upgrade', (req, socket, head) => {
    if (InboxHub.matches(req.url)) d.inboxes.handleUpgrade(req, socket, head);
    else d.groups.handleUpgrade(req, socket, head);
  });
  server.maxConnections = d.cfg.shard.limits.maxConnections + 1000;
  return server;
}
