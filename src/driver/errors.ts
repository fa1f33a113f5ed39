// Driver failures meant for the user; the API turns each into {"Err": message}.

export type VolumeErrorKind = 'invalid' | 'not-found' | 'conflict' | 'in-use' | 'backend';

export class VolumeError extends Error {
  constructor(
    readonly kind: VolumeErrorKind,
    message: string,
  ) {
    super(message);
  }
}
