// Moving a process out of the plugin's cgroups, so that it outlives the plugin.
//
// When a managed plugin's process dies, the container runtime kills every process left in the
// plugin's cgroup (with `pidhost` there is no PID namespace to take them down, so containerd's
// shim runs `runc kill --all`, which walks the cgroup). A FUSE client in that cgroup dies with
// the plugin and every container using its volume gets "transport endpoint is not connected".
// Moved into a sibling cgroup, the client keeps serving; the restarted plugin finds its mount
// healthy and adopts it. The host's cgroupfs is reached through /proc/<host pid>/root, because
// the plugin's own /sys/fs/cgroup is read-only and shows only its own cgroup.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseMountinfo, type MountEntry } from './mountinfo.js';

/** The cgroup, beside the plugin's own in every hierarchy, that FUSE clients are moved into. */
export const CLIENT_CGROUP = 'ossnas-fuse';

export interface CgroupMembership {
  /** hierarchy ID; 0 is the unified (v2) hierarchy */
  id: string;
  /** controllers of a v1 hierarchy ("cpu,cpuacct", "name=systemd"); empty for v2 */
  controllers: string[];
  /** cgroup path relative to the hierarchy's root */
  path: string;
}

export function parseProcCgroup(text: string): CgroupMembership[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id = '', controllers = '', ...rest] = line.split(':');
      return { id, controllers: controllers ? controllers.split(',') : [], path: rest.join(':') };
    });
}

/** Where hosts mount the v2 hierarchy: unified mode (cgroup v2 only), then hybrid mode (beside v1). */
const V2_MOUNTS = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'];

/**
 * The host's mount of a hierarchy: cgroup2 for v2, else the cgroup mount carrying its controllers.
 * A host may mount cgroup2 more than once (e.g. Cilium's /run/cilium/cgroupv2, which may come
 * first): the usual places win, whatever the order.
 */
export function hierarchyMount(m: CgroupMembership, mounts: MountEntry[]): MountEntry | undefined {
  if (m.id === '0') {
    const v2 = mounts.filter((e) => e.fsType === 'cgroup2');
    for (const at of V2_MOUNTS) {
      const found = v2.find((e) => e.mountPoint === at);
      if (found) return found;
    }
    return v2[0];
  }
  return mounts.find((e) => {
    if (e.fsType !== 'cgroup') return false;
    const opts = e.superOptions.split(',');
    return m.controllers.every((c) => opts.includes(c));
  });
}

/**
 * The directory (under `hostRoot`) of the cgroup beside `m.path`, or undefined when the process
 * sits at the hierarchy's root (nothing to leave) or the host does not mount the hierarchy.
 */
export function siblingDir(m: CgroupMembership, mount: MountEntry | undefined, hostRoot: string): string | undefined {
  if (!mount || m.path === '/' || !m.path.startsWith('/')) return undefined;
  const rel = mount.root === '/' ? m.path : m.path.startsWith(mount.root + '/') ? m.path.slice(mount.root.length) : undefined;
  if (rel === undefined) return undefined;
  return path.posix.join(hostRoot, mount.mountPoint, path.posix.dirname(rel), CLIENT_CGROUP);
}

/** A new v1 cpuset cgroup admits no process until it has CPUs and memory nodes: take the parent's. */
async function inheritCpuset(dir: string): Promise<void> {
  for (const file of ['cpuset.cpus', 'cpuset.mems']) {
    const own = await readFile(path.join(dir, file), 'utf8').catch(() => undefined);
    if (own === undefined || own.trim()) continue;
    await writeFile(path.join(dir, file), await readFile(path.join(path.dirname(dir), file), 'utf8'));
  }
}

/**
 * Moves `pid` into the `ossnas-fuse` cgroup beside the one it shares with us, in every hierarchy.
 * Returns the hierarchies it could not leave (with why); an empty list means it outlives us.
 */
export async function leaveOurCgroups(pid: number, hostPid: number): Promise<string[]> {
  const hostRoot = `/proc/${hostPid}/root`;
  const mounts = parseMountinfo(await readFile(`/proc/${hostPid}/mountinfo`, 'utf8'));
  const failures: string[] = [];
  for (const m of parseProcCgroup(await readFile(`/proc/${pid}/cgroup`, 'utf8'))) {
    const what = m.id === '0' ? 'unified' : m.controllers.join(',');
    const dir = siblingDir(m, hierarchyMount(m, mounts), hostRoot);
    if (!dir) continue;
    try {
      await mkdir(dir, { recursive: true });
      if (m.controllers.includes('cpuset')) await inheritCpuset(dir);
      await writeFile(path.join(dir, 'cgroup.procs'), String(pid));
    } catch (err) {
      failures.push(`${what}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  return failures;
}
