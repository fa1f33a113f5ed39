// Unmounting without hanging. A plain umount of an NFS mount whose server is gone can block for
// minutes (util-linux resolves the path first, and the kernel flushes dirty pages), so every
// step has a deadline and falls back: plain, then lazy (-l detaches it from the tree at once; the
// kernel finishes, writing what is left when the server returns, and frees it when the last user
// leaves). Never forced: `umount -f` aborts the pending NFS calls of the whole superblock, which
// other volumes of the same server share with containers that hold them, and it drops writes
// that a lazy detach would still deliver.
import { run } from './exec.js';
import { hostMountTable, type HostNamespace } from './hostns.js';
import { findMount, readMounts } from './mountinfo.js';

/** Detaches a mount of our namespace even if its server is gone (ENOTCONN) or it is busy. Never throws. */
export async function lazyUnmount(target: string): Promise<void> {
  if (!(await findMount(target))) return;
  await run('umount', ['-l', target], { timeoutMs: 5000 }).catch(() => undefined);
}

export type UnmountOutcome = 'unmounted' | 'detached';

/** What the lazy step may take after the plain umount: callers keep this much of their deadline. */
export const FALLBACK_STEP_MS = 5000;

async function mountedInHost(ns: HostNamespace, hostTarget: string): Promise<boolean> {
  return (await readMounts(hostMountTable(ns))).some((m) => m.mountPoint === hostTarget);
}

export interface KernelUnmountOptions {
  /** how long the plain umount may take */
  plainMs?: number;
}

/**
 * Unmounts a kernel mount in the host namespace: plain within `plainMs`, then `umount -l`.
 * Callers only get here when no reference holds the mount any more. Resolves with the step that
 * worked; throws with umount's own words if the mount is still there after both.
 */
export async function unmountKernelMount(ns: HostNamespace, hostTarget: string, opts: KernelUnmountOptions = {}): Promise<UnmountOutcome> {
  const steps: Array<[UnmountOutcome, string[], number]> = [
    ['unmounted', ['-c', hostTarget], opts.plainMs ?? 10_000],
    ['detached', ['-l', '-c', hostTarget], FALLBACK_STEP_MS],
  ];
  const said: string[] = [];
  for (const [outcome, args, timeoutMs] of steps) {
    if (!(await mountedInHost(ns, hostTarget))) return 'unmounted';
    try {
      await ns.run('umount', args, { timeoutMs });
      if (!(await mountedInHost(ns, hostTarget))) return outcome;
    } catch (err) {
      said.push((err as Error).message);
    }
  }
  if (!(await mountedInHost(ns, hostTarget))) return 'detached';
  throw new Error(`${hostTarget} is still mounted: ${said.join('; ') || 'umount reported success'}`);
}
