/**
 * Authentication (docs/architecture.md section 4): JWT HS256 with `sub` = userId and `exp`
 * required, from `Authorization: Bearer` or `?token=` on WebSocket upgrades. In local
 * mode (`auth.devTokens`) the shard also signs tokens for any valid id.
 */
import { errors, jwtVerify, SignJWT } from 'jose';
import { ApiError } from '../../common/http-answers.js';
import { isClientId } from '../../common/protocol.js';

export interface AuthOptions {
  secret: string;
  issuer?: string | undefined;
  audience?: string | undefined;
}

/** Verified tokens kept, so that a client's every request does not pay for HMAC verification again. */
const CACHE_SIZE = 10_000;

export class Authenticator {
  private readonly key: Uint8Array;
  /** token -> [userId, exp in ms]; insertion-ordered, oldest evicted first. */
  private readonly cache = new Map<string, [string, number]>();

  constructor(private readonly o: AuthOptions) {
    if (Buffer.byteLength(o.secret) < 32) {
      throw new Error('SHARDCHAT_AUTH_SECRET must be at least 32 bytes');
    }
    this.key = new TextEncoder().encode(o.secret);
  }

  /** The userId a token proves, or a 401 ApiError. */
  async verify(token: string | undefined): Promise<string> {
    if (!token)
      throw new ApiError(401, 'unauthenticated', 'a bearer token is required', {
        'www-authenticate': 'Bearer',
      });
    const hit = this.cache.get(token);
    if (hit) {
      if (hit[1] > Date.now()) return hit[0];
      this.cache.delete(token);
    }
    try {
      const { payload } = await jwtVerify(token, this.key, {
        algorithms: ['HS256'],
        requiredClaims: ['exp', 'sub'],
        ...(this.o.issuer ? { issuer: this.o.issuer } : {}),
        ...(this.o.audience ? { audience: this.o.audience } : {}),
      });
      const sub = payload.sub;
      if (typeof sub !== 'string' || !isClientId(sub))
        throw new ApiError(401, 'invalid_token', 'the token names no valid user');
      if (this.cache.size >= CACHE_SIZE) this.cache.delete(this.cache.keys().next().value as string);
      this.cache.set(token, [sub, (payload.exp as number) * 1000]);
      return sub;
    } catch (err) {
      if (err instanceof ApiError) throw err;
      const expired = err instanceof errors.JWTExpired;
      throw new ApiError(
        401,
        expired ? 'token_expired' : 'invalid_token',
        expired ? 'the token has expired' : 'the token is not valid',
        {
          'www-authenticate': 'Bearer error="invalid_token"',
        },
      );
    }
  }

  async sign(userId: string, ttlSeconds = 30 * 24 * 3600): Promise<string> {
    let jwt = new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(userId)
      .setIssuedAt()
      .setExpirationTime(`${ttlSeconds}s`);
    if (this.o.issuer) jwt = jwt.setIssuer(this.o.issuer);
    if (this.o.audience) jwt = jwt.setAudience(this.o.audience);
    return jwt.sign(this.key);
  }
}

/** The bearer token of a request: the Authorization header, or `token` in the query (upgrades). */
export function tokenOf(authorization: string | undefined, queryToken: unknown): string | undefined {
  if (authorization) {
    const m = /^Bearer\s+(\S+)$/i.exec(authorization);
    return m ? m[1] : undefined;
  }
  return typeof queryToken === 'string' && queryToken ? queryToken : undefined;
}
