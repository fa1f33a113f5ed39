// Unmounting without hanging. A plain umount of an NFS mount whose server is gone can block for
// minutes (util-linux resolves the path first, and the kernel flushes dirty pages), so every
// step has a deadline and falls back: plain, then forced (-f aborts pending NFS calls; only for a
// server known to be gone), then lazy (-l detaches it from the tree at once; the kernel finishes
// and frees it when the last user leaves).
import { run } from './exec.js';
import type { HostNamespace } from './hostns.js';
import { findMount, readMounts } from './mountinfo.js';

/** Detaches a mount of our namespace even if its server is gone (ENOTCONN) or it is busy. Never throws. */
export async function lazyUnmount(target: string): Promise<void> {
  if (!(await findMount(target))) return;
  await run('umount', ['-l', target], { timeoutMs: 5000 }).catch(() => undefined);
}

export type UnmountOutcome = 'unmounted' | 'forced' | 'detached';

/** What each fallback step (forced, lazy) may take after the plain umount: callers keep this much of their deadline per step. */
export const FALLBACK_STEP_MS = 5000;

async function mountedInHost(ns: HostNamespace, hostTarget: string): Promise<boolean> {
  const table = ns.pid === undefined ? '/proc/self/mountinfo' : `/proc/${ns.pid}/mountinfo`;
  return (await readMounts(table)).some((m) => m.mountPoint === hostTarget);
}

export interface KernelUnmountOptions {
  /** how long the plain umount may take */
  plainMs?: number;
  /**
   * Whether `umount -f` may be tried before `umount -l`: only when the server is known to be gone.
   * -f aborts the requests in flight (writes not yet on the server are lost, as they would be
   * anyway); -l detaches the mount and lets the kernel finish flushing when it can.
   */
  force?: boolean;
}

/**
 * Unmounts a kernel mount in the host namespace: plain within `plainMs`, then (if `force`)
 * `umount -f`, then `umount -l`. Callers only get here when no container uses the mount any
 * more. Resolves with the step that worked; throws with umount's own words if the mount is
 * still there after all of them.
 */
export async function unmountKernelMount(ns: HostNamespace, hostTarget: string, opts: KernelUnmountOptions = {}): Promise<UnmountOutcome> {
  const steps: Array<[UnmountOutcome, string[], number]> = [
    ['unmounted', ['-c', hostTarget], opts.plainMs ?? 10_000],
    ...(opts.force ? [['forced', ['-f', '-c', hostTarget], FALLBACK_STEP_MS] as [UnmountOutcome, string[], number]] : []),
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
