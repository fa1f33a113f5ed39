// Which of S3's ways of signing a request was used, and whose key signed it: one way per request
// (the Authorization header, or a V4 or V2 presigned query), or none (an anonymous request).
import type { FoundKey, KeySet } from './keys.js';
import { header, queryParams, S3Refusal, splitUrl, type SignedRequest } from './request.js';
import { verifyV2Header, verifyV2Query } from './sigv2.js';
import { V4_ALGORITHM, verifyV4Header, verifyV4Query } from './sigv4.js';

export type SigningWay = 'v4-header' | 'v2-header' | 'v4-query' | 'v2-query';

export function signingWay(req: SignedRequest): SigningWay | undefined {
  const names = new Set(queryParams(splitUrl(req.url).rawQuery).map(([k]) => k));
  const auth = header(req.headers, 'authorization');
  const ways: SigningWay[] = [];
  if (auth !== undefined) {
    if (auth.startsWith(`${V4_ALGORITHM} `)) ways.push('v4-header');
    else if (auth.startsWith('AWS ')) ways.push('v2-header');
    else throw new S3Refusal(400, 'InvalidArgument', 'Unsupported Authorization Type', { ArgumentName: 'Authorization' });
  }
  if (names.has('X-Amz-Algorithm')) ways.push('v4-query');
  if (names.has('Signature')) ways.push('v2-query');
  if (ways.length > 1) {
    throw new S3Refusal(400, 'InvalidArgument',
      'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified');
  }
  return ways[0];
}

/** The key id the request names, for the record of a refusal. */
function claimedKeyId(req: SignedRequest, way: SigningWay): string | undefined {
  const auth = header(req.headers, 'authorization') ?? '';
  const param = (name: string) => queryParams(splitUrl(req.url).rawQuery).find(([k]) => k === name)?.[1];
  switch (way) {
    case 'v4-header': return /Credential=([^/,\s]+)\//.exec(auth)?.[1];
    case 'v2-header': return /^AWS ([^:\s]+):/.exec(auth)?.[1];
    case 'v4-query': return param('X-Amz-Credential')?.split('/')[0];
    case 'v2-query': return param('AWSAccessKeyId');
  }
}

/** The key that signed the request, undefined for an anonymous one; S3Refusal when S3 would refuse it. */
export async function authenticate(req: SignedRequest, keys: KeySet, now: Date): Promise<{ way: SigningWay; key: FoundKey } | undefined> {
  const way = signingWay(req);
  if (way === undefined) return undefined;
  try {
    return { way, key: await verify(req, way, keys, now) };
  } catch (err) {
    if (err instanceof S3Refusal) err.accessKeyId ??= claimedKeyId(req, way);
    throw err;
  }
}

async function verify(req: SignedRequest, way: SigningWay, keys: KeySet, now: Date): Promise<FoundKey> {
  switch (way) {
    case 'v4-header': return verifyV4Header(req, keys, now);
    case 'v4-query': return verifyV4Query(req, keys, now);
    case 'v2-header': return verifyV2Header(req, keys, now);
    case 'v2-query': return verifyV2Query(req, keys, now);
  }
}
