// Candidate: http-proxy-3 (maintained rewrite of http-proxy), one keep-alive Agent per
// shard (without an agent it sends `Connection: close` to the backend).
import http from 'node:http';
import { createProxyServer } from 'http-proxy-3';
import { backendPorts, fail, listening, shardOf, shards } from './common.mjs';

const targets = backendPorts.map((p) => ({
  target: `http://127.0.0.1:${p}`,
  agent: new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256 }),
}));
const proxy = createProxyServer({ xfwd: false });
proxy.on('error', (_err, _req, res) => {
  if (res && 'writeHead' in res) fail(res, 502, 'upstream_error');
  else res?.destroy();
});

const server = http.createServer((req, res) => {
  const shard = shardOf(req, res);
  if (shard === undefined) return;
  const t = targets[shard];
  proxy.web(req, res, {
    target: t.target,
    agent: t.agent,
    headers: { 'x-shardchat-shard': `${shard}/${shards}` },
  });
});
listening(server);
