// Signature V4, in the Authorization header (what s3fs sends by default) or a presigned URL's
// query. The signature is not recomputed by hand: the request is signed again with
// @smithy/signature-v4, AWS's own signer (the AWS SDK for JavaScript's), with the secret of the key
// it names, at its own x-amz-date, over exactly the headers it lists as signed and the payload
// hash it declares; the two signatures must be equal. Only the checks S3 makes around the
// signature (scope, dates, token) are ours.
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { checkToken, findKey, sameText, type FoundKey, type KeySet } from './keys.js';
import { header, malformed, queryParams, S3Refusal, splitUrl, type SignedRequest } from './request.js';
import { checkSkew, parseAmzDate } from './time.js';

export const V4_ALGORITHM = 'AWS4-HMAC-SHA256';
const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
const MAX_PRESIGNED_SECONDS = 7 * 24 * 3600;
/** The query parameters of a presigned URL that the signer adds itself. */
const PRESIGN_PARAMS = ['X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders', 'X-Amz-Signature', 'X-Amz-Security-Token'];

/** Credential=AKID/20130524/us-east-1/s3/aws4_request */
interface Scope {
  accessKeyId: string;
  day: string;
  region: string;
}

function parseScope(credential: string): Scope {
  const parts = credential.split('/');
  if (parts.length !== 5 || !parts[0] || parts[4] !== 'aws4_request') {
    throw malformed(`The credential is malformed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".`);
  }
  if (parts[3] !== 's3') throw malformed(`The credential is mis-scoped for service '${parts[3]}'; expecting 's3'.`);
  return { accessKeyId: parts[0], day: parts[1]!, region: parts[2]! };
}

/** `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=a;b, Signature=hex` */
function parseAuthorization(value: string): { scope: Scope; signedHeaders: string[]; signature: string } {
  const fields = new Map<string, string>();
  for (const part of value.slice(V4_ALGORITHM.length).split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (!credential || !signedHeaders || !signature) {
    throw malformed('The authorization header is malformed; the authorization header requires three components: Credential, SignedHeaders, and Signature.');
  }
  return { scope: parseScope(credential), signedHeaders: signedHeaders.split(';'), signature };
}

function checkSignedHeaders(signedHeaders: string[]): void {
  if (!signedHeaders.includes('host')) throw malformed(`'host' must be a SignedHeader in the AWS Authorization.`);
  // The signer drops a `date` header (the date it signs is x-amz-date, which it writes itself), so
  // a request that signs one cannot be signed again alike: S3 allows it, s3fs does not do it.
  if (signedHeaders.includes('date')) throw new S3Refusal(501, 'NotImplemented', 'the test server cannot check a signed Date header');
}

function checkDay(scope: Scope, amzDate: string): void {
  if (scope.day !== amzDate.slice(0, 8)) {
    throw malformed(`Invalid credential date "${scope.day}". This date is not the same as X-Amz-Date: "${amzDate.slice(0, 8)}".`);
  }
}

/** The query as the signer takes it: decoded, a repeated name as a list. */
function signerQuery(params: Array<[string, string]>): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of params) {
    const had = query[k];
    query[k] = had === undefined ? v : [...(Array.isArray(had) ? had : [had]), v];
  }
  return query;
}

/**
 * The request as the signer takes it, with every header it came with, and the options that make
 * the signer sign exactly the ones the client listed: the others go to `unsignableHeaders`, the
 * listed ones to `signableHeaders` (which also overrides the signer's own list of headers it never
 * signs, user-agent for one). The path is taken as sent (`uriEscapePath: false`, S3's rule: no
 * second encoding, no normalisation).
 */
function toSign(req: SignedRequest, params: Array<[string, string]>, signedHeaders: string[], payloadHash: string) {
  const headers: Record<string, string> = {};
  for (const name of Object.keys(req.headers)) headers[name] = header(req.headers, name)!;
  // The signer takes the payload hash from this header (or hashes a body, which it has none of).
  headers['x-amz-content-sha256'] = payloadHash;
  const signed = new Set(signedHeaders);
  return {
    request: { method: req.method, protocol: 'http:', hostname: '', path: splitUrl(req.url).path, query: signerQuery(params), headers },
    signableHeaders: signed,
    unsignableHeaders: new Set(Object.keys(headers).filter((h) => !signed.has(h))),
  };
}

function signer(key: FoundKey, scope: Scope, sessionToken?: string): SignatureV4 {
  return new SignatureV4({
    service: 's3',
    region: scope.region,
    credentials: { accessKeyId: key.accessKeyId, secretAccessKey: key.secret, ...(sessionToken !== undefined && { sessionToken }) },
    sha256: Hash.bind(null, 'sha256'),
    uriEscapePath: false,
    applyChecksum: false,
  });
}

