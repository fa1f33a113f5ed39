// FUSE clients (s3fs, ossfs) run in the foreground as our children, so we see their exit status
// and their own error text, and we decide when the mount counts as ready: when statfs of the
// mountpoint is answered by a FUSE filesystem (a double-forking client gives no such signal).
import { readFile, statfs } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import { scrub } from '../redact.js';
import { leaveOurCgroups } from './cgroups.js';
import { processIds, startTime } from './proc.js';
import { run } from './exec.js';
import { SpawnError, startProcess, type Started } from './spawner.js';
import { findMount, type MountEntry } from './mountinfo.js';
import { lazyUnmount } from './unmount.js';

export class FuseMountError extends Error {}

export interface FuseStart {
  command: string;
  args: string[];
  /** The child's whole environment: nothing of ours (and no stray credentials) is inherited. */
  env: Record<string, string>;
  /** Its working directory, when it must not be ours (relative paths in args and env start there). */
  cwd?: string;
  target: string;
  deadlineMs: number;
  secrets: string[];
  log: Logger;
  /**
   * Inside the managed plugin: a process in the host's mount namespace. The client is then
   * moved out of our cgroups (through the host's cgroupfs), so that it outlives a plugin crash.
   */
  hostPid?: number;
}

export interface FuseExit {
  code: number | undefined;
  signal: string | undefined;
  stderr: string;
}

/** How a client ended, for a log line or Status: "was killed by SIGKILL: <its last words>". */
export function describeExit(exit: FuseExit): string {
  const how = exit.signal ? `was killed by ${exit.signal}` : exit.code !== undefined ? `exited with code ${exit.code}` : 'exited';
  return `${how}${exit.stderr ? `: ${exit.stderr}` : ''}`;
}

export interface FuseDaemon {
  command: string;
  pid: number | undefined;
  /** Resolves when the client process ends, for whatever reason. */
  exited: Promise<FuseExit>;
  /** The client's latest stderr, secrets removed. */
  stderrTail(): string;
  /** Ends the client (SIGTERM, then SIGKILL), without waiting: for a client whose mount is dead. */
  stop(): void;
}

/** How long stopping a client that missed its deadline may take, and undoing its mount: callers keep this much of their deadline. */
export const FUSE_STOP_MS = 3000;

const STDERR_TAIL_BYTES = 8192;
/** statfs of a directory that is not mounted yet costs microseconds: polled often, it adds little to a mount. */
const POLL_MS = 2;
/** statfs's f_type for every FUSE filesystem (linux/magic.h). */
const FUSE_SUPER_MAGIC = 0x65735546;

async function isFuseMounted(target: string): Promise<boolean> {
  const m = await findMount(target);
  return !!m && m.fsType.startsWith('fuse');
}

/**
 * Whether a FUSE client has answered at `target`: 'answered', 'not-yet' (still the directory
 * below), or 'aborted' (the client gave up after mounting). statfs waits for the client's answer
 * to the kernel's INIT, which s3fs gives only after its check of the bucket and keys passed; when
 * the check fails it exits without answering, and statfs fails with ECONNABORTED (measured with
 * s3fs 1.90 and a missing bucket or an unknown key: never answered, exit 1-4 ms later).
 */
async function fuseAnswer(target: string, ms: number): Promise<'answered' | 'not-yet' | 'aborted' | 'timeout'> {
  try {
    const st = await withTimeout(statfs(target), ms);
    return st.type === FUSE_SUPER_MAGIC ? 'answered' : 'not-yet';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ECONNABORTED' || code === 'ENOTCONN' ? 'aborted' : code ? 'not-yet' : 'timeout';
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`timed out after ${ms} ms`)))]);
}

