// Is a mount serving? A plain stat answers from the kernel's cache for a FUSE root even when the
// client is dead; statfs goes to the filesystem, so a dead FUSE client shows up as ENOTCONN and
// a hung one as a timeout.
import { statfs } from 'node:fs/promises';

/** undefined when the mount answers, else why not. */
export async function probeMount(target: string, timeoutMs = 2000): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`no answer from ${target} within ${timeoutMs} ms`), timeoutMs);
  });
  try {
    return await Promise.race([
      statfs(target).then(
        () => undefined,
        (err: NodeJS.ErrnoException) => `${target}: ${err.code ?? err.message}`,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
