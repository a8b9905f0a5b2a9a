/**
 * The secrets a chat shard needs (README "Configuration"): `shard --check-config` refuses
 * what would stop startShard (shard/server.ts) at start.
 */
import { Authenticator } from '../shard/api/auth.js';

/** Why a shard would not start with this environment's secrets; empty when it would. */
export function shardSecretProblems(env: NodeJS.ProcessEnv = process.env): string[] {
  const problems: string[] = [];
  const secret = env.SHARDCHAT_AUTH_SECRET;
  if (!secret) {
    problems.push('SHARDCHAT_AUTH_SECRET is not set: the shard cannot check tokens');
  } else {
    try {
      // The shard's own rule on the key (its length), not a copy of it.
      new Authenticator({ secret });
    } catch (err) {
      problems.push(`${(err as Error).message} (it has ${Buffer.byteLength(secret)})`);
    }
  }
  if (!env.SHARDCHAT_INTERNAL_TOKEN)
    problems.push('SHARDCHAT_INTERNAL_TOKEN is not set: shards cannot call each other');
  return problems;
}
