// What the driver persists (lowdb, one JSON document in OSSNAS_STATE_DIR, mode 0600): every
// volume with its options and the mount IDs holding it. Only the driver uses this module.
import path from 'node:path';
import { Low } from 'lowdb';
import { ensureDir } from '../host/files.js';
import { AtomicJsonFile } from './atomic-json-file.js';

export interface VolumeRecord {
  name: string;
  /** RFC 3339 */
  createdAt: string;
  /** Normalised options, secrets included: this file is root-only. */
  options: Record<string, string>;
  /** Mount ID -> how many times Docker mounted with that ID and has not yet unmounted. */
  mounts: Record<string, number>;
  /** Whether ossnas believes the backend is mounted at the mountpoint. */
  mounted: boolean;
  lastError?: { message: string; at: string };
}

export interface StateData {
  version: 1;
  volumes: Record<string, VolumeRecord>;
}

export const STATE_FILE = 'state.json';

export type StateStore = Low<StateData>;

export async function openState(stateDir: string): Promise<StateStore> {
  await ensureDir(stateDir, 0o700);
  const db = new Low<StateData>(new AtomicJsonFile(path.join(stateDir, STATE_FILE)), { version: 1, volumes: {} });
  await db.read();
  if (db.data.version !== 1 || typeof db.data.volumes !== 'object' || db.data.volumes === null) {
    throw new Error(`state file in ${stateDir} has an unknown format (version ${String(db.data.version)})`);
  }
  return db;
}

export function refCount(v: VolumeRecord): number {
  return Object.values(v.mounts).reduce((a, b) => a + b, 0);
}
