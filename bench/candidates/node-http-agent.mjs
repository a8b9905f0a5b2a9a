// Candidate: plain node:http server + http.request through one keep-alive Agent per shard.
import http from 'node:http';
import { backendPorts, endToEnd, fail, listening, shardOf, shards } from './common.mjs';

const agents = backendPorts.map(
  () => new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256 }),
);

const server = http.createServer((req, res) => {
  const shard = shardOf(req, res);
  if (shard === undefined) return;
  const headers = endToEnd(req.headers);
  headers['x-shardchat-shard'] = `${shard}/${shards}`;
  const up = http.request(
    {
      host: '127.0.0.1',
      port: backendPorts[shard],
      method: req.method,
      path: req.url,
      headers,
      agent: agents[shard],
    },
    (ures) => {
      res.writeHead(ures.statusCode, ures.statusMessage, endToEnd(ures.headers));
      ures.pipe(res);
    },
  );
  up.on('error', () => fail(res, 502, 'upstream_error'));
  res.on('close', () => {
    if (!res.writableFinished) up.destroy();
  });
  req.pipe(up);
});
listening(server);
