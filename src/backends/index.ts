// The volume types ossnas knows, and the first step of every Create: which type, and are its
// options valid.
import { DiskBackend } from './disk/index.js';
import { NasBackend } from './nas/index.js';
import { OssBackend } from './oss/index.js';
import { foldKey, OptionsError } from './options.js';
import type { Settings } from '../settings.js';
import type { Backend, VolumeOptions } from './types.js';

export { OptionsError } from './options.js';
export { BackendError, type Backend, type BackendContext, type MountIntent, type VolumeOptions } from './types.js';

export type BackendRegistry = ReadonlyMap<string, Backend>;

/** Throws SettingsError for a plugin-wide default that is not valid. */
export function createBackends(ossDefaults: Settings['ossDefaults'] = {}): BackendRegistry {
  const list: Backend[] = [new OssBackend(ossDefaults), new NasBackend(), new DiskBackend()];
  return new Map(list.map((b) => [b.type, b]));
}

/** Validates raw Create options (`Opts` may be null) and returns the backend and normalised options. */
export function parseVolumeOptions(
  backends: BackendRegistry,
  raw: Record<string, string> | null | undefined,
): { backend: Backend; options: VolumeOptions } {
  const types = [...backends.keys()].join(', ');
  const entries = Object.entries(raw ?? {});
  const typeEntry = entries.find(([k]) => foldKey(k) === 'type');
  if (!typeEntry) {
    throw new OptionsError(
      `option 'type' is required (one of: ${types}), e.g. docker volume create -d ossnas -o type=oss -o bucket=NAME ...`,
    );
  }
  const type = String(typeEntry[1]).trim().toLowerCase();
  const backend = backends.get(type);
  if (!backend) throw new OptionsError(`invalid option 'type': '${typeEntry[1]}' is not a volume type; accepted: ${types}`);
  const options = Object.fromEntries(entries.map(([k, v]) => [k, foldKey(k) === 'type' ? type : v]));
  return { backend, options: backend.parse(options) };
}

/** The backend of a stored volume. */
export function backendFor(backends: BackendRegistry, options: VolumeOptions): Backend {
  const backend = options.type ? backends.get(options.type) : undefined;
  if (!backend) throw new OptionsError(`stored volume has unknown type '${options.type ?? ''}'`);
  return backend;
}
