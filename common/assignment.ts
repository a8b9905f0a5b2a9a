/** Assignment of a 64-bit hash to one of S shards (docs/architecture.md section 1, step 3). */

export type Assignment = 'modulo' | 'jump';

const MASK64 = (1n << 64n) - 1n;
const JUMP_MULTIPLIER = 2862933555777941757n;

/** `h mod S` on the full 64 bits. */
export function moduloShard(hash: bigint, shards: number): number {
  return Number(hash % BigInt(shards));
}

/**
 * Jump Consistent Hash (Lamping and Veach, 2014): growing from S to S+1 buckets moves
 * exactly the keys that land in the new bucket.
 */
export function jumpShard(hash: bigint, shards: number): number {
  let key = hash;
  let b = -1;
  let j = 0;
  while (j < shards) {
    b = j;
    key = (key * JUMP_MULTIPLIER + 1n) & MASK64;
    // The same floating-point steps as the reference: (b + 1) * (2^31 / ((key >> 33) + 1)).
    j = Math.floor((b + 1) * (2147483648 / (Number(key >> 33n) + 1)));
  }
  return b;
}

export function assign(hash: bigint, shards: number, assignment: Assignment): number {
  if (!Number.isInteger(shards) || shards < 1)
    throw new RangeError(`shard count must be a positive integer, got ${shards}`);
  return assignment === 'jump' ? jumpShard(hash, shards) : moduloShard(hash, shards);
}
