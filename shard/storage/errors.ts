/** What goes wrong with the shard's storage, as errors the API maps to answers (503, or 404 for no_group). */

/** A disk or database trouble (`storage_full`, `storage_readonly`, `storage_failed`), or `no_group`. */
export class StorageError extends Error {
  override name = 'StorageError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** What every write answers when the store was opened read-only (503 to clients). */
export function readOnlyError(): StorageError {
  return new StorageError(
    "the shard's data volume is read-only: reads are served, writes are refused until the volume is writable again and the shard restarted",
    'storage_readonly',
  );
}

/** Maps SQLite's disk errors to StorageError (503 to clients), others pass. */
export function storageError(err: unknown): Error {
  const code = (err as { code?: string }).code ?? '';
  if (code === 'SQLITE_FULL') return new StorageError("the shard's disk is full", 'storage_full');
  if (code.startsWith('SQLITE_READONLY'))
    return new StorageError("the shard's storage is read-only", 'storage_readonly');
  if (code.startsWith('SQLITE_IOERR') || code === 'SQLITE_CANTOPEN' || code === 'SQLITE_CORRUPT') {
    return new StorageError(`the shard's storage failed (${code})`, 'storage_failed');
  }
  return err as Error;
}

/** An error as it crosses from the writer thread: SQLite's code (SQLITE_FULL, …) or one of ours (no_group). */
export interface WireError {
  message: string;
  code: string;
}

/** An error from the writer thread, mapped as storageError does. */
export function wireError(e: WireError): Error {
  if (e.code === 'no_group') return new StorageError(e.message, 'no_group');
  return storageError(Object.assign(new Error(e.message), { code: e.code }));
}
