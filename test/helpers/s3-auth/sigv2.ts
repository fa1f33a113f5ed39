// Signature V2 (`Authorization: AWS AKID:base64`, what s3fs sends with -o sigv2, and the older
// presigned URLs): HMAC-SHA1 of the string to sign of Amazon's "Signing and Authenticating REST
// Requests". Hand-written: no maintained library checks V2 any more (AWS deprecated it), and it is
// one HMAC over a few lines. Path-style requests only: the server is reached by IP address, and
// ossnas asks s3fs for path-style requests to such endpoints.
import { createHmac } from 'node:crypto';
import { checkToken, findKey, sameText, type FoundKey, type KeySet } from './keys.js';
import { header, queryParams, S3Refusal, splitUrl, type SignedRequest } from './request.js';
import { checkSkew } from './time.js';

/** Query parameters that name what is acted on, and so are signed (the rest of the query is not). */
const SUBRESOURCES = new Set([
  'acl', 'cors', 'delete', 'lifecycle', 'location', 'logging', 'notification', 'partNumber', 'policy', 'requestPayment',
  'restore', 'tagging', 'torrent', 'uploadId', 'uploads', 'versionId', 'versioning', 'versions', 'website',
  'response-cache-control', 'response-content-disposition', 'response-content-encoding', 'response-content-language',
  'response-content-type', 'response-expires',
]);

export function stringToSignV2(req: SignedRequest, dateLine: string): string {
  const amzHeaders = Object.keys(req.headers)
    .filter((h) => h.startsWith('x-amz-'))
    .sort()
    .map((h) => `${h}:${header(req.headers, h)!.replace(/\s*\n\s*/g, ' ').trim()}\n`)
    .join('');
  const { path, rawQuery } = splitUrl(req.url);
  const sub = queryParams(rawQuery)
    .filter(([k]) => SUBRESOURCES.has(k))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => (v === '' ? k : `${k}=${v}`))
    .join('&');
  const h = (name: string) => header(req.headers, name) ?? '';
  return `${req.method}\n${h('content-md5')}\n${h('content-type')}\n${dateLine}\n${amzHeaders}${path}${sub ? `?${sub}` : ''}`;
}

const signV2 = (secret: string, text: string) => createHmac('sha1', secret).update(text, 'utf8').digest('base64');

function check(req: SignedRequest, key: FoundKey, dateLine: string, provided: string, token: string | undefined): FoundKey {
  checkToken(key, token);
  const text = stringToSignV2(req, dateLine);
  if (!sameText(signV2(key.secret, text), provided)) {
    throw new S3Refusal(403, 'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
      { AWSAccessKeyId: key.accessKeyId, StringToSign: text, SignatureProvided: provided });
  }
  return key;
}

/** `AWS AKID:signature` */
export function verifyV2Header(req: SignedRequest, keys: KeySet, now: Date): FoundKey {
  const m = /^AWS ([^:\s]+):(\S+)$/.exec(header(req.headers, 'authorization')!);
  if (!m) throw new S3Refusal(400, 'InvalidArgument', 'AWS authorization header is invalid.  Expected AwsAccessKeyId:signature');
  const key = findKey(keys, m[1]!);
  // With x-amz-date the Date header is not signed: x-amz-date is, among the x-amz- headers.
  const amzDate = header(req.headers, 'x-amz-date');
  const dateText = amzDate ?? header(req.headers, 'date');
  const date = dateText === undefined ? undefined : new Date(dateText);
  if (!date || Number.isNaN(date.getTime())) {
    throw new S3Refusal(403, 'AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header');
  }
  checkSkew(date, dateText!, now);
  return check(req, key, amzDate === undefined ? dateText! : '', m[2]!, header(req.headers, 'x-amz-security-token'));
}

/** ?AWSAccessKeyId=...&Expires=<unix seconds>&Signature=... : the expiry time signed in the Date's place. */
export function verifyV2Query(req: SignedRequest, keys: KeySet, now: Date): FoundKey {
  const params = queryParams(splitUrl(req.url).rawQuery);
  const get = (name: string) => params.find(([k]) => k === name)?.[1];
  const [accessKeyId, expires, signature] = ['AWSAccessKeyId', 'Expires', 'Signature'].map(get);
  if (!accessKeyId || !expires || !signature) {
    throw new S3Refusal(403, 'AccessDenied', 'Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters');
  }
  const key = findKey(keys, accessKeyId);
  if (!/^\d+$/.test(expires)) throw new S3Refusal(403, 'AccessDenied', `Invalid date (should be seconds since epoch): ${expires}`);
  if (now.getTime() > Number(expires) * 1000) throw new S3Refusal(403, 'AccessDenied', 'Request has expired');
  return check(req, key, expires, signature, header(req.headers, 'x-amz-security-token'));
}
