// Is a mount serving, and how full is it? A plain stat answers from the kernel's cache for a FUSE
// root even when the client is dead; statfs goes to the filesystem, so a dead FUSE client shows
// up as ENOTCONN and a hung one as a timeout.
//
// Only death is proof enough to replace a mount that containers hold. A client that was stopped
// (SIGSTOP, a debugger, a host under memory pressure) or an NFS server that does not answer
// looks exactly like a timeout, and its containers' I/O resumes when it does: replacing it would
// put a second client with a second cache on the same data and abort their I/O.
import type { StatsFs } from 'node:fs';
import { statfs } from 'node:fs/promises';

export type Probe =
  | { state: 'serving' }
  /** Provably gone: the kernel aborted its connection to the FUSE client. */
  | { state: 'dead'; reason: string }
  /** No answer in time, or an error that does not prove death: its I/O may yet complete. */
  | { state: 'unresponsive'; reason: string };

/** What statfs errors prove the client gone: the kernel closed (or aborted) the FUSE connection. */
const DEATH = new Set(['ENOTCONN', 'ECONNABORTED']);

/**
 * The statfs still waiting for each path. A statfs of a hung NFS or FUSE mount holds a libuv
 * thread until the server or client answers: probing such a mount again (every Mount, every
 * re-check) must wait on the same call, or a long outage would take every thread, one per probe.
 */
const pending = new Map<string, Promise<StatsFs | { code?: string; reason: string }>>();

function statfsOnce(target: string): Promise<StatsFs | { code?: string; reason: string }> {
  let p = pending.get(target);
  if (!p) {
    p = statfs(target)
      .catch((err: NodeJS.ErrnoException) => ({ code: err.code, reason: `${target}: ${err.code ?? err.message}` }))
      .finally(() => pending.delete(target));
    pending.set(target, p);
  }
  return p;
}

/** statfs, or why there is no answer (an error code, or no answer within the deadline). */
async function statfsWithin(target: string, timeoutMs: number): Promise<StatsFs | { code?: string; reason: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ reason: string }>((resolve) => {
    timer = setTimeout(() => resolve({ reason: `no answer from ${target} within ${timeoutMs} ms` }), timeoutMs);
  });
  try {
    return await Promise.race([statfsOnce(target), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export async function probeMount(target: string, timeoutMs = 2000): Promise<Probe> {
  const r = await statfsWithin(target, timeoutMs);
  if (!('reason' in r)) return { state: 'serving' };
  return r.code && DEATH.has(r.code) ? { state: 'dead', reason: r.reason } : { state: 'unresponsive', reason: r.reason };
}

export interface Usage {
  totalBytes: number;
  usedBytes: number;
  /** Whole percent of the space ordinary users can have, as df shows it. */
  usedPercent: number;
}

/** How full the filesystem at `target` is; undefined when it does not answer in time. */
export async function usageOf(target: string, timeoutMs = 500): Promise<Usage | undefined> {
  const r = await statfsWithin(target, timeoutMs);
  if ('reason' in r) return undefined;
  const used = (r.blocks - r.bfree) * r.bsize;
  const usable = used + r.bavail * r.bsize; // without the blocks reserved for root
  return { totalBytes: r.blocks * r.bsize, usedBytes: used, usedPercent: usable > 0 ? Math.ceil((used / usable) * 100) : 0 };
}
