// Who signed an ECS API request, checked as Alibaba Cloud's gateway checks it: a well-formed V3
// Authorization covering every header that matters, a fresh date, a known key (an STS key only
// with its own token and before its Expiration), the right signature, and a nonce never seen.
import type { IncomingHttpHeaders } from 'node:http';
import type { KeyRing } from './keys.js';
import { checkSignature, parseAuthorization, REQUIRED_SIGNED_HEADERS, sha256hex, type RequestToVerify } from './signature.js';
import { AcsError, refuse } from './wire.js';

/** How far x-acs-date may be from the server's clock, either way. */
export const MAX_CLOCK_SKEW_MS = 15 * 60_000;

export interface Caller {
  accessKeyId: string;
  securityToken?: string;
}

const header = (h: IncomingHttpHeaders, name: string): string | undefined => {
  const v = h[name];
  return Array.isArray(v) ? v.join(',') : v;
};

/**
 * Nonces seen with a valid signature. A nonce can be forgotten once a request carrying it would
 * be refused for its date anyway: MAX_CLOCK_SKEW_MS after that date, plus the skew the other way.
 */
export class NonceBook {
  private readonly seen = new Map<string, number>();

  /** False if the nonce was used already; records it otherwise. */
  use(nonce: string, now: number): boolean {
    if (this.seen.size > 10_000) for (const [n, t] of this.seen) if (now - t > 2 * MAX_CLOCK_SKEW_MS) this.seen.delete(n);
    if (this.seen.has(nonce)) return false;
    this.seen.set(nonce, now);
    return true;
  }
}

function checkDate(value: string | undefined, now: number): void {
  if (!value || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(value) || Number.isNaN(Date.parse(value))) {
    throw new AcsError('InvalidTimeStamp.Format', 400, 'Specified time stamp or date value is not well formatted.');
  }
  if (Math.abs(Date.parse(value) - now) > MAX_CLOCK_SKEW_MS) {
    throw new AcsError('InvalidTimeStamp.Expired', 400, 'Specified time stamp or date value is expired.');
  }
}

/** The secret to check the signature with, after the checks that need the key but not the signature. */
function secretFor(keys: KeyRing, accessKeyId: string, token: string | undefined, now: number): string {
  const key = keys.lookup(accessKeyId);
  if (!key) throw new AcsError('InvalidAccessKeyId.NotFound', 404, 'Specified access key is not found.');
  if (key.kind === 'static') {
    // A token names a temporary key; with a long-term key it can only be someone else's.
    if (token !== undefined) throw new AcsError('InvalidSecurityToken.MismatchWithAccessKey', 400, 'Specified SecurityToken mismatch with the AccessKey.');
    return key.secret;
  }
  // (Our choice of code for a temporary key sent without its token: the gateway cannot decode a token that is not there.)
  if (token === undefined) throw new AcsError('InvalidSecurityToken.Malformed', 400, 'Specified SecurityToken is malformed.');
  if (token !== key.triple.securityToken) {
    throw new AcsError('InvalidSecurityToken.MismatchWithAccessKey', 400, 'Specified SecurityToken mismatch with the AccessKey.');
  }
  if (now >= key.triple.expiresAt) throw new AcsError('InvalidSecurityToken.Expired', 400, 'Specified SecurityToken is expired.');
  return key.triple.accessKeySecret;
}

export function authenticate(req: RequestToVerify, keys: KeyRing, nonces: NonceBook, now: number): Caller {
  const auth = parseAuthorization(header(req.headers, 'authorization'));
  const token = header(req.headers, 'x-acs-security-token');
  const signedByClient = header(req.headers, 'x-acs-accesskey-id');
  const mustSign = [...REQUIRED_SIGNED_HEADERS];
  if (token !== undefined) mustSign.push('x-acs-security-token');
  if (signedByClient !== undefined) mustSign.push('x-acs-accesskey-id');
  const unsigned = mustSign.filter((h) => !auth.signedHeaders.includes(h));
  if (unsigned.length) throw refuse.incompleteSignature(`SignedHeaders must include ${unsigned.join(', ')}`);
  if (signedByClient !== undefined && signedByClient !== auth.accessKeyId) {
    throw refuse.incompleteSignature('x-acs-accesskey-id is not the key of Credential');
  }
  checkDate(header(req.headers, 'x-acs-date'), now);
  const nonce = header(req.headers, 'x-acs-signature-nonce');
  if (!nonce) throw refuse.incompleteSignature('x-acs-signature-nonce is empty');

  const secret = secretFor(keys, auth.accessKeyId, token, now);
  // The payload hash the client signed must be the body's: otherwise a signed header would vouch for another body.
  if (header(req.headers, 'x-acs-content-sha256') !== sha256hex(req.body)) {
    throw new AcsError('SignatureDoesNotMatch', 400, 'Specified signature is not matched with our calculation. (x-acs-content-sha256 is not the sha256 of the body)');
  }
  const sig = checkSignature(req, auth, secret);
  if (!sig.ok) {
    // As the real gateway does, the message shows the server's string to sign (no secret in it).
    throw new AcsError('SignatureDoesNotMatch', 400, `Specified signature is not matched with our calculation. server string to sign is:${sig.stringToSign}`);
  }
  // Only a validly signed request spends its nonce, so that garbage cannot burn someone's nonces.
  if (!nonces.use(nonce, now)) {
    throw new AcsError('SignatureNonceUsed', 400, 'Specified signature nonce was used already.');
  }
  return token === undefined ? { accessKeyId: auth.accessKeyId } : { accessKeyId: auth.accessKeyId, securityToken: token };
}
