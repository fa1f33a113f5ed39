// The signature check in front of s3rver, in its process: a request signed with a key the test
// gave and its right secret (and token) goes on to s3rver; one that real S3 or OSS would refuse
// is answered 403 (or 400) with S3's XML error and never reaches s3rver; an anonymous one goes on
// as it is (s3rver answers anonymous reads, which the tests use to look into a bucket).
//
// s3rver knows only its own key pair S3RVER:S3RVER, checks no V4 signature and miscomputes s3fs's
// V2 ones, so a verified request is handed on with its key id replaced by S3RVER, to an s3rver
// started with allowMismatchedSignatures: the signature was checked here, against the test's key.
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { authenticate, type SigningWay } from './authenticate.js';
import type { KeySet } from './keys.js';
import { S3Refusal, splitUrl } from './request.js';

export const S3RVER_KEY_ID = 'S3RVER';

/** What the front refused, for the tests to see why a mount failed. No secret, no signature. */
export interface Refusal {
  code: string;
  method: string;
  path: string;
  accessKeyId?: string;
}

export interface FrontOptions {
  keys(): KeySet;
  onRefused?(refusal: Refusal): void;
  now?(): Date;
}

const xmlEscape = (s: string) => s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);

export function errorXml(r: S3Refusal, resource: string): string {
  const fields: Record<string, string> = { Code: r.code, Message: r.message, ...r.details, Resource: resource, RequestId: 'ossnas-test-front' };
  const body = Object.entries(fields).map(([k, v]) => `<${k}>${xmlEscape(v)}</${k}>`).join('');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error>${body}</Error>`;
}

/** The request with S3RVER as the key that signed it, wherever this way of signing names the key. */
function asS3rverKey(req: IncomingMessage, way: SigningWay, accessKeyId: string): void {
  const auth = req.headers.authorization;
  if (way === 'v4-header' && auth) req.headers.authorization = auth.replace(`Credential=${accessKeyId}/`, `Credential=${S3RVER_KEY_ID}/`);
  if (way === 'v2-header' && auth) req.headers.authorization = auth.replace(`AWS ${accessKeyId}:`, `AWS ${S3RVER_KEY_ID}:`);
  if (way === 'v4-query' || way === 'v2-query') {
    const { path, rawQuery } = splitUrl(req.url ?? '/');
    const param = way === 'v4-query' ? 'X-Amz-Credential' : 'AWSAccessKeyId';
    const rewritten = rawQuery.split('&').map((p) => {
      const eq = p.indexOf('=');
      if (eq < 0 || p.slice(0, eq) !== param) return p;
      const value = decodeURIComponent(p.slice(eq + 1));
      return `${param}=${encodeURIComponent(S3RVER_KEY_ID + value.slice(accessKeyId.length))}`;
    });
    req.url = `${path}?${rewritten.join('&')}`;
  }
}

function refuse(req: IncomingMessage, res: ServerResponse, r: S3Refusal): void {
  const body = errorXml(r, splitUrl(req.url ?? '/').path);
  // As S3 does, the connection is not kept for a body the server will not read.
  res.writeHead(r.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), connection: 'close' });
  res.end(body);
  req.resume();
}

export function signingFront(s3rver: RequestListener, opts: FrontOptions): RequestListener {
  return (req, res) => {
    const signed = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers };
    authenticate(signed, opts.keys(), opts.now?.() ?? new Date()).then(
      (who) => {
        if (who) asS3rverKey(req, who.way, who.key.accessKeyId);
        // Only the head was checked, the body is s3rver's to stream (multipart parts of 10 MB and
        // more). The sha256 s3fs declares for a body is signed but not compared with the body:
        // that would hold the end of every upload back from s3rver until its hash is known, and a
        // corrupted body is not what these tests look for; the key that signed it is.
        s3rver(req, res);
      },
      (err: unknown) => {
        const r = err instanceof S3Refusal ? err : new S3Refusal(500, 'InternalError', `the test front failed: ${(err as Error).message}`);
        const { accessKeyId } = r;
        opts.onRefused?.({ code: r.code, method: signed.method, path: splitUrl(signed.url).path, ...(accessKeyId && { accessKeyId }) });
        refuse(req, res, r);
      },
    );
  };
}
