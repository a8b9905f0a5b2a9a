// A minimal Node backend for `node bench/run.mjs --backend node`: the same answer as
// the nginx backends ({"shard":N,"ok":true}), after reading the request body.
//   node bench/backend.mjs <port> <shard>
import http from 'node:http';

const port = Number(process.argv[2]);
const shard = Number(process.argv[3] ?? 0);
const body = Buffer.from(JSON.stringify({ shard, ok: true }));

const server = http.createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
});
server.keepAliveTimeout = 65_000;
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
