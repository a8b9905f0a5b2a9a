// The floor under any durable HTTP write path in Node.js (see bench/durable-floor.mjs): a
// bare node:http server that reads each POST's JSON body, hands it to a writer thread
// that commits batches with the shard's own statements (WAL, synchronous=FULL, one
// transaction per batch, one batch in flight, the next sent as soon as one commits), and
// answers 201 after the commit. No authentication, membership, rate limits, validation
// beyond JSON.parse, fan-out or metrics: what it costs is node:http, the thread hop and
// SQLite. The same over WebSockets: a `ws` server on /ws, each text frame
// `{groupId, contents, clientMsgId}` answered by `{type: 'ack', clientMsgId, msgId}` after
// its commit.
//
//   node bench/durable-floor/server.mjs <port> <db file>   prints "listening <port>"
import http from 'node:http';
import { Worker } from 'node:worker_threads';
import { WebSocketServer } from 'ws';

const [port, file] = [Number(process.argv[2]), process.argv[3]];
const worker = new Worker(new URL('./writer.mjs', import.meta.url), { workerData: { file } });

let pending = [];
let inFlight = null;
let commits = 0;
let rows = 0;

function sendNext() {
  if (inFlight || pending.length === 0) return;
  inFlight = pending;
  pending = [];
  worker.postMessage(inFlight.map((p) => p.item));
}

worker.on('message', (results) => {
  const batch = inFlight;
  inFlight = null;
  commits++;
  rows += batch.length;
  sendNext();
  // One write per WebSocket per commit (as the shard gathers its acks): corked meanwhile.
  const corked = new Set();
  for (let i = 0; i < batch.length; i++) {
    const sock = batch[i].socket;
    if (sock && !corked.has(sock)) {
      corked.add(sock);
      sock.cork();
    }
    batch[i].answer(results[i]);
  }
  for (const sock of corked) sock.uncork();
});
worker.on('error', (err) => {
  process.stderr.write(`writer failed: ${err.stack}\n`);
  process.exit(1);
});

function answerHttp(res, result) {
  const text = JSON.stringify(result);
  res.writeHead(201, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

const ECHO = process.env.FLOOR_ECHO === '1';
const PATH = /^\/groups\/([^/?]+)\/messages$/;
const server = http.createServer((req, res) => {
  const m = req.method === 'POST' ? PATH.exec(req.url) : null;
  if (!m) {
    const text = JSON.stringify({ commits, rows });
    res.writeHead(req.url === '/stats' ? 200 : 404, { 'content-type': 'application/json' });
    res.end(text);
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(chunks).toString());
    const item = { groupId: m[1], contents: body.contents, clientMsgId: body.clientMsgId };
    pending.push({ item, answer: (result) => answerHttp(res, result) });
    sendNext();
  });
});
server.keepAliveTimeout = 60_000;
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    const item = JSON.parse(data.toString());
    pending.push({
      item,
      socket: ws._socket,
      answer: (r) => {
        ws.send(JSON.stringify({ type: 'ack', clientMsgId: r.clientMsgId, msgId: r.msgId }));
        // With FLOOR_ECHO=1 the message also goes back as its group's `message` event, as a
        // shard sends it to the group's sockets (in the bench, the sender's own socket).
        if (ECHO) ws.send(JSON.stringify({ type: 'message', message: { ...item, ...r } }));
      },
    });
    sendNext();
  });
});
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
process.on('SIGTERM', () => worker.terminate().then(() => process.exit(0)));
