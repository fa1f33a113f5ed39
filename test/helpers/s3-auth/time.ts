// S3 refuses a signed request whose time is more than 15 minutes away from its own clock: a
// captured request cannot be replayed later.
import { S3Refusal } from './request.js';

const MAX_SKEW_MS = 15 * 60_000;

export function checkSkew(requestTime: Date, text: string, now: Date): void {
  if (Math.abs(now.getTime() - requestTime.getTime()) > MAX_SKEW_MS) {
    throw new S3Refusal(403, 'RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.', {
      RequestTime: text,
      ServerTime: now.toISOString().replace(/\.\d+Z$/, 'Z'),
    });
  }
}

/** 20130524T000000Z, the only form V4 takes (in x-amz-date or X-Amz-Date), as a Date. */
export function parseAmzDate(text: string | undefined): Date | undefined {
  const m = text && /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (!m) return undefined;
  const d = new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`);
  return Number.isNaN(d.getTime()) ? undefined : d;
}
