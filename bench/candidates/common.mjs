// Shared by the candidate proxies in this folder: argv, the shard function (the
// project's own, from dist/), and the error answers. Each candidate is started as
//   node bench/candidates/<name>.mjs <port> <backendPort> [<backendPort>...]
// and prints "listening <port>" once it accepts connections.
import { initHash } from '../../dist/common/hash.js';
import { pathOf, ShardFunction } from '../../dist/common/shard-function.js';

await initHash();

const [port, ...backendPorts] = process.argv.slice(2).map(Number);
if (!port || backendPorts.length === 0 || backendPorts.some((p) => !p)) {
  process.stderr.write('usage: node <candidate>.mjs <port> <backendPort> [<backendPort>...]\n');
  process.exit(2);
}

export { backendPorts, port };
export const shards = backendPorts.length;

const sf = new ShardFunction({
  urlPattern: '^/(?:groups|users)/([^/]+)',
  header: 'x-group-id',
  onNoMatch: 'path',
  assignment: 'modulo',
});

/** The shard of a request target (path and query) with no headers; undefined for a rejected or malformed key. */
export function shardOfTarget(target) {
  const r = sf.route(pathOf(target), NO_HEADERS, shards);
  return r.kind === 'shard' || r.kind === 'fixed' ? r.shard : undefined;
}
const NO_HEADERS = {};

/**
 * The shard of a request, or undefined after answering it (404 for a rejected key,
 * 400 for a malformed escape), as the router does.
 */
export function shardOf(req, res) {
  const r = sf.route(pathOf(req.url), req.headers, shards);
  if (r.kind === 'shard' || r.kind === 'fixed') return r.shard;
  fail(res, r.kind === 'reject' ? 404 : 400, r.kind === 'reject' ? 'no_shard_key' : 'malformed_key');
  return undefined;
}

/** Hop-by-hop headers (RFC 9110 7.6.1), plus those named in Connection. */
const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
]);

/** A copy of `headers` without the hop-by-hop ones. */
export function endToEnd(headers) {
  const out = {};
  const conn = headers.connection;
  const named = conn
    ? new Set(
        String(conn)
          .toLowerCase()
          .split(',')
          .map((s) => s.trim()),
      )
    : undefined;
  for (const name in headers) {
    if (HOP.has(name) || named?.has(name)) continue;
    out[name] = headers[name];
  }
  return out;
}

export function fail(res, status, code) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify({ error: { code, message: code } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function listening(server) {
  server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}
