// Which OSS volumes may share one FUSE client (OSSNAS_SHARE_CLIENTS): those a single client would
// serve exactly as each of their own clients would. The same bucket and endpoint, the same keys
// (a volume with another secret must not reach the bucket through a client that holds the right
// one), the same uid, gid, umask, readonly and otherOpts. Only the path differs: each volume is a
// bind mount of its path in the shared mount.
//
// The group is named in a path (the shared mount's directory), so it is an HMAC under a key that
// only root can read: a plain hash of the keys would let anyone who sees the path test guesses
// of the secret against it.
import { createHmac, randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { BackendError } from '../types.js';
import type { Credentials } from './credentials.js';
import type { OssSpec } from './options.js';

const KEY_FILE = 'client-groups.key';
const KEY_BYTES = 32;

/**
 * The group's name: `bucket.HMAC`. A RAM role's STS keys change every hour: its volumes are
 * grouped by the role, not by the keys they were given.
 */
export function clientGroup(spec: OssSpec, creds: Credentials | undefined, key: Buffer): string {
  const keys = spec.ramRole ? { ramRole: true } : creds ? { akId: creds.akId, akSecret: creds.akSecret, token: creds.securityToken ?? '' } : {};
  const identity = JSON.stringify([spec.bucket, spec.url, spec.uid ?? '', spec.gid ?? '', spec.umask ?? '', spec.readonly, spec.otherOpts, keys]);
  return `${spec.bucket}.${createHmac('sha256', key).update(identity).digest('hex').slice(0, 24)}`;
}

const loaded = new Map<string, Promise<Buffer>>();

/**
 * The HMAC key, made once and kept in `dir` (root-only: the clients' runtime directory) so that
 * a restarted plugin finds the shared mounts of the one before it by name. Lost, it only costs
 * sharing: the old shared mounts are still unmounted with their last volume (found by device).
 */
export function groupKey(dir: string): Promise<Buffer> {
  let p = loaded.get(dir);
  if (!p) {
    p = readOrMakeKey(path.join(dir, KEY_FILE)).catch((err: Error) => {
      // A full or read-only state filesystem: the Mount fails saying so, before any client starts.
      throw new BackendError(`the key that names shared FUSE clients could not be kept in ${dir}: ${err.message}`);
    });
    p.catch(() => loaded.delete(dir));
    loaded.set(dir, p);
  }
  return p;
}

async function readOrMakeKey(file: string): Promise<Buffer> {
  const existing = await readFile(file).catch(() => undefined);
  if (existing?.length === KEY_BYTES) return existing;
  const key = randomBytes(KEY_BYTES);
  // A short or empty file (a crash while it was written) is replaced.
  const fh = await open(file, 'w', 0o600);
  try {
    await fh.writeFile(key);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return key;
}
