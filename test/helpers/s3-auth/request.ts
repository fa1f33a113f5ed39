// The parts of an incoming S3 request that signatures cover, and the refusal S3 answers with.
import type { IncomingHttpHeaders } from 'node:http';

/** A request as the server received it: `url` is the raw request target (path and query, still encoded). */
export interface SignedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

/**
 * A refusal as real S3 (and OSS's S3 API) words it: the status, the S3 error code, the details
 * its XML carries; and, for the test's own record, the key the request named, once known.
 */
export class S3Refusal extends Error {
  accessKeyId: string | undefined;
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const malformed = (message: string) => new S3Refusal(400, 'AuthorizationHeaderMalformed', message);

/** One header's value; repeated headers joined as HTTP joins them. */
export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

export function splitUrl(url: string): { path: string; rawQuery: string } {
  const q = url.indexOf('?');
  return q < 0 ? { path: url, rawQuery: '' } : { path: url.slice(0, q), rawQuery: url.slice(q + 1) };
}

/**
 * The query's parameters, decoded, in order. Only %XX escapes are decoded: a `+` stays a `+`,
 * as S3 reads it (URLSearchParams would make it a space).
 */
export function queryParams(rawQuery: string): Array<[string, string]> {
  if (!rawQuery) return [];
  return rawQuery.split('&').filter(Boolean).map((p) => {
    const eq = p.indexOf('=');
    const [k, v] = eq < 0 ? [p, ''] : [p.slice(0, eq), p.slice(eq + 1)];
    try {
      return [decodeURIComponent(k), decodeURIComponent(v)];
    } catch {
      throw new S3Refusal(400, 'InvalidArgument', `the query parameter ${JSON.stringify(k)} is not valid percent-encoding`);
    }
  });
}
