// Who else has a volume's filesystem mounted: a container holds its volume as a bind mount in the
// container's own mount namespace. Docker's reference counts can drift from the truth (an
// Unmount sent while the plugin was down is lost; after a dockerd crash a container's mount ID is
// sent again with no Unmount in between), and this is the ground truth that settles it.
import { readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { findMount, parseMountinfo } from './mountinfo.js';
import { processIds } from './proc.js';

const within = (p: string, dir: string) => p === dir || p.startsWith(dir + '/');

/** The kernel's initial PID namespace (PROC_PID_INIT_INO): only from it is every process visible. */
const INITIAL_PID_NS = 'pid:[4026531836]';

/** The answer would not be complete: some process's mounts cannot be seen. */
export class MountUsersUnknown extends Error {}

/**
 * Every mount of the filesystem mounted at `target`, in any mount namespace on the host, that is
 * not one of the plugin's own (a mount point under one of `ours`: the mount root as the plugin
 * sees it, and as the host sees it). Each is described as "PID n: /path". Empty when nothing is
 * mounted at `target`. Needs the host's PIDs (pidhost) to see containers.
 */
export async function mountUsers(target: string, ours: readonly string[]): Promise<string[]> {
  const mine = await findMount(target);
  if (!mine) return [];
  // A wrong "nobody" would let a stale reference be released under a running container.
  if ((await readlink('/proc/self/ns/pid').catch(() => '')) !== INITIAL_PID_NS) {
    throw new MountUsersUnknown("this process does not see the host's processes (the managed plugin needs pidhost)");
  }
  // Each namespace is read once. Its ns/mnt link tells it cheaply, but needs ptrace rights that
  // some processes (non-dumpable ones) deny; /proc/PID/mountinfo is readable for every process.
  const seen = new Set<string>();
  const users: string[] = [];
  for (const pid of await processIds()) {
    const ns = await readlink(`/proc/${pid}/ns/mnt`).catch(() => undefined);
    if (ns && seen.has(ns)) continue;
    if (ns) seen.add(ns);
    let text: string;
    try {
      text = await readFile(`/proc/${pid}/mountinfo`, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Gone, or a zombie (EINVAL): a process that has exited holds no mounts.
      if (code === 'ENOENT' || code === 'ESRCH' || code === 'EINVAL') continue;
      throw new MountUsersUnknown(`the mounts of PID ${pid} cannot be read (${code ?? (err as Error).message})`);
    }
    if (!text || seen.has(text)) continue;
    seen.add(text);
    for (const m of parseMountinfo(text)) {
      if (m.device !== mine.device) continue;
      if (ours.some((dir) => within(m.mountPoint, path.resolve(dir)))) continue;
      users.push(`PID ${pid}: ${m.mountPoint}`);
    }
  }
  return users;
}
