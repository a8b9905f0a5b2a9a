// The subscribers of bench/peers.mjs, in a process of their own (so that their CPU is
// neither the poster's nor the server's): raw `ws` clients speaking either shardchat's
// WebSocket protocol or Socket.IO's (engine.io v4 over a WebSocket: `0{...}` open, `40`
// connect, `42[event, data]` events, `2`/`3` ping/pong), the same client code and cost
// for both. Driven over IPC by the parent:
//   {cmd: 'open', kind, urls, concurrency} -> {opened, seconds}
//   {cmd: 'reset'} | {cmd: 'count'} -> {received} | {cmd: 'stats', ids} | {cmd: 'close'}
import WebSocket from 'ws';

/** @type {{ ws: WebSocket, received: number[], latency: number[], lastAt: number }[]} */
const subs = [];
const now = () => performance.timeOrigin + performance.now();

function onEvent(sub, id, contents, at) {
  sub.received.push(id);
  const sent = Number(/^sent=([\d.]+);/.exec(contents)?.[1]);
  sub.latency.push(at - sent);
  if (at > sub.lastAt) sub.lastAt = at;
}

function open(kind, url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 30_000 });
    const sub = { ws, received: [], latency: [], lastAt: 0 };
    const timer = setTimeout(() => reject(new Error(`no hello within 30s: ${url}`)), 30_000);
    const ready = () => {
      clearTimeout(timer);
      subs.push(sub);
      resolve();
    };
    ws.on('message', (data) => {
      const at = now();
      const s = data.toString();
      if (kind === 'shardchat') {
        const ev = JSON.parse(s);
        if (ev.type === 'message') onEvent(sub, ev.msgId, ev.contents, at);
        else if (ev.type === 'hello') ready();
        return;
      }
      if (s.startsWith('42')) {
        const [name, m] = JSON.parse(s.slice(2));
        if (name === 'message') onEvent(sub, m.id, m.contents, at);
      } else if (s === '2') ws.send('3');
      else if (s.startsWith('0{')) ws.send('40');
      else if (s.startsWith('40')) ready();
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

async function openAll(kind, urls, concurrency) {
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < urls.length) await open(kind, urls[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, urls.length) }, worker));
  return { opened: subs.length, seconds: (performance.now() - t0) / 1000 };
}

function percentile(sorted, p) {
  return sorted.length === 0
    ? Number.NaN
    : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Every subscriber against the expected ids (in order): delivered, missing, duplicates, out of order, latency. */
function stats(ids) {
  const want = new Set(ids);
  let delivered = 0;
  let missing = 0;
  let duplicate = 0;
  let outOfOrder = 0;
  let lastAt = 0;
  const lat = [];
  for (const s of subs) {
    const seen = new Set();
    let prev = -Infinity;
    for (const id of s.received) {
      delivered++;
      if (seen.has(id)) duplicate++;
      seen.add(id);
      if (id <= prev) outOfOrder++;
      prev = id;
    }
    for (const id of want) if (!seen.has(id)) missing++;
    for (const l of s.latency) lat.push(l);
    if (s.lastAt > lastAt) lastAt = s.lastAt;
  }
  lat.sort((a, b) => a - b);
  return {
    delivered,
    missing,
    duplicate,
    outOfOrder,
    lastAt,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
  };
}

process.on('message', async (m) => {
  try {
    if (m.cmd === 'open') process.send({ ok: true, ...(await openAll(m.kind, m.urls, m.concurrency)) });
    else if (m.cmd === 'reset') {
      for (const s of subs) {
        s.received = [];
        s.latency = [];
        s.lastAt = 0;
      }
      process.send({ ok: true });
    } else if (m.cmd === 'count')
      process.send({ ok: true, received: subs.reduce((a, s) => a + s.received.length, 0) });
    else if (m.cmd === 'stats') process.send({ ok: true, ...stats(m.ids) });
    else if (m.cmd === 'close') {
      for (const s of subs) s.ws.terminate();
      subs.length = 0;
      process.send({ ok: true });
    }
  } catch (err) {
    process.send({ ok: false, error: err.message });
  }
});
process.on('disconnect', () => process.exit(0));
