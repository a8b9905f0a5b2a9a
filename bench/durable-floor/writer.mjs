// The writer thread of bench/durable-floor/server.mjs: the shard's statements, one
// transaction per batch (BEGIN IMMEDIATE, as the shard's writer), on a database that
// bench/durable-floor.mjs created with the shard's schema.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { MESSAGE_SQL } from '../../dist/shard/storage/message-sql.js';

const db = new Database(workerData.file, { fileMustExist: true });
db.exec('PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000');
const st = {
  groupHead: db.prepare(MESSAGE_SQL.groupHead),
  byClientId: db.prepare(MESSAGE_SQL.byClientId),
  insertMessage: db.prepare(MESSAGE_SQL.insertMessage),
  setLast: db.prepare(MESSAGE_SQL.setLast),
};

const runBatch = db.transaction((items) => {
  const heads = new Map();
  const out = items.map((p) => {
    if (st.byClientId.get(p.groupId, 'bench', p.clientMsgId)) throw new Error('duplicate clientMsgId');
    let head = heads.get(p.groupId);
    if (!head) {
      const row = st.groupHead.get(p.groupId);
      head = { last: row.last_msg_id, epoch: row.epoch };
      heads.set(p.groupId, head);
    }
    const msgId = head.last + 1;
    const ts = Date.now();
    st.insertMessage.run(p.groupId, msgId, head.last, head.epoch, ts, 'bench', p.contents, p.clientMsgId);
    const decided = { msgId, prevMsgId: head.last, epoch: head.epoch, ts, clientMsgId: p.clientMsgId };
    head.last = msgId;
    return decided;
  });
  for (const [groupId, head] of heads) st.setLast.run(head.last, groupId);
  return out;
});

parentPort.on('message', (items) => parentPort.postMessage(runBatch.immediate(items)));
