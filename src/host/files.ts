// Small filesystem steps with the care a root process needs: explicit modes, no recursive deletes.
import { chmod, copyFile, mkdir, open, readFile, rename, rmdir, unlink } from 'node:fs/promises';

/** mkdir -p, then force the mode (the process umask is 077). */
export async function ensureDir(dir: string, mode: number): Promise<void> {
  await mkdir(dir, { recursive: true, mode });
  await chmod(dir, mode);
}

/**
 * Writes a short-lived file readable by root only (a FUSE client's keys, read once at its start
 * and deleted once the mount is ready). Created with its mode, never reusing an older file whose
 * mode could be looser. Not fsynced: after a crash it is simply written again at the next mount.
 */
export async function writePrivateFile(file: string, content: string): Promise<void> {
  await removeFileQuietly(file);
  const fh = await open(file, 'wx', 0o600);
  try {
    await fh.writeFile(content);
  } finally {
    await fh.close();
  }
}

export async function removeFileQuietly(file: string): Promise<void> {
  await unlink(file).catch(() => undefined);
}

/**
 * Removes an empty mountpoint directory. Never recursive, and never while something is mounted
 * there: that is how other plugins deleted users' remote data. Returns what happened.
 */
export async function removeEmptyMountpoint(dir: string): Promise<'removed' | 'absent' | 'mounted' | 'not-empty'> {
  // rmdir itself refuses a mountpoint of our namespace (EBUSY), an empty bucket included, so
  // the mount table need not be read first.
  try {
    await rmdir(dir);
    return 'removed';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'absent';
    if (code === 'EBUSY') return 'mounted';
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return 'not-empty';
    throw err;
  }
}

/**
 * Copies `from` to `to` unless they already hold the same bytes; replaced by a rename, so a
 * reader meanwhile sees the old file or the new one. False when `from` does not exist.
 */
export async function copyIfChanged(from: string, to: string): Promise<boolean> {
  const source = await readFile(from).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (!source) return false;
  const current = await readFile(to).catch(() => undefined);
  if (current?.equals(source)) return true;
  const temp = `${to}.${process.pid}.tmp`;
  try {
    await copyFile(from, temp);
    await rename(temp, to);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  return true;
}
