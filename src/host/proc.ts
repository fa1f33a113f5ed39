// The process table as /proc shows it: one place that lists processes and reads their stat line.
import { readdir, readFile } from 'node:fs/promises';

/** Every process ID in /proc (with pidhost: every process on the host). */
export async function processIds(): Promise<number[]> {
  return (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).map(Number);
}

/**
 * The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
 * [0] is the state, [1] the parent PID, [19] the start time. Undefined once the process is gone.
 */
export async function statFields(pid: number): Promise<string[] | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat ? stat.slice(stat.lastIndexOf(')') + 2).split(' ') : undefined;
}

/**
 * The kernel's ID of the current boot, new at every start of the host. Undefined where it cannot
 * be read (then nothing is compared with it).
 */
export async function bootId(): Promise<string | undefined> {
  const id = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '')).trim();
  return id || undefined;
}

/** Field 22 of /proc/PID/stat, when the process started: tells a reused PID apart; a zombie counts as ended. */
export async function startTime(pid: number): Promise<string | undefined> {
  const fields = await statFields(pid);
  return !fields || fields[0] === 'Z' || fields[0] === 'X' ? undefined : fields[19];
}
