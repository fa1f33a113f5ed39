// What the ECS API puts on the wire besides the data: request ids, timestamps and the error
// body. Codes, statuses and messages follow Alibaba Cloud's published ones where we found them
// (see the issue 16 research notes); the few we had to choose are marked so.
import { randomUUID } from 'node:crypto';

/** A refusal as ECS answers it: the SDK turns it into a ClientError/ServerError with these fields. */
export class AcsError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'AcsError';
  }
}

/** ECS request ids are upper-case UUIDs. */
export const newRequestId = (): string => randomUUID().toUpperCase();

/** ECS's timestamp form: UTC to the second, 'Z' (what the SDK's Expiration parser also accepts). */
export const isoSeconds = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

export function errorBody(err: AcsError, requestId: string, regionId: string): Record<string, string> {
  return {
    RequestId: requestId,
    HostId: `ecs.${regionId}.aliyuncs.com`,
    Code: err.code,
    Message: err.message,
    Recommend: `https://api.aliyun.com/troubleshoot?q=${encodeURIComponent(err.code)}&product=Ecs&requestId=${requestId}`,
  };
}

/** The refusals more than one module raises. */
export const refuse = {
  missingParameter: (name: string) =>
    new AcsError('MissingParameter', 400, `The input parameter "${name}" that is mandatory for processing this request is not supplied.`),
  invalidParameter: (name: string) => new AcsError('InvalidParameter', 400, `The specified parameter "${name}" is not valid.`),
  incompleteSignature: (why: string) =>
    new AcsError('IncompleteSignature', 400, `The request signature does not conform to Aliyun standards. (${why})`),
  internalError: () =>
    new AcsError('InternalError', 500, 'The request processing has failed due to some unknown error, exception or failure.'),
  /** ECS's flow control: per API and account; the SDK makes it a ThrottlingError. */
  throttled: () => new AcsError('Throttling.User', 400, 'Request was denied due to user flow control.'),
};