function mismatch(key: FoundKey, provided: string): S3Refusal {
  return new S3Refusal(403, 'SignatureDoesNotMatch',
    'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
    { AWSAccessKeyId: key.accessKeyId, SignatureProvided: provided });
}

export async function verifyV4Header(req: SignedRequest, keys: KeySet, now: Date): Promise<FoundKey> {
  const { scope, signedHeaders, signature } = parseAuthorization(header(req.headers, 'authorization')!);
  const key = findKey(keys, scope.accessKeyId);
  const amzDate = header(req.headers, 'x-amz-date');
  const date = parseAmzDate(amzDate);
  // S3 also takes a Date header instead; the signer cannot sign one (it drops `date` and writes
  // x-amz-date itself), and s3fs always sends x-amz-date.
  if (!date) throw new S3Refusal(403, 'AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header');
  checkSkew(date, amzDate!, now);
  checkDay(scope, amzDate!);
  checkSignedHeaders(signedHeaders);
  const payloadHash = header(req.headers, 'x-amz-content-sha256');
  if (!payloadHash) throw new S3Refusal(400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
  // aws-chunked bodies carry a signature per chunk, and s3rver would store their framing: no
  // client of these tests sends them.
  if (payloadHash.startsWith('STREAMING-')) throw new S3Refusal(501, 'NotImplemented', `the test server does not take ${payloadHash} bodies`);
  checkToken(key, header(req.headers, 'x-amz-security-token'));

  const s = toSign(req, queryParams(splitUrl(req.url).rawQuery), signedHeaders, payloadHash);
  const signed = await signer(key, scope).sign(s.request, {
    signingDate: date,
    signableHeaders: s.signableHeaders,
    unsignableHeaders: s.unsignableHeaders,
  });
  const expected = /Signature=([0-9a-f]+)$/.exec(String(signed.headers.authorization))?.[1] ?? '';
  if (!sameText(expected, signature)) throw mismatch(key, signature);
  return key;
}

export async function verifyV4Query(req: SignedRequest, keys: KeySet, now: Date): Promise<FoundKey> {
  const params = queryParams(splitUrl(req.url).rawQuery);
  const get = (name: string) => params.find(([k]) => k === name)?.[1];
  const queryError = (message: string) => new S3Refusal(400, 'AuthorizationQueryParametersError', message);
  if (get('X-Amz-Algorithm') !== V4_ALGORITHM) throw queryError(`X-Amz-Algorithm only supports "${V4_ALGORITHM}"`);
  const [credential, amzDate, expiresText, signedHeadersText, signature] =
    ['X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders', 'X-Amz-Signature'].map(get);
  if (!credential || !amzDate || !expiresText || !signedHeadersText || !signature) {
    throw queryError('Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.');
  }
  const scope = parseScope(credential);
  const key = findKey(keys, scope.accessKeyId);
  const date = parseAmzDate(amzDate);
  if (!date) throw queryError('X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd\'T\'HHmmss\'Z\'"');
  checkDay(scope, amzDate);
  const expires = Number(expiresText);
  if (!/^\d+$/.test(expiresText) || expires > MAX_PRESIGNED_SECONDS) {
    throw queryError('X-Amz-Expires must be a number of seconds from 0 to 604800');
  }
  if (date.getTime() > now.getTime() + 15 * 60_000) throw new S3Refusal(403, 'AccessDenied', 'Request is not valid yet');
  if (now.getTime() > date.getTime() + expires * 1000) throw new S3Refusal(403, 'AccessDenied', 'Request has expired');
  const signedHeaders = signedHeadersText.split(';');
  checkSignedHeaders(signedHeaders);
  const token = get('X-Amz-Security-Token');
  checkToken(key, token);

  const s = toSign(req, params.filter(([k]) => !PRESIGN_PARAMS.includes(k)), signedHeaders,
    header(req.headers, 'x-amz-content-sha256') ?? UNSIGNED_PAYLOAD);
  const presigned = await signer(key, scope, token).presign(s.request, {
    signingDate: date,
    expiresIn: expires,
    signableHeaders: s.signableHeaders,
    unsignableHeaders: s.unsignableHeaders,
    // Headers stay headers: presign would move x-amz-* ones into the query.
    unhoistableHeaders: new Set(Object.keys(s.request.headers)),
  });
  const expected = String(presigned.query?.['X-Amz-Signature'] ?? '');
  if (!sameText(expected, signature)) throw mismatch(key, signature);
  return key;
}
