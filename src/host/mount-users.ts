// Who else has a volume's filesystem mounted: a container holds its volume as a bind mount in the
// container's own mount namespace. Docker's reference counts can drift from the truth (an
// Unmount sent while the plugin was down is lost; after a dockerd crash a container's mount ID is
// sent again with no Unmount in between), and this is the ground truth that settles it.
import { readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { findMount, parseMountinfo } from './mountinfo.js';

const within = (p: string, dir: string) => p === dir || p.startsWith(dir + '/');

/**
 * Every mount of the filesystem mounted at `target`, in any mount namespace on the host, that is
 * not one of the plugin's own (a mount point under one of `ours`: the mount root as the plugin
 * sees it, and as the host sees it). Each is described as "PID n: /path". Empty when nothing is
 * mounted at `target`. Needs the host's PIDs (pidhost) to see containers.
 */
export async function mountUsers(target: string, ours: readonly string[]): Promise<string[]> {
  const mine = await findMount(target);
  if (!mine) return [];
  const seen = new Set<string>();
  const users: string[] = [];
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const ns = await readlink(`/proc/${pid}/ns/mnt`).catch(() => undefined);
    if (!ns || seen.has(ns)) continue;
    seen.add(ns);
    const text = await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => '');
    for (const m of parseMountinfo(text)) {
      if (m.device !== mine.device) continue;
      if (ours.some((dir) => within(m.mountPoint, path.resolve(dir)))) continue;
      users.push(`PID ${pid}: ${m.mountPoint}`);
    }
  }
  return users;
}
