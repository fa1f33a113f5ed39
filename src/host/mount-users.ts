// Who else has a volume's filesystem mounted: a container holds its volume as a bind mount in the
// container's own mount namespace. Docker's reference counts can drift from the truth (an
// Unmount sent while the plugin was down is lost; after a dockerd crash a container's mount ID is
// sent again with no Unmount in between), and this is the ground truth that settles it.
import { readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { findMount, parseMountinfo, type MountEntry } from './mountinfo.js';
import { processIds } from './proc.js';

/** An absolute path without `.`, `..`, doubled or trailing slashes: what pathWithin compares. */
function normalized(p: string): string {
  return path.posix.normalize(p).replace(/(.)\/$/, '$1');
}

/** `q` is `d` or a path below it (both normalized). */
function withinNormalized(q: string, d: string): boolean {
  return d === '/' || q === d || q.startsWith(d + '/');
}

/** `p` is `dir` or a path below it (both absolute, '/'-separated). */
function pathWithin(p: string, dir: string): boolean {
  return withinNormalized(normalized(p), normalized(dir));
}

/**
 * Filesystems whose mountinfo source the kernel derives from the mount's own root (NFS builds
 * `server:/path` from the root dentry, so a bind of a sub-directory shows a longer path) and whose
 * root field tells nothing (NFS always shows '/'). Elsewhere the source is the string given at
 * mount time, the same on every bind and on every mount of the device: it tells nothing there.
 */
const SOURCE_FROM_ROOT = new Set(['nfs', 'nfs4']);

/** The path part of an NFS source (`host:/p`, `[v6]:/p`), or undefined when it has none. */
function exportPathOf(source: string): string | undefined {
  const i = source.indexOf(':/'); // a host name or IPv6 address never holds ':/'
  return i < 0 ? undefined : source.slice(i + 1);
}

/**
 * Whether mount `m` shows the tree mounted at `mine`, or a part of it: same filesystem (device),
 * and a directory inside ours. Two NAS volumes on one NFS server share one superblock, so one
 * device; only where they are in it tells them apart. A mount of a sibling, or of an ancestor
 * (which holds more than our mount, but not our mount), is not a user of ours.
 *
 * Two volumes of the exact same server:path show the same directory: each counts the other's
 * containers as users. That is the safe answer (the data is the same, and it is in use): their
 * references are kept rather than released under a running container.
 */
export function showsPartOf(m: MountEntry, mine: MountEntry): boolean {
  if (m.device !== mine.device) return false;
  if (!pathWithin(m.root, mine.root)) return false;
  if (SOURCE_FROM_ROOT.has(mine.fsType) && m.fsType === mine.fsType) {
    const ours = exportPathOf(mine.source);
    const theirs = exportPathOf(m.source);
    // A source we cannot read: count it (a wrong "in use" keeps a reference; a wrong "unused"
    // would release one under a running container).
    if (ours === undefined || theirs === undefined) return true;
    return pathWithin(theirs, ours);
  }
  return true;
}

/** The kernel's initial PID namespace (PROC_PID_INIT_INO): only from it is every process visible. */
const INITIAL_PID_NS = 'pid:[4026531836]';

/** The answer would not be complete: some process's mounts cannot be seen. */
export class MountUsersUnknown extends Error {}

/**
 * Every mount of the tree mounted at `target` (or of a part of it), in any mount namespace on the host, that is
 * not one of the plugin's own (a mount point under one of `ours`: the mount root as the plugin
 * sees it, and as the host sees it). Each is described as "PID n: /path". Empty when nothing is
 * mounted at `target`. Needs the host's PIDs (pidhost) to see containers.
 */
export async function mountUsers(target: string, ours: readonly string[]): Promise<string[]> {
  return (await mountUsersAsOfNow())(target, ours);
}

/** Who holds a target, from a reading of every namespace made once (see mountUsersAsOfNow). */
export type MountUsersLookup = (target: string, ours: readonly string[]) => Promise<string[]>;

/**
 * Every namespace's mounts, read now, and a lookup that answers mountUsers() from that reading
 * for any number of targets. A start that checks the references of 200 held volumes reads the
 * host's namespaces once instead of 200 times: with a holder per volume, the reads were
 * quadratic (200 namespaces of 200 mounts, for each volume: about 2 minutes of a restore).
 * The answers are those of the moment of reading: a mount made later is not in them.
 */
export async function mountUsersAsOfNow(): Promise<MountUsersLookup> {
  // Indexed by device, paths normalized once: a lookup looks only at mounts of its own
  // filesystem. Volumes that share one (NFS volumes of one server, OSS volumes of one shared
  // client) still meet each other's mounts, N namespaces of N mounts each: with the paths
  // normalized on every comparison, 100 such volumes took 1.2 s of CPU per restore.
  const byDevice = new Map<string, Array<{ pid: number; m: MountEntry; root: string; mountPoint: string }>>();
  for (const ns of await everyNamespace()) {
    for (const m of ns.mounts) {
      let list = byDevice.get(m.device);
      if (!list) byDevice.set(m.device, (list = []));
      list.push({ pid: ns.pid, m, root: normalized(m.root), mountPoint: normalized(m.mountPoint) });
    }
  }
  return async (target, ours) => {
    const mine = await findMount(target);
    if (!mine) return [];
    const mineRoot = normalized(mine.root);
    const roots = ours.map((dir) => normalized(path.resolve(dir)));
    const users: string[] = [];
    for (const e of byDevice.get(mine.device) ?? []) {
      // The cheap test first; showsPartOf then decides (an NFS source) for the few left.
      if (!withinNormalized(e.root, mineRoot) || roots.some((dir) => withinNormalized(e.mountPoint, dir))) continue;
      if (showsPartOf(e.m, mine)) users.push(`PID ${e.pid}: ${e.m.mountPoint}`);
    }
    return users;
  };
}

/**
 * Every mount of the block device `device` (major:minor), in any mount namespace on the host, as
 * "PID n: /path": whoever still has its filesystem mounted, with or without a mount of ours.
 */
export async function deviceUsers(device: string): Promise<string[]> {
  return usersIn(await everyNamespace(), (m) => m.device === device);
}

/** One process of each mount namespace on the host, with that namespace's mounts. */
interface Namespace {
  pid: number;
  mounts: MountEntry[];
}

/** The mounts that `wanted` picks, each as "PID n: /path". */
function usersIn(namespaces: readonly Namespace[], wanted: (m: MountEntry) => boolean): string[] {
  const users: string[] = [];
  for (const ns of namespaces) for (const m of ns.mounts) if (wanted(m)) users.push(`PID ${ns.pid}: ${m.mountPoint}`);
  return users;
}

/** Every mount namespace on the host, each read once. */
async function everyNamespace(): Promise<Namespace[]> {
  // A wrong "nobody" would let a stale reference be released under a running container.
  if ((await readlink('/proc/self/ns/pid').catch(() => '')) !== INITIAL_PID_NS) {
    throw new MountUsersUnknown("this process does not see the host's processes (the managed plugin needs pidhost)");
  }
  // Each namespace is read once. Its ns/mnt link tells it cheaply, but needs ptrace rights that
  // some processes (non-dumpable ones) deny; /proc/PID/mountinfo is readable for every process.
  const seen = new Set<string>();
  const namespaces: Namespace[] = [];
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
    namespaces.push({ pid, mounts: parseMountinfo(text) });
  }
  return namespaces;
}
