// Docker does not validate plugin volume names, and we use them as path components.
import { VolumeError } from './errors.js';

/** Docker's own pattern for local volume names, with a length limit that fits a path component. */
const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,199}$/;

export function validateVolumeName(name: unknown): string {
  if (typeof name !== 'string' || !VOLUME_NAME.test(name)) {
    const shown = typeof name === 'string' ? `'${name.slice(0, 80)}'` : String(name);
    throw new VolumeError(
      'invalid',
      `invalid volume name ${shown}: use 1-200 characters from [a-zA-Z0-9_.-], starting with a letter or digit`,
    );
  }
  return name;
}
