// The disk's limit for the shard's durable writes: the same rows committed with the same
// pattern in SQLite alone, in the bench's own process. The shard's database is opened the
// way the shard opens it (dist/shard/storage/database.js: WAL, synchronous=FULL, the same
// schema), and each batch is one transaction doing what the writer thread does per
// message (the clientMsgId lookup, the group's head read once per batch, the insert, the
// group's last msgId written once per batch). No HTTP, no WebSocket, no second thread.
//
//   import { sqliteAlone } from './sqlite-alone.mjs';
//   sqliteAlone({ root, dir, rows: 20000, batch: 26, groups: 1 }) -> { rowsPerS, rows, batches, seconds, cpuUsPerRow }
import fs from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** Stops early past this many seconds (a slow disk must not hold the bench). */
const MAX_SECONDS = 10;

/**
 * Commits `rows` messages to `groups` groups (round robin) in transactions of `batch`
 * rows, with contents like the bench's (`bench message <clientMsgId>`).
 */
export async function sqliteAlone({ root, dir, rows, batch, groups }) {
  const { openDatabase } = await import(pathToFileURL(join(root, 'dist/shard/storage/database.js')).href);
  const { MESSAGE_SQL } = await import(pathToFileURL(join(root, 'dist/shard/storage/message-sql.js')).href);
  fs.rmSync(dir, { recursive: true, force: true });
  const { db } = openDatabase(dir, join(dir, 'sqlite-alone.db'));
  try {
    const now = Date.now();
    const putGroup = db.prepare(
      `INSERT INTO groups (id, subject, owner, capacity, overflow, closed, epoch, last_msg_id, member_count, parent, created_at, updated_at)
       VALUES (?, ?, 'bench', 1250, 'reject', 0, 'e0', 0, 0, NULL, ?, ?)`,
    );
    const ids = Array.from({ length: groups }, (_, i) => `alone-${i}`);
    db.transaction(() => {
      for (const id of ids) putGroup.run(id, id, now, now);
    })();
    const st = {
      groupHead: db.prepare(MESSAGE_SQL.groupHead),
      byClientId: db.prepare(MESSAGE_SQL.byClientId),
      insertMessage: db.prepare(MESSAGE_SQL.insertMessage),
      setLast: db.prepare(MESSAGE_SQL.setLast),
    };
    let n = 0;
    const runBatch = db.transaction((size) => {
      const heads = new Map();
      for (let i = 0; i < size; i++, n++) {
        const groupId = ids[n % groups];
        const clientMsgId = `alone-${n}`;
        if (st.byClientId.get(groupId, 'bench', clientMsgId)) throw new Error('duplicate clientMsgId');
        let head = heads.get(groupId);
        if (!head) {
          const row = st.groupHead.get(groupId);
          head = { last: row.last_msg_id, epoch: row.epoch };
          heads.set(groupId, head);
        }
        st.insertMessage.run(
          groupId,
          head.last + 1,
          head.last,
          head.epoch,
          Date.now(),
          'bench',
          `bench message ${clientMsgId}`,
          clientMsgId,
        );
        head.last++;
      }
      for (const [groupId, head] of heads) st.setLast.run(head.last, groupId);
    });
    const size = Math.max(1, Math.round(batch));
    const cpu0 = process.cpuUsage();
    const started = performance.now();
    let batches = 0;
    while (n < rows && (performance.now() - started) / 1000 < MAX_SECONDS) {
      runBatch(Math.min(size, rows - n));
      batches++;
    }
    const seconds = (performance.now() - started) / 1000;
    // This process's CPU (user + system) over the loop: SQLite's own cost per row, with
    // the disk's waits excluded (the bench's client is idle meanwhile).
    const cpu = process.cpuUsage(cpu0);
    const cpuUsPerRow = (cpu.user + cpu.system) / n;
    return { rowsPerS: n / seconds, rows: n, batches, batch: size, seconds, cpuUsPerRow };
  } finally {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
