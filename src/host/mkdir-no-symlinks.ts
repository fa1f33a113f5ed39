// Creating directories inside a mount whose content someone else controls (an NFS export, as
// root): a symlink planted there must not send the mkdir elsewhere, such as onto the host's own
// filesystem (`team -> /`, or `team -> ../..` out of the mount). The mount is flagged nosymfollow
// first (Linux 5.10): the kernel then refuses every symlink on it during path lookup (ELOOP), at
// every component and with no window between a check and the mkdir, while readlink still works,
// which names the symlink in the error.
import path from 'node:path';
import { hostMountTable, type HostNamespace } from './hostns.js';
import { readMounts } from './mountinfo.js';

/** A symlink lies on the path to create; nothing was created through it. */
export class SymlinkRefused extends Error {
  constructor(
    /** The components, below the mount, up to and including the symlink. */
    readonly at: string[],
    /** What it points to (as stored in the link; control characters removed). */
    readonly target: string,
  ) {
    super(`${at.join('/')} is a symlink`);
  }
}

/** This host cannot make a mount refuse symlinks (an older kernel or mount command). */
export class SymlinksNotRefusable extends Error {}

const MAX_TARGET_CHARS = 200;

/**
 * `mkdir -p` of `parts` below `mountPoint` (a host path, in the host's mount namespace, where a
 * mount of ours is that nothing else uses), refusing every symlink on the way. The mount's
 * per-mount flags are changed: it is meant to be unmounted afterwards.
 */
export async function mkdirNoSymlinks(ns: HostNamespace, mountPoint: string, parts: string[], timeoutMs: number): Promise<void> {
  // A bind remount changes only this mount's flags, not the superblock that the volumes of the
  // same server share. nosuid, nodev, noexec: nothing on it is ever run.
  try {
    await ns.run('mount', ['-c', '-o', 'remount,bind,nosymfollow,nosuid,nodev,noexec', mountPoint], { timeoutMs });
  } catch (err) {
    throw new SymlinksNotRefusable(`mount -o remount,bind,nosymfollow failed (${(err as Error).message})`);
  }
  // A kernel older than 5.10 takes the flag without a word: check that it took.
  const table = await readMounts(hostMountTable(ns));
  const top = table.filter((m) => m.mountPoint === mountPoint).pop();
  if (!top?.options.split(',').includes('nosymfollow')) {
    throw new SymlinksNotRefusable('the kernel did not apply nosymfollow to the mount (it needs Linux 5.10 or later)');
  }

  try {
    await ns.run('mkdir', ['-p', '--', path.posix.join(mountPoint, ...parts)], { timeoutMs });
  } catch (err) {
    // Which component is a symlink? Only readlink succeeds on one; the parts before it are
    // real directories, and there are at most a few of them.
    for (let i = 1; i <= parts.length; i++) {
      const link = path.posix.join(mountPoint, ...parts.slice(0, i));
      const target = await ns.run('readlink', ['--', link], { timeoutMs: Math.min(timeoutMs, 5000) }).catch(() => undefined);
      if (target !== undefined) {
        throw new SymlinkRefused(parts.slice(0, i), target.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, MAX_TARGET_CHARS));
      }
    }
    throw err;
  }
}
