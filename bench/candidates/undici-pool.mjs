// Candidate: node:http server in front, undici 7 Pool per shard behind, the response
// streamed into the node response through Dispatcher.dispatch (no intermediate
// Readable), with backpressure (pause on a full socket, resume on 'drain').
import http from 'node:http';
import { Pool } from 'undici';
import { backendPorts, endToEnd, fail, listening, shardOf, shards } from './common.mjs';

const pools = backendPorts.map(
  (p) => new Pool(`http://127.0.0.1:${p}`, { connections: 256, pipelining: 1, keepAliveTimeout: 60_000 }),
);

const server = http.createServer((req, res) => {
  const shard = shardOf(req, res);
  if (shard === undefined) return;
  const headers = endToEnd(req.headers);
  delete headers.expect; // undici refuses it; node's server has answered 100-continue already
  headers['x-shardchat-shard'] = `${shard}/${shards}`;
  const cl = req.headers['content-length'];
  const hasBody = (cl !== undefined && cl !== '0') || req.headers['transfer-encoding'] !== undefined;
  let controller;
  res.on('close', () => {
    if (!res.writableFinished) controller?.abort(new Error('client went away'));
  });
  const handler = {
    onRequestStart(c) {
      controller = c;
    },
    onResponseStart(_c, status, rheaders) {
      res.writeHead(status, endToEnd(rheaders));
    },
    onResponseData(c, chunk) {
      if (!res.write(chunk)) {
        c.pause();
        res.once('drain', () => c.resume());
      }
    },
    onResponseEnd() {
      res.end();
    },
    onResponseError() {
      fail(res, 502, 'upstream_error');
    },
  };
  try {
    pools[shard].dispatch(
      { path: req.url, method: req.method, headers, body: hasBody ? req : null },
      handler,
    );
  } catch {
    fail(res, 502, 'upstream_error');
  }
});
listening(server);
