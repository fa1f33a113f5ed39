// Commands in the host's mount namespace, so that kernel mounts (NFS, block devices) outlive the
// plugin process. The target is chosen once, lazily: OSSNAS_HOST_PID, or with `auto` PID 1 if its
// namespace can be entered, else our parent (under `pidhost` the containerd shim, which lives in
// the engine's namespace). When our namespace already is the target's (a plain host process),
// commands run directly and paths need no translation.
import { readlink } from 'node:fs/promises';
import path from 'node:path';
import type { HostPid } from '../settings.js';
import { run, type RunOptions } from './exec.js';
import { readMounts, type MountEntry } from './mountinfo.js';
import { statFields } from './proc.js';

export class HostNamespaceError extends Error {}

export interface HostNamespace {
  /** The PID whose mount namespace is entered, or undefined when it is ours. */
  readonly pid: number | undefined;
  /** Runs a command in the host's mount namespace (argument array, never a shell). */
  run(command: string, args: string[], opts?: RunOptions): Promise<string>;
  /** The host's path for a path of ours. */
  hostPath(p: string): Promise<string>;
}

/**
 * Our way to a host path (a device node, a by-id link): through the target's root, since the
 * plugin's own /dev holds only what config.json declares.
 */
export function reachHostPath(ns: Pick<HostNamespace, 'pid'>, hostPath: string): string {
  return ns.pid === undefined ? hostPath : `/proc/${ns.pid}/root${hostPath}`;
}

/** The host's mount table, as the process whose namespace is the host's sees it. */
export function hostMountTable(ns: Pick<HostNamespace, 'pid'>): string {
  return ns.pid === undefined ? '/proc/self/mountinfo' : `/proc/${ns.pid}/mountinfo`;
}

async function mountNamespace(pid: number | 'self'): Promise<string | undefined> {
  return readlink(`/proc/${pid}/ns/mnt`).catch(() => undefined);
}

/** The mount holding `p`: the one whose mount point is the longest path prefix of it. */
function containingMount(mounts: MountEntry[], p: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const m of mounts) {
    const inside = m.mountPoint === '/' || p === m.mountPoint || p.startsWith(m.mountPoint + '/');
    if (inside && (!best || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

/**
 * Translates `p` from one mount table to another: find the filesystem directory behind it in
 * `ours`, then a mount of the same filesystem in `theirs` that shows that directory.
 */
export function translatePath(p: string, ours: MountEntry[], theirs: MountEntry[]): string | undefined {
  const mine = containingMount(ours, p);
  if (!mine) return undefined;
  const rel = mine.mountPoint === '/' ? p : p.slice(mine.mountPoint.length);
  const inFs = path.posix.join(mine.root, rel);
  let best: MountEntry | undefined;
  for (const m of theirs) {
    if (m.device !== mine.device) continue;
    const shows = m.root === '/' || inFs === m.root || inFs.startsWith(m.root + '/');
    if (shows && (!best || m.root.length > best.root.length)) best = m;
  }
  if (!best) return undefined;
  return path.posix.join(best.mountPoint, best.root === '/' ? inFs : inFs.slice(best.root.length));
}

async function canEnter(pid: number): Promise<boolean> {
  return run('nsenter', ['-t', String(pid), '-m', '--', 'true'], { timeoutMs: 5000 }).then(
    () => true,
    () => false,
  );
}

async function parentOf(pid: number): Promise<number | undefined> {
  const ppid = Number((await statFields(pid))?.[1]);
  return ppid > 0 ? ppid : undefined;
}

/**
 * `auto`: PID 1 when its namespace can be entered; else the nearest ancestor in another mount
 * namespace (inside the plugin: tini shares ours, the containerd shim above it is in the
 * engine's). When every ancestor shares ours, we are a plain host process.
 */
async function chooseTarget(setting: HostPid): Promise<number | undefined> {
  const ours = await mountNamespace('self');
  const tried: string[] = [];
  const tryPid = async (pid: number): Promise<'same' | 'entered' | 'no'> => {
    if ((await mountNamespace(pid)) === ours) return 'same';
    if (await canEnter(pid)) return 'entered';
    tried.push(String(pid));
    return 'no';
  };
  if (setting !== 'auto') {
    const r = await tryPid(setting);
    if (r === 'same') return undefined;
    if (r === 'entered') return setting;
  } else {
    const first = await tryPid(1);
    if (first === 'same') return undefined;
    if (first === 'entered') return 1;
    let foreign = false;
    for (let pid = await parentOf(process.pid); pid && pid !== 1; pid = await parentOf(pid)) {
      const r = await tryPid(pid);
      if (r === 'entered') return pid;
      if (r === 'no') foreign = true;
    }
    if (!foreign) return undefined; // all our ancestors share our namespace: it is the host's
  }
  throw new HostNamespaceError(
    `cannot enter the host mount namespace (tried PID ${tried.join(', ')}; OSSNAS_HOST_PID=${setting}). ` +
      'The managed plugin needs pidhost, CAP_SYS_ADMIN and CAP_SYS_PTRACE for kernel mounts',
  );
}

export function openHostNamespace(setting: HostPid, onChosen?: (pid: number | undefined) => void): () => Promise<HostNamespace> {
  let opened: Promise<HostNamespace> | undefined;
  return () => {
    opened ??= chooseTarget(setting).then((pid): HostNamespace => (onChosen?.(pid), {
      pid,
      run: (command, args, opts) =>
        pid === undefined ? run(command, args, opts) : run('nsenter', ['-t', String(pid), '-m', '--', command, ...args], opts),
      hostPath: async (p) => {
        if (pid === undefined) return p;
        const translated = translatePath(p, await readMounts('/proc/self/mountinfo'), await readMounts(`/proc/${pid}/mountinfo`));
        if (!translated) throw new HostNamespaceError(`${p} is not visible in the host mount namespace (PID ${pid})`);
        return translated;
      },
    }));
    // A failure is not cached: the next call tries again (e.g. after a setting change).
    opened.catch(() => (opened = undefined));
    return opened;
  };
}