export async function startFuseDaemon(spec: FuseStart): Promise<FuseDaemon> {
  // s3fs writes early errors to stderr and its log ([CRT], [ERR] ...) to stdout: keep the tail
  // of both, without the chatty [INF]/[DBG] lines.
  let tail = '';
  let child: Started;
  try {
    child = await startProcess(spec.command, spec.args, {
      env: spec.env,
      ...(spec.cwd && { cwd: spec.cwd }),
      // The daemon must not die with us: in host-process mode it keeps serving containers
      // across an ossnas restart. Inside a managed plugin the cgroup decides anyway.
      detached: true,
      onOutput: (_stream, chunk) => {
        tail = (tail + chunk).slice(-STDERR_TAIL_BYTES);
      },
    });
  } catch (err) {
    if (err instanceof SpawnError) throw new FuseMountError(`${spec.command} could not be started (${err.code})`);
    throw err;
  }
  const stderrTail = () =>
    scrub(
      tail
        .split('\n')
        .filter((l) => l.trim() && !/\[(INF|DBG)\]/.test(l))
        .join('\n')
        .trim(),
      spec.secrets,
    );

  let done = false;
  const exited: Promise<FuseExit> = child.exited.then((r) => {
    done = true;
    return { code: r.code, signal: r.signal, stderr: stderrTail() };
  });
  const daemon: FuseDaemon = { command: spec.command, pid: child.pid, exited, stderrTail, stop: () => void stopProcess(child, exited) };
  const name = spec.command;

  // Out of our cgroups while it mounts, not after: the move takes a few ms per hierarchy.
  const leaving =
    spec.hostPid !== undefined && child.pid ? outliveUs(child.pid, spec.hostPid, name, spec.log) : Promise.resolve();
  const failed = async () => {
    const r = await exited;
    await lazyUnmount(spec.target); // a client that died mounted leaves a dead mount behind
    const how = r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
    return new FuseMountError(
      r.stderr ? `${name} could not mount (${how}): ${r.stderr}` : `${name} stopped before the mount was ready (${how})`,
    );
  };

  const deadline = Date.now() + spec.deadlineMs;
  while (Date.now() < deadline) {
    // Only an answer counts: a client stuck checking an unreachable endpoint (a blackholed
    // server) never answers INIT, and its mount must not be handed out as ready.
    const answer = await fuseAnswer(spec.target, Math.max(deadline - Date.now(), 1));
    if (answer === 'answered' && !done && (await isFuseMounted(spec.target))) {
      await leaving;
      return daemon;
    }
    // An aborted connection means the client is on its way out: wait for its exit and its words.
    await Promise.race([exited, sleep(answer === 'aborted' ? 1000 : POLL_MS)]);
    if (done) throw await failed();
  }

  // Too slow: stop the client and make sure nothing is left mounted.
  spec.log.warn({ target: spec.target, command: name }, 'FUSE mount deadline passed; stopping the client');
  await stopProcess(child, exited);
  await lazyUnmount(spec.target);
  const said = stderrTail();
  throw new FuseMountError(
    `${name} did not finish mounting within ${Math.round(spec.deadlineMs / 1000)} s` +
      (said ? `: ${said}` : ' (it printed nothing; is the endpoint reachable?)'),
  );
}

/**
 * A failure here costs only the client's survival of a plugin crash (the restarted plugin then
 * mounts the volume again), so it is logged, not thrown.
 */
async function outliveUs(pid: number, hostPid: number, command: string, log: Logger): Promise<void> {
  const failures = await leaveOurCgroups(pid, hostPid).catch((err: Error) => [err.message]);
  if (failures.length) {
    log.warn({ pid, command, failures }, 'FUSE client stays in the plugin cgroup and will die with the plugin');
  }
}

/** SIGTERM, a second to go, then SIGKILL and another second: within FUSE_STOP_MS with the lazy unmount after it. */
async function stopProcess(child: Started, exited: Promise<unknown>): Promise<void> {
  child.kill('SIGTERM');
  const stopped = await Promise.race([exited.then(() => true), sleep(1000).then(() => false)]);
  if (!stopped) {
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(1000)]);
  }
}

