// dockerd in the NFS guest (scripts/nfs-guest.sh), which starts none: what it needs first, and a
// daemon started, waited for and stopped. Shared by the guest tests that run containers on NAS
// volumes (test/guest/nas-docker.test.ts: one daemon; test/guest/nas-swarm.test.ts: two, each in
// a mount namespace of its own).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { execa } from 'execa';
import { readMounts } from '../../src/host/mountinfo.js';
import { dockerResult } from './docker.js';

const CGROUP = '/sys/fs/cgroup';
/**
 * Under TCG (no KVM) dockerd answered after 6-14 s in the guest on a 2-core host. Generous, for
 * a busy host.
 */
export const DOCKERD_START_MS = 120_000;

export const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/**
 * What every dockerd of the guest needs, done once: the cgroup2 hierarchy (the guest's init mounts
 * it; mounted here if not: cgroup2 alone, no v1 hierarchy holds any controller here, so v2 gets
 * them all), the overlay module, which nothing has loaded, and the fuse module (/dev/fuse, for the
 * managed plugin's s3fs). Returns the storage driver to use (vfs, a full copy per layer, slow but
 * needing no kernel support, if overlay cannot be loaded) and notes for the test's diagnostics.
 */
export async function prepareGuestForDockerd(): Promise<{ storage: 'overlay2' | 'vfs'; notes: string[] }> {
  const notes: string[] = [];
  if (!(await readMounts()).some((m) => m.mountPoint === CGROUP && m.fsType === 'cgroup2')) {
    await execa('mount', ['-t', 'cgroup2', 'cgroup2', CGROUP]);
    notes.push(`mounted cgroup2 at ${CGROUP}`);
  }
  await execa('modprobe', ['-a', 'overlay', 'fuse'], { reject: false });
  const storage = /\toverlay$/m.test(await readFile('/proc/filesystems', 'utf8')) ? 'overlay2' : 'vfs';
  return { storage, notes };
}

export interface Dockerd {
  child: ChildProcess;
  /** `unix://...`: the socket its clients give with -H */
  host: string;
  /** Its stdout and stderr. */
  log: string;
  /** ms from the first spawn to its first answer */
  startMs: number;
  /** how many times it was started (see CONTAINERD_SLOW) */
  attempts: number;
  logTail(lines?: number): Promise<string>;
  /** SIGTERM, and waits (SIGKILL after 60 s); dockerd stops the containerd it started. */
  stop(): Promise<void>;
}

export interface DockerdOptions {
  /** `unix:///path/docker.sock`, also given to dockerd as --host */
  host: string;
  /** dockerd's flags other than --host */
  args: string[];
  /** File for its output: a file, not a pipe, so that dockerd never blocks on (or keeps open) our stdio. */
  log: string;
  /** A command that runs dockerd somewhere else, e.g. `nsenter -t PID -m --` (it must exec dockerd). */
  prefix?: string[];
}

/**
 * dockerd gives the containerd it starts 15 s to serve, and exits when it does not ("timeout
 * waiting for containerd to start"): under TCG on a busy host that happens. The containerd goes
 * on starting, and a dockerd started again adopts it (by its pid file under the exec root): so
 * that exit is retried, a few times.
 */
const CONTAINERD_SLOW = 'timeout waiting for containerd to start';
const STARTS = 3;

/** Starts dockerd and waits until `docker version` gets an answer from it. */
export async function startDockerd(opts: DockerdOptions): Promise<Dockerd> {
  const t0 = Date.now();
  for (let attempt = 1; ; attempt++) {
    const logFrom = (await stat(opts.log).catch(() => undefined))?.size ?? 0;
    try {
      const d = await startOnce(opts);
      d.startMs = Date.now() - t0;
      d.attempts = attempt;
      return d;
    } catch (err) {
      const said = (await readFile(opts.log, 'utf8').catch(() => '')).slice(logFrom);
      if (attempt >= STARTS || !(err instanceof DockerdExited) || !said.includes(CONTAINERD_SLOW)) throw err;
    }
  }
}

class DockerdExited extends Error {}

async function startOnce(opts: DockerdOptions): Promise<Dockerd> {
  const fd = openSync(opts.log, 'a');
  const argv = [...(opts.prefix ?? []), 'dockerd', '--host', opts.host, ...opts.args];
  const t0 = Date.now();
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  let exit: string | undefined;
  const exited = new Promise<void>((r) =>
    child.once('exit', (code, signal) => {
      exit = `exit ${code ?? signal}`;
      r();
    }),
  );
  child.once('error', (err) => (exit = String(err)));
  const logTail = async (lines = 40) => (await readFile(opts.log, 'utf8').catch(() => '')).split('\n').slice(-lines).join('\n');
  const running = () => child.exitCode === null && child.signalCode === null;
  const d: Dockerd = {
    child,
    host: opts.host,
    log: opts.log,
    startMs: 0,
    attempts: 1,
    logTail,
    async stop() {
      if (!running()) return;
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const stopped = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 60_000)))]);
      clearTimeout(timer); // a pending timer would keep this process (and the guest) up for a minute
      if (!stopped) {
        console.error(`dockerd (${opts.host}) ignored SIGTERM for 60 s; killing it. Its log:\n${await logTail()}`);
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
  for (;;) {
    // Its own words are not the last lines: the containerd it started writes on to the same file.
    if (exit) throw new DockerdExited(`${argv.join(' ')} ended (${exit}) before answering:\n${await logTail()}\nits errors: ${await errorsIn(opts.log)}`);
    if (Date.now() - t0 > DOCKERD_START_MS) {
      await d.stop();
      throw new Error(`dockerd (${opts.host}) did not answer 'docker version' within ${secs(DOCKERD_START_MS)}:\n${await logTail()}`);
    }
    if ((await dockerResult(['-H', opts.host, 'version'], { timeout: 10_000 }).catch(() => undefined))?.exitCode === 0) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  return d;
}

async function errorsIn(log: string): Promise<string> {
  const lines = (await readFile(log, 'utf8').catch(() => '')).split('\n');
  return lines.filter((l) => /level=(error|fatal)|^failed to start/.test(l)).slice(-5).join('\n') || '(none)';
}
