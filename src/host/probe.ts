// Is a mount serving, and how full is it? A plain stat answers from the kernel's cache for a FUSE
// root even when the client is dead; statfs goes to the filesystem, so a dead FUSE client shows
// up as ENOTCONN and a hung one as a timeout.
import type { StatsFs } from 'node:fs';
import { statfs } from 'node:fs/promises';

/** statfs, or why there is no answer (an error code, or no answer within the deadline). */
async function statfsWithin(target: string, timeoutMs: number): Promise<StatsFs | string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`no answer from ${target} within ${timeoutMs} ms`), timeoutMs);
  });
  try {
    return await Promise.race([statfs(target).catch((err: NodeJS.ErrnoException) => `${target}: ${err.code ?? err.message}`), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** undefined when the mount answers, else why not. */
export async function probeMount(target: string, timeoutMs = 2000): Promise<string | undefined> {
  const r = await statfsWithin(target, timeoutMs);
  return typeof r === 'string' ? r : undefined;
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
  if (typeof r === 'string') return undefined;
  const used = (r.blocks - r.bfree) * r.bsize;
  const usable = used + r.bavail * r.bsize; // without the blocks reserved for root
  return { totalBytes: r.blocks * r.bsize, usedBytes: used, usedPercent: usable > 0 ? Math.ceil((used / usable) * 100) : 0 };
}
