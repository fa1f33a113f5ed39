// The signature check in front of the tests' S3 server (test/helpers/s3-auth). Amazon's own
// published examples are accepted; the same requests tampered with, or signed with another
// secret, key, token or clock, are refused with S3's error codes; over HTTP a refused request
// never reaches s3rver, and a verified one reaches it under s3rver's own key id.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, request, type IncomingHttpHeaders, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { authenticate } from '../helpers/s3-auth/authenticate.js';
import { signingFront, type Refusal } from '../helpers/s3-auth/front.js';
import type { KeySet } from '../helpers/s3-auth/keys.js';
import { S3Refusal, type SignedRequest } from '../helpers/s3-auth/request.js';

// The key pair of Amazon's examples ("Examples: Signature Calculations in AWS Signature Version 4"
// and "Signing and Authenticating REST Requests" of the S3 API reference), and their signatures.
const AKID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const KEYS: KeySet = { [AKID]: SECRET };
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const AT_V4 = new Date('2013-05-24T00:00:00Z');
const AT_V2 = new Date('2007-03-27T19:36:42Z');
const v4Auth = (signedHeaders: string, signature: string) =>
  `AWS4-HMAC-SHA256 Credential=${AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders=${signedHeaders},Signature=${signature}`;

const V4_GET: SignedRequest = {
  method: 'GET',
  url: '/test.txt',
  headers: {
    host: 'examplebucket.s3.amazonaws.com',
    range: 'bytes=0-9',
    'x-amz-content-sha256': EMPTY_SHA256,
    'x-amz-date': '20130524T000000Z',
    authorization: v4Auth('host;range;x-amz-content-sha256;x-amz-date', 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41'),
  },
};
const V4_LIST: SignedRequest = {
  method: 'GET',
  url: '/?max-keys=2&prefix=J',
  headers: {
    host: 'examplebucket.s3.amazonaws.com',
    'x-amz-content-sha256': EMPTY_SHA256,
    'x-amz-date': '20130524T000000Z',
    authorization: v4Auth('host;x-amz-content-sha256;x-amz-date', '34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7'),
  },
};
const V4_PRESIGNED: SignedRequest = {
  method: 'GET',
  url: `/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${AKID}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request`
    + '&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host'
    + '&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404',
  headers: { host: 'examplebucket.s3.amazonaws.com' },
};
// Amazon's V2 example is virtual-hosted (johnsmith.s3.amazonaws.com); path-style, the string
// to sign, and so the signature, are the same.
const V2_GET: SignedRequest = {
  method: 'GET',
  url: '/johnsmith/photos/puppy.jpg',
  headers: { host: 's3.amazonaws.com', date: 'Tue, 27 Mar 2007 19:36:42 +0000', authorization: `AWS ${AKID}:bWq2s1WEIj+Ydj0vQ697zp+IXMU=` },
};

function withHeaders(req: SignedRequest, headers: IncomingHttpHeaders): SignedRequest {
  return { ...req, headers: { ...req.headers, ...headers } };
}

/** The S3 error code and status the check answers with, or 'ok' and the key id. */
async function verdict(req: SignedRequest, now: Date, keys: KeySet = KEYS): Promise<string> {
  try {
    const who = await authenticate(req, keys, now);
    return who ? `ok ${who.way} ${who.key.accessKeyId}` : 'anonymous';
  } catch (err) {
    if (err instanceof S3Refusal) return `${err.status} ${err.code}`;
    throw err;
  }
}

const sha256 = Hash.bind(null, 'sha256');
const hex = (body: string) => createHash('sha256').update(body).digest('hex');

describe('S3 signatures: Amazon\'s examples are accepted, and anything changed in them is refused', () => {
  it('V4 in the header, V4 presigned, V2 in the header', async () => {
    assert.equal(await verdict(V4_GET, AT_V4), `ok v4-header ${AKID}`);
    assert.equal(await verdict(V4_LIST, AT_V4), `ok v4-header ${AKID}`);
    assert.equal(await verdict(V4_PRESIGNED, new Date(AT_V4.getTime() + 3600_000)), `ok v4-query ${AKID}`);
    assert.equal(await verdict(V2_GET, AT_V2), `ok v2-header ${AKID}`);
    assert.equal(await verdict({ method: 'GET', url: '/b/k', headers: { host: 'x' } }, AT_V4), 'anonymous');
  });

  it('a header that is not signed may change; anything signed may not', async () => {
    assert.equal(await verdict(withHeaders(V4_GET, { 'user-agent': 'curl', 'x-amz-meta-added': '1' }), AT_V4), `ok v4-header ${AKID}`);
    const tampered: Array<[string, SignedRequest, Date]> = [
      ['V4: another object', { ...V4_GET, url: '/test2.txt' }, AT_V4],
      ['V4: another range', withHeaders(V4_GET, { range: 'bytes=0-99' }), AT_V4],
      ['V4: another host', withHeaders(V4_GET, { host: 'otherbucket.s3.amazonaws.com' }), AT_V4],
      ['V4: another payload hash', withHeaders(V4_GET, { 'x-amz-content-sha256': hex('x') }), AT_V4],
      ['V4: another query', { ...V4_LIST, url: '/?max-keys=3&prefix=J' }, AT_V4],
      ['V4: another method', { ...V4_GET, method: 'DELETE' }, AT_V4],
      ['V4 presigned: another object', { ...V4_PRESIGNED, url: V4_PRESIGNED.url.replace('/test.txt', '/test2.txt') }, AT_V4],
      ['V4 presigned: a longer life', { ...V4_PRESIGNED, url: V4_PRESIGNED.url.replace('Expires=86400', 'Expires=86401') }, AT_V4],
      ['V2: another object', { ...V2_GET, url: '/johnsmith/photos/kitten.jpg' }, AT_V2],
      ['V2: an x-amz- header added (all of them are signed)', withHeaders(V2_GET, { 'x-amz-meta-added': '1' }), AT_V2],
      ['V2: a content type added', withHeaders(V2_GET, { 'content-type': 'text/plain' }), AT_V2],
      ['V2: a subresource added', { ...V2_GET, url: '/johnsmith/photos/puppy.jpg?acl' }, AT_V2],
    ];
    for (const [what, req, now] of tampered) assert.equal(await verdict(req, now), '403 SignatureDoesNotMatch', what);
  });

  it('another secret for the same key id is refused; an unknown key id is refused as unknown', async () => {
    for (const [req, now] of [[V4_GET, AT_V4], [V4_PRESIGNED, AT_V4], [V2_GET, AT_V2]] as const) {
      assert.equal(await verdict(req, now, { [AKID]: `${SECRET}x` }), '403 SignatureDoesNotMatch', req.url);
      assert.equal(await verdict(req, now, { OTHERKEY: SECRET }), '403 InvalidAccessKeyId', req.url);
    }
  });

  it('dates: a clock 15 minutes away, a credential of another day, an expired URL, a missing date', async () => {
    const later = (d: Date, minutes: number) => new Date(d.getTime() + minutes * 60_000);
    assert.equal(await verdict(V4_GET, later(AT_V4, 14)), `ok v4-header ${AKID}`);
    assert.equal(await verdict(V4_GET, later(AT_V4, 16)), '403 RequestTimeTooSkewed');
    assert.equal(await verdict(V4_GET, later(AT_V4, -16)), '403 RequestTimeTooSkewed');
    assert.equal(await verdict(V2_GET, later(AT_V2, 16)), '403 RequestTimeTooSkewed');
    assert.equal(await verdict(V4_PRESIGNED, later(AT_V4, 24 * 60 + 1)), '403 AccessDenied');
    const otherDay = withHeaders(V4_GET, { authorization: String(V4_GET.headers.authorization).replace('/20130524/', '/20130523/') });
    assert.equal(await verdict(otherDay, AT_V4), '400 AuthorizationHeaderMalformed');
    const { 'x-amz-date': _, ...undated } = V4_GET.headers;
    assert.equal(await verdict({ ...V4_GET, headers: undated }, AT_V4), '403 AccessDenied');
  });

  it('what is not a signature S3 takes is refused as malformed', async () => {
    assert.equal(await verdict(withHeaders(V4_GET, { authorization: 'Bearer x' }), AT_V4), '400 InvalidArgument');
    assert.equal(await verdict(withHeaders(V4_GET, { authorization: `AWS4-HMAC-SHA256 Credential=${AKID}/20130524/us-east-1/s3/aws4_request` }), AT_V4),
      '400 AuthorizationHeaderMalformed');
    assert.equal(await verdict(withHeaders(V4_GET, { authorization: String(V4_GET.headers.authorization).replace('/s3/', '/ec2/') }), AT_V4),
      '400 AuthorizationHeaderMalformed');
    assert.equal(await verdict({ ...V4_PRESIGNED, headers: { ...V4_PRESIGNED.headers, authorization: String(V4_GET.headers.authorization) } }, AT_V4),
      '400 InvalidArgument', 'two ways of signing at once');
  });
});

describe('S3 signatures: an STS key\'s session token', () => {
  const keys: KeySet = { STSKEY: { secret: 'sts-secret', token: 'the-token' }, LONGKEY: 'long-secret' };
  async function signedGet(accessKeyId: string, secretAccessKey: string, sessionToken?: string): Promise<SignedRequest> {
    const signer = new SignatureV4({
      service: 's3', region: 'us-east-1', sha256, uriEscapePath: false,
      credentials: { accessKeyId, secretAccessKey, ...(sessionToken && { sessionToken }) },
    });
    const signed = await signer.sign({
      method: 'GET', protocol: 'http:', hostname: '127.0.0.1', path: '/b/k', query: {},
      headers: { host: '127.0.0.1:9000', 'x-amz-content-sha256': EMPTY_SHA256 },
    });
    return { method: 'GET', url: '/b/k', headers: signed.headers };
  }

  it('is signed with the key and must be the key\'s own; a long-term key takes none', async () => {
    const now = new Date();
    assert.equal(await verdict(await signedGet('STSKEY', 'sts-secret', 'the-token'), now, keys), 'ok v4-header STSKEY');
    assert.equal(await verdict(await signedGet('STSKEY', 'sts-secret', 'another-token'), now, keys), '403 InvalidToken');
    assert.equal(await verdict(await signedGet('STSKEY', 'sts-secret'), now, keys), '403 InvalidToken');
    assert.equal(await verdict(await signedGet('LONGKEY', 'long-secret', 'the-token'), now, keys), '403 InvalidToken');
    assert.equal(await verdict(await signedGet('LONGKEY', 'long-secret'), now, keys), 'ok v4-header LONGKEY');
    const swapped = await signedGet('STSKEY', 'sts-secret', 'the-token');
    swapped.headers['x-amz-security-token'] = 'the-token ';
    assert.equal(await verdict(swapped, now, keys), '403 InvalidToken');
  });
});

/** A stand-in for s3rver: what reached it, with its body. */
interface Reached {
  method: string;
  url: string;
  authorization: string | undefined;
  body: string;
}

describe('the front over HTTP', () => {
  const reached: Reached[] = [];
  const refused: Refusal[] = [];
  const s3rver: RequestListener = (req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += String(c)));
    req.on('end', () => {
      reached.push({ method: req.method!, url: req.url!, authorization: req.headers.authorization, body });
      res.end('stored');
    });
  };
  const keys: KeySet = { FRONTKEY: 'front-secret' };
  let clock: Date | undefined;
  const server = createServer(signingFront(s3rver, { keys: () => keys, onRefused: (r) => refused.push(r), now: () => clock ?? new Date() }));
  let port = 0;
  before(async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  function send(method: string, url: string, headers: Record<string, string>, body = ''): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path: url, headers }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += String(c)));
        res.on('end', () => resolve({ status: res.statusCode!, text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }
  async function signedPut(key: string, secret: string, body: string): Promise<Record<string, string>> {
    const signer = new SignatureV4({ service: 's3', region: 'us-east-1', sha256, uriEscapePath: false, credentials: { accessKeyId: key, secretAccessKey: secret } });
    const signed = await signer.sign({
      method: 'PUT', protocol: 'http:', hostname: '127.0.0.1', port, path: '/bucket/a%20b.txt', query: {},
      headers: { host: `127.0.0.1:${port}`, 'x-amz-content-sha256': hex(body), 'content-length': String(body.length) },
    });
    return signed.headers;
  }

  it('a request signed with the right secret reaches s3rver, under s3rver\'s key id, body and all', async () => {
    reached.length = 0;
    const r = await send('PUT', '/bucket/a%20b.txt', await signedPut('FRONTKEY', 'front-secret', 'hello'), 'hello');
    assert.deepEqual([r.status, r.text], [200, 'stored']);
    assert.equal(reached.length, 1);
    assert.equal(reached[0]!.body, 'hello');
    assert.match(reached[0]!.authorization!, /^AWS4-HMAC-SHA256 Credential=S3RVER\/\d{8}\/us-east-1\/s3\/aws4_request, SignedHeaders=/);
  });

  it('a wrong secret, an unknown key: 403 with S3\'s XML error, recorded, and s3rver never sees it', async () => {
    reached.length = 0;
    refused.length = 0;
    let r = await send('PUT', '/bucket/a%20b.txt', await signedPut('FRONTKEY', 'wrong-secret', 'hello'), 'hello');
    assert.equal(r.status, 403);
    assert.match(r.text, /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<Error><Code>SignatureDoesNotMatch<\/Code><Message>The request signature we calculated/);
    assert.match(r.text, /<AWSAccessKeyId>FRONTKEY<\/AWSAccessKeyId>/);
    assert.ok(!r.text.includes('front-secret') && !r.text.includes('wrong-secret'));
    r = await send('PUT', '/bucket/a%20b.txt', await signedPut('NOSUCHKEY', 'front-secret', 'hello'), 'hello');
    assert.equal(r.status, 403);
    assert.match(r.text, /<Code>InvalidAccessKeyId<\/Code>/);
    assert.deepEqual(reached, []);
    assert.deepEqual(refused, [
      { code: 'SignatureDoesNotMatch', method: 'PUT', path: '/bucket/a%20b.txt', accessKeyId: 'FRONTKEY' },
      { code: 'InvalidAccessKeyId', method: 'PUT', path: '/bucket/a%20b.txt', accessKeyId: 'NOSUCHKEY' },
    ]);
  });

  it('presigned and V2 requests reach s3rver under its key id too; anonymous ones as they came', async () => {
    reached.length = 0;
    keys[AKID] = SECRET;
    try {
      clock = new Date(AT_V4.getTime() + 3600_000);
      assert.equal((await send('GET', V4_PRESIGNED.url, V4_PRESIGNED.headers as Record<string, string>)).status, 200);
      assert.equal(reached[0]!.url, V4_PRESIGNED.url.replace(`X-Amz-Credential=${AKID}%2F`, 'X-Amz-Credential=S3RVER%2F'));
      clock = AT_V2;
      assert.equal((await send(V2_GET.method, V2_GET.url, V2_GET.headers as Record<string, string>)).status, 200);
      assert.equal(reached[1]!.authorization, 'AWS S3RVER:bWq2s1WEIj+Ydj0vQ697zp+IXMU=');
    } finally {
      clock = undefined;
      delete keys[AKID];
    }
    assert.equal((await send('GET', '/bucket/k', {})).status, 200);
    assert.deepEqual(reached[2], { method: 'GET', url: '/bucket/k', authorization: undefined, body: '' });
  });
});
