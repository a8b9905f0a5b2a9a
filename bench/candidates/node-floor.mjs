// Not a candidate: the floor under any router written for Node.js, to tell what a Node.js
// proxy can reach on this machine at all. It does only what every router must: read a
// request, route it by the project's ShardFunction, write it to a keep-alive connection to
// that shard, read the answer and write it back, with the same syscalls as the router
// (one read and one write on each side per request). It parses nothing else: it takes
// each read from a client for one whole request and each read from a shard for one whole
// response, which holds for wrk's small GETs and the backends' small answers on loopback
// and for nothing else (no framing, no limits, no errors, no timeouts). What it costs per
// request is what Node.js, libuv and the kernel cost; the router's own work is the rest.
import net from 'node:net';
import { backendPorts, port, shardOfTarget } from './common.mjs';

const server = net.createServer((client) => {
  client.setNoDelay(true);
  // One upstream connection per shard for this client, opened when first needed.
  const ups = new Array(backendPorts.length);
  const upstream = (shard) => {
    let up = ups[shard];
    if (up === undefined) {
      up = net.connect(backendPorts[shard], '127.0.0.1');
      up.setNoDelay(true);
      up.on('data', (chunk) => client.write(chunk));
      up.on('error', () => client.destroy());
      up.on('close', () => {
        ups[shard] = undefined;
      });
      ups[shard] = up;
    }
    return up;
  };
  client.on('data', (chunk) => {
    const start = chunk.indexOf(32) + 1;
    const end = chunk.indexOf(32, start);
    upstream(shardOfTarget(chunk.latin1Slice(start, end)) ?? 0).write(chunk);
  });
  client.on('error', () => {});
  client.on('close', () => {
    for (const up of ups) up?.destroy();
  });
});
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