/**
 * Unmounts a FUSE mount. Throws with umount's own text on failure. The client is not waited for:
 * s3fs and ossfs upload a file when it is closed, so once umount returns nothing is left to
 * write, and the client's exit (tens of ms, noticed later still) would only delay the container.
 * `-c`: umount would otherwise stat the path first, which waits for a client that does not answer.
 */
export async function unmountFuse(target: string, timeoutMs = 10_000): Promise<void> {
  if (await findMount(target)) await run('umount', ['-c', target], { timeoutMs });
}

const WATCH_MS = 1000;


interface Candidate {
  pid: number;
  command: string;
}

/**
 * Every running FUSE client of the given commands, by the mountpoint in its argv. That is argv[2]
 * as we start it, but s3fs splits `bucket:/path` in place, so any absolute-path word counts.
 * Several clients may name one path: every ossnas plugin on the host mounts at /mnt/volumes/NAME
 * in a mount namespace of its own, and with pidhost we see all their clients.
 */
async function clientsByTarget(commands: readonly string[]): Promise<Map<string, Candidate[]>> {
  const found = new Map<string, Candidate[]>();
  const pids = await processIds();
  await Promise.all(
    pids.map(async (p) => {
      const argv = (await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')).split('\0');
      const command = path.basename(argv[0]!);
      if (!commands.includes(command)) return;
      for (const word of argv.slice(1)) {
        if (!word.startsWith('/')) continue;
        const list = found.get(word) ?? [];
        if (!list.some((c) => c.pid === p)) list.push({ pid: p, command });
        found.set(word, list);
      }
    }),
  );
  return found;
}

/**
 * Whether `candidate` serves `mount`: in its own mount namespace the topmost mount at `target` is
 * that same FUSE connection (its device, 0:N, is unique while the connection lives). The argv
 * path cannot tell apart the clients of two plugins on one host; the device can. A client that
 * outlived an earlier process of ours still shows it: it lives in that process's namespace, where
 * the mount sits at the same path, the one we see through the propagated mount. The topmost
 * mount, not any: a namespace copied from ours after we mounted holds our mount too, under the
 * one its own client made.
 */
async function serves(candidate: Candidate, target: string, mount: MountEntry): Promise<boolean> {
  const theirs = await findMount(target, `/proc/${candidate.pid}/mountinfo`).catch(() => undefined);
  return !!theirs && theirs.fsType.startsWith('fuse') && theirs.device === mount.device;
}

let scan: { at: number; result: ReturnType<typeof clientsByTarget> } | undefined;

/**
 * The client serving the mount at `target` that this process sees (one that outlived an earlier
 * plugin process), watched so that its exit is noticed like a child's. Undefined when no FUSE
 * mount is there or no client of it is found: another plugin's client at the same path must never
 * be watched, let alone stopped. A restore adopts many mounts at once: one scan of /proc serves
 * them all; the device is checked per target.
 */
export async function adoptFuseClient(target: string, commands: readonly string[]): Promise<FuseDaemon | undefined> {
  const mount = await findMount(target);
  if (!mount || !mount.fsType.startsWith('fuse')) return undefined;
  if (!scan || Date.now() - scan.at > WATCH_MS) scan = { at: Date.now(), result: clientsByTarget(commands) };
  let found: Candidate | undefined;
  for (const candidate of (await scan.result).get(target) ?? []) {
    if (await serves(candidate, target, mount)) {
      found = candidate;
      break;
    }
  }
  const started = found && (await startTime(found.pid));
  if (!found || !started) return undefined;
  const { pid, command } = found;
  const exited = new Promise<FuseExit>((resolve) => {
    const timer = setInterval(() => {
      void startTime(pid).then((now) => {
        if (now === started) return;
        clearInterval(timer);
        resolve({ code: undefined, signal: undefined, stderr: '' });
      });
    }, WATCH_MS);
    timer.unref();
  });
  const stop = () => {
    void startTime(pid).then((now) => {
      if (now === started) process.kill(pid, 'SIGKILL'); // still the same process: it gets no second chance
    });
  };
  return { command, pid, exited, stderrTail: () => '', stop };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
