/**
 * Profiles (`PUT` / `GET /users/{userId}`), the groups of a user
 * (`GET /users/{userId}/groups`) and dev tokens (docs/architecture.md section 4).
 */
import type express from 'express';
import { ApiError, badRequest, forbidden, notFound } from '../../common/http-answers.js';
import { intParam, jsonBody, route, stringField } from './http-input.js';
import type { RouteKit } from './route-kit.js';
import { userView } from './views.js';

export function userRoutes(app: express.Express, k: RouteKit): void {
  const { s, owned, jsonParser, authed } = k;
  const { cfg, store, auth } = s;
  const limits = cfg.shard.limits;

  app.put(
    '/users/:userId',
    owned('userId'),
    jsonParser,
    route(async (req, res) => {
      const me = await authed(req);
      const userId = req.params.userId as string;
      if (me !== userId) throw forbidden('you may only write your own profile');
      const body = jsonBody(req);
      const max = limits.maxProfileFieldBytes;
      const name = stringField(body, 'name', 200, true) as string;
      const email = stringField(body, 'email', 254, false);
      if (email !== null && !/^[^\s@]+@[^\s@]+$/.test(email))
        throw badRequest('bad_field', 'email is not an email address');
      const photoUrl = stringField(body, 'photoUrl', max, false);
      if (photoUrl !== null && !/^https?:\/\/\S+$/i.test(photoUrl))
        throw badRequest('bad_field', 'photoUrl must be an http(s) URL');
      const { user, created } = store.putUser(userId, name, email, photoUrl);
      res.status(created ? 201 : 200).json(userView(user, me));
    }),
  );

  app.get(
    '/users/:userId',
    owned('userId'),
    route(async (req, res) => {
      const me = await authed(req);
      const u = store.getUser(req.params.userId as string);
      if (!u) throw notFound(`user ${req.params.userId}`);
      res.json(userView(u, me));
    }),
  );

  // The groups the user is a member of, kept here by the groups' shards (shard/cluster/user-index.ts).
  app.get(
    '/users/:userId/groups',
    owned('userId'),
    route(async (req, res) => {
      const me = await authed(req);
      const userId = req.params.userId as string;
      if (me !== userId) throw forbidden('you may only list your own groups');
      const max = limits.maxMembersPageSize;
      const limit = intParam(req.query.limit, 'limit', 1, max, Math.min(100, max));
      const after = typeof req.query.after === 'string' ? req.query.after : '';
      const groups = store.groupsOf(userId, after, limit);
      const last = groups[groups.length - 1];
      res.json({ groups, ...(groups.length === limit && last ? { next: last.groupId } : {}) });
    }),
  );

  app.post(
    '/users/:userId/token',
    owned('userId'),
    route(async (req, res) => {
      if (!cfg.auth.devTokens) throw new ApiError(404, 'not_found', 'token issuing is off (auth.devTokens)');
      res.status(201).json({ token: await auth.sign(req.params.userId as string) });
    }),
  );
}
