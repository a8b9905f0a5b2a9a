/**
 * The chat API of one shard (docs/architecture.md section 4), behind the router. Every
 * route checks ownership of the id in its path first (421), then authentication (401),
 * then existence (404) and membership or ownership (403). Routes match exactly as the
 * router's pattern reads the path: case-sensitive, no trailing-slash folding.
 */
import express from 'express';
import { ApiError } from '../../common/http-answers.js';
import { MAP_HEADER, SHARD_HEADER } from '../../common/protocol.js';
import { errorHandler } from './errors.js';
import { groupRoutes, memberRoutes } from './group-routes.js';
import { type HotRoutes, hotRoutes } from './hot-routes.js';
import { messageRoutes } from './message-routes.js';
import { routeKit, type ShardServices } from './route-kit.js';
import { userRoutes } from './user-routes.js';

/** The chat API: the hot route answered without Express (hot-routes.ts), everything else by the Express app. */
export interface PublicApi {
  app: express.Express;
  hot: HotRoutes;
}

export function createApi(s: ShardServices): PublicApi {
  const { own } = s;
  const app = express();
  // Routes match exactly as the router's urlPattern does (docs/architecture.md section 1).
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  // Which shard served the answer (clients show it; the router sends the same header upstream).
  // The map it serves by rides on every answer (routers adopt a newer one).
  app.use((_req, res, next) => {
    res.setHeader(SHARD_HEADER, `${own.ordinal}/${own.shards}`);
    res.setHeader(MAP_HEADER, own.mapHeaderValue);
    next();
  });
  const kit = routeKit(s);
  userRoutes(app, kit);
  groupRoutes(app, kit);
  memberRoutes(app, kit);
  messageRoutes(app, kit);
  app.use((req, _res, next) => next(new ApiError(404, 'not_found', `no route ${req.method} ${req.path}`)));
  app.use(errorHandler(s.log));
  return { app, hot: hotRoutes(kit, s.log) };
}
