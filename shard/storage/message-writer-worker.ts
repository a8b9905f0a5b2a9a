/**
 * The worker thread that appends messages (see MessageWriter): its own better-sqlite3
 * connection to the shard's database (WAL, synchronous=FULL), one transaction and so
 * one fsync per batch. The main thread keeps parsing requests while a batch commits,
 * and the next batch collects what arrived meanwhile.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import {
  type AppendRequest,
  type BatchOutcome,
  MESSAGE_SQL,
  type Message,
  type WriterReply,
  type WriterRequest,
} from './message-sql.js';

const port = parentPort;
if (!port) throw new Error('message-writer-worker runs in a worker thread');

const { file, autocheckpointPages } = workerData as { file: string; autocheckpointPages?: number };

// Statements live as long as the thread (see NATIVE_OBJECTS in database.ts: an ObjectWrap
// collected outside a JavaScript context aborts the process on Node 24).
let db: Database.Database;
let st: { [K in keyof typeof MESSAGE_SQL]: Database.Statement };
try {
  db = new Database(file, { fileMustExist: true });
  db.exec('PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000');
  // With a checkpointer thread (checkpointer.ts) the commits checkpoint only past its backstop.
  if (autocheckpointPages !== undefined)
    db.exec(`PRAGMA wal_autocheckpoint = ${Math.trunc(autocheckpointPages)}`);
  st = {
    groupHead: db.prepare(MESSAGE_SQL.groupHead),
    byClientId: db.prepare(MESSAGE_SQL.byClientId),
    insertMessage: db.prepare(MESSAGE_SQL.insertMessage),
    setLast: db.prepare(MESSAGE_SQL.setLast),
  };
} catch (err) {
  const e = err as { message?: string; code?: string };
  port.postMessage({ type: 'open-failed', error: { message: e.message ?? String(err), code: e.code ?? '' } });
  process.exit(1);
}

/** One append inside the batch's transaction; a group's last msgId is written once per batch. */
function appendOne(p: AppendRequest, heads: Map<string, { last: number; epoch: string }>): BatchOutcome {
  const existing = st.byClientId.get(p.groupId, p.userId, p.clientMsgId) as Message | undefined;
  if (existing) return { existing };
  let head = heads.get(p.groupId);
  if (!head) {
    const row = st.groupHead.get(p.groupId) as { last_msg_id: number; epoch: string } | undefined;
    if (!row) return { error: { message: `group ${p.groupId} does not exist`, code: 'no_group' } };
    head = { last: row.last_msg_id, epoch: row.epoch };
    heads.set(p.groupId, head);
  }
  const msgId = head.last + 1;
  const ts = Date.now();
  st.insertMessage.run(p.groupId, msgId, head.last, head.epoch, ts, p.userId, p.contents, p.clientMsgId);
  const decided = { msgId, prevMsgId: head.last, epoch: head.epoch, ts };
  head.last = msgId;
  return decided;
}

const runBatch = db.transaction((items: AppendRequest[]): BatchOutcome[] => {
  const heads = new Map<string, { last: number; epoch: string }>();
  const out = items.map((p) => appendOne(p, heads));
  for (const [groupId, head] of heads) st.setLast.run(head.last, groupId);
  return out;
});

port.on('message', (req: WriterRequest) => {
  if (req.type === 'close') {
    db.close();
    port.close();
    return;
  }
  const started = performance.now();
  let reply: WriterReply;
  try {
    // IMMEDIATE: take the write lock at BEGIN, so that a transaction of the main thread's
    // connection never upgrades into SQLITE_BUSY against this one (or this one against it).
    const results = runBatch.immediate(req.items);
    reply = { type: 'done', id: req.id, results, seconds: (performance.now() - started) / 1000 };
  } catch (err) {
    const e = err as { message?: string; code?: string };
    reply = { type: 'failed', id: req.id, error: { message: e.message ?? String(err), code: e.code ?? '' } };
  }
  port.postMessage(reply);
});

port.postMessage({ type: 'ready' } satisfies WriterReply);
