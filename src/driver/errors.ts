// Driver failures meant for the user; the API turns each into {"Err": message}.

/**
 * `state`: the change could not be saved (a full state filesystem); `deadline`: the call's time
 * was used up before it could start; `gone`: the caller hung up before the answer, which nobody
 * reads.
 */
export type VolumeErrorKind = 'invalid' | 'not-found' | 'conflict' | 'in-use' | 'backend' | 'state' | 'deadline' | 'gone';

export class VolumeError extends Error {
  constructor(
    readonly kind: VolumeErrorKind,
    message: string,
  ) {
    super(message);
  }
}
