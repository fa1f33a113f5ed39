// A server under test as a child process: spawned, timed from spawn to a socket that accepts a
// connection, its peak RSS read from /proc, stopped with SIGTERM. Shared by the three launchers.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile, lstat } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';

export interface ServerProcess {
  pid: number;
  socket: string;
  /** performance.now() just before spawn(). */
  spawnedAt: number;
  /** From spawn() to the first accepted connection on the socket, in ms. */
  listenMs: number;
  /** Peak resident set size so far (VmHWM), in bytes. */
  peakRss(): Promise<number>;
  /** The last few KB the process printed, for error messages. */
  output(): string;
  /** SIGTERM, and wait for the exit. */
  stop(): Promise<void>;
}

/** What each launcher provides: how to start its server on a directory, and how to create volumes. */
export interface Launcher {
  name: string;
  /** Create options that need no network and never mount. */
  createOpts: Record<string, string>;
  /** Whether volumes survive a restart (the floor keeps them in memory only). */
  persistent: boolean;
  /** Start on `dir` (fresh, or the same directory again for a restart). */
  start(dir: string): Promise<ServerProcess>;
  /** Where the server keeps its state below `dir` (measured after the creates). */
  stateDir(dir: string): string;
  /** A one-line version string for the JSON report. */
  version(): Promise<string>;
}

const OUTPUT_KEEP = 8192;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tryConnect(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socket, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** Spawns `command` and polls its socket every millisecond until it accepts a connection. */
export async function launch(
  command: string,
  args: string[],
  env: Record<string, string>,
  socket: string,
  timeoutMs = 600_000, // rclone 1.60 restores its volumes one by one before it listens: 8 s for 1000 here
): Promise<ServerProcess> {
  let out = '';
  const keep = (chunk: Buffer) => {
    out = (out + chunk.toString('utf8')).slice(-OUTPUT_KEEP);
  };
  const spawnedAt = performance.now();
  const child: ChildProcess = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  // Always drained (a full pipe would block the server), as dockerd drains a plugin's output.
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let listenMs = -1;
  while (performance.now() - spawnedAt < timeoutMs) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    if (await tryConnect(socket)) {
      listenMs = performance.now() - spawnedAt;
      break;
    }
    await sleep(1);
  }
  if (listenMs < 0) {
    child.kill('SIGKILL');
    await exited;
    throw new Error(`${command} did not listen on ${socket} (exit ${child.exitCode ?? child.signalCode}); its output:\n${out}`);
  }
  const pid = child.pid!;
  return {
    pid,
    socket,
    spawnedAt,
    listenMs,
    output: () => out,
    async peakRss() {
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      const kb = /^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1];
      if (!kb) throw new Error(`no VmHWM in /proc/${pid}/status`);
      return Number(kb) * 1024;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Apparent size of every regular file below `dir`, in bytes. */
export async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) total += await dirBytes(p);
    else if (entry.isFile()) total += (await lstat(p)).size;
  }
  return total;
}

/** Mount points at or below `dir` (none are expected: no benchmark call mounts anything). */
export async function mountsBelow(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((mp) => mp === dir || mp.startsWith(dir + '/'));
}
