// The Socket.IO 4 peer of bench/peers.mjs: one process, WebSocket transport only, no
// compression (as the shard), one room the subscribers join on connect. A publisher
// POSTs /publish {contents} over HTTP (as shardchat's poster POSTs a message); the
// server numbers it and emits it to the room, then answers {id}. Nothing is stored.
// With REDIS_URL, the room is shared through @socket.io/redis-adapter (every emit goes
// through Redis pub/sub and back), as a Socket.IO cluster runs.
//
//   PORT=<port> [REDIS_URL=redis://127.0.0.1:<port>] node bench/peers/socketio-server.mjs
import http from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.env.PORT);
const room = 'bench';
let seq = 0;

const httpServer = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/publish') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const { contents } = JSON.parse(Buffer.concat(chunks).toString());
    const id = ++seq;
    io.to(room).emit('message', { id, contents });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id }));
  });
});

const io = new Server(httpServer, {
  transports: ['websocket'],
  perMessageDeflate: false,
  serveClient: false,
});
io.on('connection', (socket) => socket.join(room));

if (process.env.REDIS_URL) {
  const { createClient } = await import('redis');
  const { createAdapter } = await import('@socket.io/redis-adapter');
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on('error', (err) => process.stderr.write(`redis: ${err.message}\n`));
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

httpServer.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
process.on('SIGTERM', () => process.exit(0));
