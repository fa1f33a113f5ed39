// What Status calls a volume's health, and the record changes that move it: a mount (which clears
// the last error), its end, a failure. `since` says when health last changed.
import type { VolumeRecord } from './state.js';

export type Health = 'ok' | 'idle' | 'error';

/** What Status calls health: the last mount attempt failed or a mount was lost; else mounted or not. */
export function health(v: VolumeRecord): Health {
  return v.lastError ? 'error' : v.mounted ? 'ok' : 'idle';
}

/** The record with a mount (which clears the last error) or its end, and when Status's health last changed. */
export function markMounted(v: VolumeRecord, mounted: boolean): VolumeRecord {
  const { lastError, ...rest } = v;
  const next: VolumeRecord = mounted ? { ...rest, mounted } : { ...v, mounted };
  return health(next) === health(v) ? next : { ...next, since: new Date().toISOString() };
}

/** The record with a failure kept for Status. */
export function withError(v: VolumeRecord, message: string): VolumeRecord {
  const at = new Date().toISOString();
  return { ...v, lastError: { message, at }, ...(health(v) !== 'error' && { since: at }) };
}
