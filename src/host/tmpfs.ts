// A directory that lives in memory. A FUSE client's keys are handed over in a file (never in
// argv); deleted from a disk, such a file's blocks still hold the keys until they are reused, and a
// snapshot or backup of that disk may have copied them. On a tmpfs they never reach a disk.
import { statfs } from 'node:fs/promises';
import { run } from './exec.js';
import { ensureDir } from './files.js';

/** statfs f_type of tmpfs and ramfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

export async function isMemoryBacked(dir: string): Promise<boolean> {
  const st = await statfs(dir).catch(() => undefined);
  return st !== undefined && (st.type === TMPFS_MAGIC || st.type === RAMFS_MAGIC);
}

/**
 * Makes `dir` (0700) a directory in memory: as it is when it is already on a tmpfs (a host's /run),
 * else with a small private tmpfs mounted on it (the managed plugin's /run is on its rootfs, on
 * disk). Throws, saying why, when neither works.
 */
export async function ensureMemoryDir(dir: string): Promise<'already' | 'mounted'> {
  await ensureDir(dir, 0o700);
  if (await isMemoryBacked(dir)) return 'already';
  await run('mount', ['-t', 'tmpfs', '-o', 'mode=0700,size=4m,nosuid,nodev,noexec', 'ossnas-run', dir], { timeoutMs: 5000 });
  mountedHere.add(dir);
  if (!(await isMemoryBacked(dir))) throw new Error(`a tmpfs was mounted on ${dir}, but ${dir} is still not in memory`);
  return 'mounted';
}

const mountedHere = new Set<string>();

/**
 * At a clean stop: the tmpfs this process mounted goes (a plain host process's would otherwise
 * stay on the host's directory). Nothing in it is needed: a key file lives only while its client
 * starts, and a stop waits for calls in flight.
 */
export async function releaseMemoryDirs(): Promise<void> {
  for (const dir of mountedHere) await run('umount', ['-l', dir], { timeoutMs: 2000 }).catch(() => undefined);
  mountedHere.clear();
}
