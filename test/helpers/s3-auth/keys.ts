// The key pairs the test's S3 server knows, and the checks S3 makes of a key before it looks at a
// signature: the key id exists, and an STS key comes with its own session token (and only then).
import { timingSafeEqual } from 'node:crypto';
import { S3Refusal } from './request.js';

/** A secret, or a temporary (STS) key's secret and the session token that must come with it. */
export type KeyPair = string | { secret: string; token: string };

/** Access key id -> its pair. */
export type KeySet = Record<string, KeyPair>;

/** What s3rver itself knows, and what callers that pass no keys of their own get. */
export const DEFAULT_KEYS: KeySet = { S3RVER: 'S3RVER' };

export interface FoundKey {
  accessKeyId: string;
  secret: string;
  token: string | undefined;
}

export function findKey(keys: KeySet, accessKeyId: string): FoundKey {
  const pair = Object.hasOwn(keys, accessKeyId) ? keys[accessKeyId] : undefined;
  if (pair === undefined) {
    throw new S3Refusal(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.', {
      AWSAccessKeyId: accessKeyId,
    });
  }
  return typeof pair === 'string'
    ? { accessKeyId, secret: pair, token: undefined }
    : { accessKeyId, secret: pair.secret, token: pair.token };
}

/** A session token must come with an STS key, be its own, and never come with a long-term key. */
export function checkToken(key: FoundKey, provided: string | undefined): void {
  if (key.token === undefined && provided === undefined) return;
  if (key.token !== undefined && provided !== undefined && sameText(key.token, provided)) return;
  throw new S3Refusal(403, 'InvalidToken', 'The provided token is malformed or otherwise invalid.');
}

/** Equal strings, compared in constant time as a server compares secrets. */
export function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
