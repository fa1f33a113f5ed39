// Real faults for integration tests: loop devices, a tmpfs filled to its last page, a frozen
// filesystem, a private mount namespace, a stopped process. Each comes with its undo, which is safe
// to call twice and after a failure, so that `after` can always call it: a frozen filesystem or a
// stopped FUSE client left behind would hang the machine's later tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdir, open, readFile, readlink, statfs, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { readMounts } from '../../src/host/mountinfo.js';

/** Runs every undo, in reverse order of registration, whatever each one throws. */
export class Undo {
  private readonly steps: Array<{ what: string; fn: () => Promise<unknown> }> = [];
  add(what: string, fn: () => Promise<unknown>): void {
    this.steps.push({ what, fn });
  }
  async run(): Promise<void> {
    const failed: string[] = [];
    while (this.steps.length > 0) {
      const { what, fn } = this.steps.pop()!;
      await fn().catch((err: Error) => failed.push(`${what}: ${err.message}`));
    }
    if (failed.length > 0) console.error('clean-up steps failed:', failed);
  }
}

/** A sparse file of `bytes` attached to a free loop device; detached by `undo`. */
export async function attachLoop(file: string, bytes: number, undo: Undo): Promise<string> {
  await writeFile(file, '');
  await truncate(file, bytes);
  const dev = (await execa('losetup', ['--find', '--show', file])).stdout.trim();
  undo.add(`losetup -d ${dev}`, () => execa('losetup', ['-d', dev], { reject: false }));
  return dev;
}

/** Whether anything is mounted at `p` in the mount table `table` (ours by default). */
export async function mountedAt(p: string, table = '/proc/self/mountinfo'): Promise<boolean> {
  return (await readMounts(table)).some((m) => m.mountPoint === p);
}

/** Unmounts `p` (lazily: whatever holds it) until nothing is mounted there. */
export async function unmountAll(p: string): Promise<void> {
  for (let i = 0; i < 8 && (await mountedAt(p)); i++) await execa('umount', ['-l', p], { reject: false });
}

/** A tmpfs of `size` (mount's syntax: 2m, 200m) at `dir`, unmounted by `undo`. */
export async function mountTmpfs(dir: string, size: string, undo: Undo): Promise<void> {
  await mkdir(dir, { recursive: true });
  await execa('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'ossnas-fault-tmpfs', dir]);
  undo.add(`umount ${dir}`, () => unmountAll(dir));
}

/** Bytes that an ordinary write may still take on the filesystem of `dir`. */
export async function freeBytes(dir: string): Promise<number> {
  const st = await statfs(dir);
  return st.bavail * st.bsize;
}

/**
 * Appends to `file` until the filesystem refuses with ENOSPC, in smaller and smaller writes down
 * to one byte, so that not a single free block is left. Returns the bytes written.
 */
export async function fillUntilFull(file: string): Promise<number> {
  const fh = await open(file, 'a');
  let written = 0;
  try {
    for (let chunk = 1 << 16; chunk >= 1; ) {
      try {
        const { bytesWritten } = await fh.write(Buffer.alloc(chunk, 0x55));
        written += bytesWritten;
        if (bytesWritten < chunk) chunk = Math.floor(chunk / 2);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        chunk = Math.floor(chunk / 2);
      }
    }
  } finally {
    await fh.close();
  }
  return written;
}

/** The plugin's JSON log lines (pino), with anything that is not JSON skipped. */
export function logLines(output: string): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  for (const l of output.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      // a line cut short at a kill
    }
  }
  return lines;
}

/** A process sleeping in a mount namespace of its own whose mounts propagate nowhere; killed by `undo`. */
export async function privateMountNamespace(undo: Undo): Promise<number> {
  const child: ChildProcess = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sleep', '600'], { stdio: 'ignore' });
  undo.add('the private namespace', async () => {
    child.kill('SIGKILL');
  });
  // unshare execs sleep in the new namespace: the PID stays, the namespace changes.
  const ours = await readMountNs('self');
  for (let i = 0; i < 200; i++) {
    const theirs = await readMountNs(child.pid!);
    if (theirs && theirs !== ours) return child.pid!;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('unshare did not enter a mount namespace of its own within 4 s');
}

async function readMountNs(pid: number | 'self'): Promise<string | undefined> {
  return readlink(`/proc/${pid}/ns/mnt`).catch(() => undefined);
}

/**
 * Every live FUSE client (s3fs or rclone) with `mountpoint` in its argv, stopped ones included: a second
 * client started beside a stopped one must count, whichever /proc lists first.
 */
export async function fuseClients(mountpoint: string): Promise<number[]> {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const argv = (await readFile(`/proc/${e}/cmdline`, 'latin1').catch(() => '')).split('\0');
    if (['s3fs', 'rclone'].includes(path.basename(argv[0] ?? '')) && argv.slice(1).includes(mountpoint)) pids.push(Number(e));
  }
  return pids;
}

/** Stops `pid` (SIGSTOP); `undo` continues it, so that it can be killed or finish. */
export function stopProcess(pid: number, undo: Undo): void {
  undo.add(`SIGCONT ${pid}`, async () => {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone already
    }
  });
  process.kill(pid, 'SIGSTOP');
}

/** A small ext4 filesystem on a loop device, mounted at `dir`; unmounted (thawed first) and detached by `undo`. */
export async function scratchFilesystem(image: string, dir: string, bytes: number, undo: Undo): Promise<string> {
  const dev = await attachLoop(image, bytes, undo);
  await execa('mkfs.ext4', ['-q', '-F', dev]);
  await mkdir(dir, { recursive: true });
  await execa('mount', [dev, dir]);
  undo.add(`umount ${dir}`, async () => {
    await execa('fsfreeze', ['-u', dir], { reject: false }); // a frozen filesystem cannot be unmounted
    await unmountAll(dir);
  });
  return dev;
}

/** Freezes the filesystem mounted at `dir` (fsfreeze -f); `undo` thaws it whatever happens. */
export async function freeze(dir: string, undo: Undo): Promise<() => Promise<void>> {
  const thaw = async () => {
    await execa('fsfreeze', ['-u', dir], { reject: false });
  };
  undo.add(`fsfreeze -u ${dir}`, thaw);
  await execa('fsfreeze', ['-f', dir]);
  return thaw;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
