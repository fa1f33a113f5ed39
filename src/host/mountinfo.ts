// The kernel's mount table as this process sees it (/proc/self/mountinfo).
import { readFile } from 'node:fs/promises';

export interface MountEntry {
  /** major:minor of the filesystem */
  device: string;
  /** the directory of that filesystem that is mounted here ('/' unless a bind mount) */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
  /** per-mount options (ro, nosuid...) */
  options: string;
  /** the filesystem's own options (for NFS: vers, addr, timeo...) */
  superOptions: string;
}

// mountinfo escapes space, tab, newline and backslash as \ooo octal.
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    if (sep < 0 || fields.length < sep + 3) continue;
    entries.push({
      device: fields[2] ?? '',
      root: unescape(fields[3] ?? ''),
      mountPoint: unescape(fields[4] ?? ''),
      options: fields[5] ?? '',
      fsType: fields[sep + 1] ?? '',
      source: unescape(fields[sep + 2] ?? ''),
      superOptions: fields[sep + 3] ?? '',
    });
  }
  return entries;
}

export async function readMounts(file = '/proc/self/mountinfo'): Promise<MountEntry[]> {
  return parseMountinfo(await readFile(file, 'utf8'));
}

/**
 * The topmost mount at exactly `path`, if any (later lines stack over earlier ones), as this
 * process sees it, or as another does when given its /proc/PID/mountinfo.
 */
export async function findMount(path: string, file?: string): Promise<MountEntry | undefined> {
  return topmostAt(await readMounts(file), path);
}

/** The topmost mount at exactly `path` in a table already read (later lines stack over earlier ones). */
export function topmostAt(mounts: readonly MountEntry[], path: string): MountEntry | undefined {
  for (let i = mounts.length - 1; i >= 0; i--) if (mounts[i]!.mountPoint === path) return mounts[i];
  return undefined;
}

export async function isMountpoint(path: string): Promise<boolean> {
  return (await findMount(path)) !== undefined;
}
