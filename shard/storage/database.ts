/**
 * Opening the shard's SQLite file: read-write in WAL mode with `synchronous=FULL` and
 * the migrations applied, or, on a read-only volume, read-only (reads served, writes
 * refused) when the schema is current.
 */
import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { MIGRATIONS } from './schema.js';

/**
 * Every better-sqlite3 Database and Statement this process creates, kept reachable for
 * the life of the process. better-sqlite3 12 wraps them in node::ObjectWrap, and on
 * Node.js 24.19+ an ObjectWrap finalized by a garbage collection that runs outside a
 * JavaScript context aborts the process (`RemoveEnvironmentCleanupHook: Assertion
 * failed: (env) != nullptr`; better-sqlite3 13 fixes it but needs Node 22). Seen here:
 * a shard aborted at start while a large module loaded. So no statement is ever left
 * to the collector: statements are prepared once and kept, pragmas go through exec().
 */
const NATIVE_OBJECTS = new Set<object>();

/** Keeps a native object (database, statement) reachable for the life of the process. */
export function keep<T extends object>(o: T): T {
  NATIVE_OBJECTS.add(o);
  return o;
}

// URI file names (`file:…?immutable=1`, used to read a database on a read-only volume)
// are off in better-sqlite3's build unless SQLITE_USE_URI=1 when its native addon loads,
// which is on the first `new Database`. Plain paths mean the same either way.
process.env.SQLITE_USE_URI ??= '1';

/** Whether opening read-write failed because the volume is read-only. */
function isReadOnlyCause(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return (
    typeof code === 'string' &&
    (code === 'EROFS' || code === 'SQLITE_CANTOPEN' || code.startsWith('SQLITE_READONLY'))
  );
}

function fileSize(file: string): number | undefined {
  try {
    return statSync(file).size;
  } catch {
    return undefined;
  }
}

/**
 * Opens the database of a read-only volume for reading, or throws why it cannot. A plain
 * read-only open needs the `-shm` file of a WAL database (left by a process that was
 * killed, with its `-wal`); after a clean shutdown neither exists and neither can be
 * created, so the file is opened `immutable` (no locks, no WAL), which is exact only
 * when there is no WAL content: a `-wal` with commits but no `-shm` is refused.
 */
function openReadOnly(file: string, cause: unknown): Database.Database {
  const why = (e: unknown) => (e as Error).message ?? String(e);
  const open = (name: string): Database.Database => {
    const db = keep(new Database(name, { readonly: true, fileMustExist: true }));
    try {
      // The first read opens the WAL index: a failure shows here, not in the constructor.
      db.exec('PRAGMA schema_version');
      return db;
    } catch (err) {
      db.close();
      throw err;
    }
  };
  try {
    return open(file);
  } catch (first) {
    const wal = fileSize(`${file}-wal`) ?? 0;
    if (fileSize(file) === undefined || wal > 0) {
      throw new Error(
        `cannot open ${file}: the volume is read-only (${why(cause)}), and ${
          wal > 0
            ? 'the write-ahead log holds commits that only a writable volume can recover'
            : 'there is no database to read'
        } (${why(first)})`,
      );
    }
    const uri = `file:${path.resolve(file).split(path.sep).map(encodeURIComponent).join('/')}?immutable=1`;
    try {
      return open(uri);
    } catch (second) {
      throw new Error(
        `cannot open ${file} read-only on a read-only volume (${why(cause)}): ${why(first)}; immutable: ${why(second)}`,
      );
    }
  }
}

function schemaVersion(db: Database.Database): number {
  return keep(db.prepare('PRAGMA user_version').pluck()).get() as number;
}

/**
 * The pending migrations in one transaction: all or none, and one commit (one fsync) where
 * a commit per migration made a new shard wait for four fsyncs before it listened, each
 * slow on a disk busy with other writers.
 */
function migrate(db: Database.Database): void {
  const from = schemaVersion(db);
  if (from >= MIGRATIONS.length) return;
  db.transaction(() => {
    for (let v = from; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v] as string);
    db.exec(`PRAGMA user_version = ${MIGRATIONS.length}`);
  })();
}

/** Opens (creating and migrating) `file` in `dataDir`; read-only when the volume is. */
export function openDatabase(dataDir: string, file: string): { db: Database.Database; readOnly: boolean } {
  let db: Database.Database | undefined;
  try {
    mkdirSync(dataDir, { recursive: true });
    // A read-only volume (EROFS) is told at once: SQLite may open a WAL database there
    // "read-write" when its -shm exists, and fail only at the first write.
    accessSync(dataDir, constants.W_OK);
    db = keep(new Database(file));
    // Pragmas through exec(): db.pragma() prepares a throwaway statement (see NATIVE_OBJECTS).
    db.exec(
      'PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000',
    );
    migrate(db);
    return { db, readOnly: false };
  } catch (err) {
    if (!isReadOnlyCause(err)) throw err;
    db?.close();
    // Read-only volume: no WAL pragma, no migrations; the schema must be current.
    const ro = openReadOnly(file, err);
    const version = schemaVersion(ro);
    if (version < MIGRATIONS.length) {
      ro.close();
      throw new Error(
        `cannot serve ${file} from a read-only volume: its schema (version ${version}) is older than this code's (${MIGRATIONS.length}) and cannot be migrated there`,
      );
    }
    return { db: ro, readOnly: true };
  }
}

/** Bytes of a database and its WAL on disk. */
export function databaseBytes(file: string): number {
  return (fileSize(file) ?? 0) + (fileSize(`${file}-wal`) ?? 0);
}
