/**
 * XXH64 (seed 0) of a key's UTF-8 bytes, as an unsigned 64-bit bigint.
 *
 * Backed by xxhash-wasm: measured against @node-rs/xxhash (native) in
 * bench/hash.mjs, the WebAssembly build hashing a JS string directly is the fastest
 * option here and needs no native addon.
 */
import xxhash from 'xxhash-wasm';

type H64 = (input: string, seed?: bigint) => bigint;
let h64: H64 | undefined;

/** Loads the WebAssembly module once; every process calls it before hashing. */
export async function initHash(): Promise<void> {
  if (!h64) h64 = (await xxhash()).h64;
}

/** XXH64 of the UTF-8 bytes of `key`, seed 0. `initHash()` must have resolved. */
export function xxh64(key: string): bigint {
  if (!h64) throw new Error('xxh64 used before initHash() resolved');
  return h64(key);
}
