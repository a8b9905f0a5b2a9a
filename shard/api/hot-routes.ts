/**
 * The hot routes, answered without Express: `POST /groups/{id}/messages`, the one request
 * every message makes, and `GET /groups/{id}/messages`, every read of history and every
 * long-poll. Express's router tries each route's pattern in turn and wraps request and
 * response on every call; here one pattern picks the route and the same pieces run in
 * the same order: the ownership gate, the JSON body parser (POST), then postMessage or
 * readMessages (authentication, group, membership, the intake or the read). The answers
 * are the ones the Express routes give, byte for byte in status, body and headers (the
 * shard and map headers, JSON errors). A request these patterns do not take (a
 * percent-escape in the id, a trailing slash, another method, a query with other
 * parameters than after, before, limit and wait as digits, or one of them twice) goes
 * to Express as before.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import { errorBody } from '../../common/http-answers.js';
import { MAP_HEADER, SHARD_HEADER } from '../../common/protocol.js';
import { answerOrLog } from './errors.js';
import { postMessage, readMessages } from './message-routes.js';
import type { RouteKit } from './route-kit.js';

/** `/groups/{id}/messages`, with an id free of percent-escapes and an optional query. */
const POST_MESSAGE = /^\/groups\/([^/?#%]+)\/messages(?:\?[^#]*)?$/;
/** The same for reads: the query, if any, is only after, before, limit and wait, as digits. */
const GET_MESSAGES =
  /^\/groups\/([^/?#%]+)\/messages(?:\?((?:after|before|limit|wait)=\d{1,16}(?:&(?:after|before|limit|wait)=\d{1,16}){0,3}))?$/;

/** The query of a GET_MESSAGES match as Express reads it; undefined when a parameter repeats (Express's answer differs). */
function readQuery(q: string | undefined): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  if (q === undefined) return out;
  for (const pair of q.split('&')) {
    const eq = pair.indexOf('=');
    const key = pair.slice(0, eq);
    if (key in out) return undefined;
    out[key] = pair.slice(eq + 1);
  }
  return out;
}

/** Answers the request when it is a hot route; false: not one, Express answers it. */
export type HotRoutes = (req: IncomingMessage, res: ServerResponse) => boolean;

export function hotRoutes(k: RouteKit, log: { error(o: object, m: string): void }): HotRoutes {
  const own = k.s.own;
  const gate = k.owned('groupId');

  const fail = (res: ServerResponse, err: unknown): void => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const e = answerOrLog(err, log, 'unexpected error');
    send(res, e.status, errorBody(e), { 'cache-control': 'no-store', ...e.headers });
  };

  const send = (
    res: ServerResponse,
    status: number,
    body: unknown,
    headers?: Record<string, string>,
  ): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      [SHARD_HEADER]: `${own.ordinal}/${own.shards}`,
      [MAP_HEADER]: own.mapHeaderValue,
      ...headers,
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  };

  const read = (req: IncomingMessage, res: ServerResponse): boolean => {
    const m = GET_MESSAGES.exec(req.url ?? '');
    if (!m) return false;
    const query = readQuery(m[2]);
    if (!query) return false;
    const groupId = m[1] as string;
    const r = Object.assign(req, { params: { groupId } }) as unknown as Request;
    gate(r, res as unknown as Response, (err?: unknown) => {
      if (err) {
        fail(res, err);
        return;
      }
      readMessages(k, groupId, req.headers.authorization, query, res).then(
        (messages) => {
          if (messages) send(res, 200, { messages });
        },
        (e: unknown) => fail(res, e),
      );
    });
    return true;
  };

  return (req, res) => {
    if (req.method === 'GET') return read(req, res);
    if (req.method !== 'POST') return false;
    const m = POST_MESSAGE.exec(req.url ?? '');
    if (!m) return false;
    const groupId = m[1] as string;
    // The same middleware as the Express route's, given what it reads: the id and the method.
    const r = Object.assign(req, { params: { groupId } }) as unknown as Request;
    const w = res as unknown as Response;
    const parsed: NextFunction = (err?: unknown) => {
      if (err) {
        fail(res, err);
        return;
      }
      postMessage(k, groupId, req.headers.authorization, r).then(
        (ack) => send(res, ack.status, ack.body),
        (e: unknown) => fail(res, e),
      );
    };
    gate(r, w, (err?: unknown) => {
      if (err) fail(res, err);
      else k.jsonParser(r, w, parsed);
    });
    return true;
  };
}
