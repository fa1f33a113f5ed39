// ACS3-HMAC-SHA256, the request signature the ECS SDK sends by default (V3), computed here
// independently of the SDK so that a test does not check the SDK's signer against itself:
//
//   CanonicalRequest = METHOD \n PATH \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n sha256hex(body)
//   StringToSign     = "ACS3-HMAC-SHA256" \n sha256hex(CanonicalRequest)
//   Signature        = hex(HMAC-SHA256(secret, StringToSign))     (the plain secret, not secret + '&' as in V2)
//
// CanonicalQuery: every parameter, decoded, sorted by name, `name=enc(value)` joined by '&', where
// enc is RFC 3986 encoding (encodeURIComponent plus ! ' ( ) *). CanonicalHeaders: each name of
// SignedHeaders, in the order given, as `name:trimmed value\n`.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { refuse } from './wire.js';

export const ALGORITHM = 'ACS3-HMAC-SHA256';

/** What any V3 request must have signed, so that none of it can be changed on the way. */
export const REQUIRED_SIGNED_HEADERS = ['host', 'x-acs-action', 'x-acs-content-sha256', 'x-acs-date', 'x-acs-signature-nonce', 'x-acs-version'];

export interface Authorization {
  accessKeyId: string;
  signedHeaders: string[];
  signature: string;
}

export interface RequestToVerify {
  method: string;
  path: string;
  /** Decoded, in the order received; repeated names are all signed. */
  query: Array<[string, string]>;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

const AUTHORIZATION = /^ACS3-HMAC-SHA256 Credential=([^,\s]+),SignedHeaders=([a-z0-9-]+(?:;[a-z0-9-]+)*),Signature=([0-9a-f]{64})$/;

/** The Authorization header's parts, or IncompleteSignature for anything else (V2, other algorithms, garble). */
export function parseAuthorization(value: string | undefined): Authorization {
  if (!value) throw refuse.incompleteSignature('no Authorization header');
  const m = AUTHORIZATION.exec(value);
  if (!m) throw refuse.incompleteSignature(`Authorization is not "${ALGORITHM} Credential=..,SignedHeaders=..,Signature=<64 hex>"`);
  return { accessKeyId: m[1]!, signedHeaders: m[2]!.split(';'), signature: m[3]! };
}

export const sha256hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

const rfc3986 = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export function canonicalQuery(query: Array<[string, string]>): string {
  return query
    .map(([k, v]) => [rfc3986(k), rfc3986(v)] as const)
    .sort(([ka, va], [kb, vb]) => byCodePoint(ka, kb) || byCodePoint(va, vb))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

function headerValue(headers: IncomingHttpHeaders, name: string): string {
  const v = headers[name];
  if (v === undefined) throw refuse.incompleteSignature(`SignedHeaders names ${name}, which the request does not have`);
  return (Array.isArray(v) ? v.join(',') : v).trim();
}

export function stringToSign(req: RequestToVerify, signedHeaders: string[]): string {
  const canonicalHeaders = signedHeaders.map((n) => `${n}:${headerValue(req.headers, n)}\n`).join('');
  const canonicalRequest = [req.method, req.path, canonicalQuery(req.query), canonicalHeaders, signedHeaders.join(';'), sha256hex(req.body)].join('\n');
  return `${ALGORITHM}\n${sha256hex(canonicalRequest)}`;
}

/** Whether `auth.signature` is the one `secret` gives for this request; the string to sign either way. */
export function checkSignature(req: RequestToVerify, auth: Authorization, secret: string): { ok: boolean; stringToSign: string } {
  const sts = stringToSign(req, auth.signedHeaders);
  const want = createHmac('sha256', secret).update(sts).digest();
  const got = Buffer.from(auth.signature, 'hex');
  return { ok: got.length === want.length && timingSafeEqual(got, want), stringToSign: sts };
}
