// Every process the plugin starts is started by one small helper process (native/ossnas-spawn.c),
// never by Node itself: Node forks, which stops the event loop that answers Docker for as long as
// the kernel copies the plugin's page tables (about 29 ms per process on a busy host; 16 Mounts
// at once held it 0.3-1 s). The helper is started once, the first time it is needed (main.ts asks
// for it at start), and again if it ever dies. What it started does not depend on it: a helper
// that dies leaves its processes running, and their ends are then noticed by watching /proc.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath } from 'node:url';
import { startTime } from './proc.js';

/** The helper binary, built by `npm run build` (scripts/build-native.sh); the same place from src/ and dist/. */
export const SPAWN_HELPER = fileURLToPath(new URL('../../native/ossnas-spawn', import.meta.url));

export interface SpawnOptions {
  /** The child's whole environment (its PATH also finds the command). */
  env: Record<string, string | undefined>;
  cwd?: string;
  /** In a session of its own, as child_process's `detached`: no signal for our group reaches it. */
  detached?: boolean;
  /** Each chunk of its stdout or stderr, decoded as UTF-8. */
  onOutput?: (stream: 'stdout' | 'stderr', text: string) => void;
}

export interface ProcessExit {
  /** Its exit code, or undefined when a signal ended it (or its end was seen without its status). */
  code: number | undefined;
  signal: NodeJS.Signals | undefined;
}

export interface Started {
  pid: number;
  /** Resolves once the process has ended and everything it wrote has been passed to onOutput. */
  exited: Promise<ProcessExit>;
  /** Sends a signal; a process that has already ended is no error. */
  kill(signal: NodeJS.Signals): void;
}

/** The command could not be started (not found, not executable); nothing runs. */
export class SpawnError extends Error {
  constructor(
    readonly command: string,
    readonly code: string,
  ) {
    super(`${command} could not be started (${code})`);
  }
}

interface Pending {
  command: string;
  opts: SpawnOptions;
  started: { resolve: (s: Started) => void; reject: (err: Error) => void };
  pid?: number;
  ended?: (e: ProcessExit) => void;
  decoders: { stdout: StringDecoder; stderr: StringDecoder };
}

const WATCH_MS = 1000;
/** The errno names the helper's F events carry most often (Linux numbers). */
const ERRNO_NAMES: Record<number, string> = { 2: 'ENOENT', 7: 'E2BIG', 8: 'ENOEXEC', 12: 'ENOMEM', 13: 'EACCES', 20: 'ENOTDIR', 22: 'EINVAL' };

class Spawner {
  private helper: ChildProcess | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private buffered: Buffer = Buffer.alloc(0);

  /** Starts the helper now, so that the one fork it costs is not paid by the first Mount. */
  ready(): void {
    this.ensure();
  }

  start(command: string, args: readonly string[], opts: SpawnOptions): Promise<Started> {
    const helper = this.ensure();
    const id = this.nextId++;
    const env = Object.entries(opts.env).filter((e): e is [string, string] => e[1] !== undefined).map(([k, v]) => `${k}=${v}`);
    const fields = [String(id), opts.detached ? 's' : '', opts.cwd ?? '', String(args.length + 1), command, ...args, String(env.length), ...env];
    if (fields.some((f) => f.includes('\0'))) return Promise.reject(new SpawnError(command, 'EINVAL'));
    return new Promise<Started>((resolve, reject) => {
      this.pending.set(id, {
        command,
        opts,
        started: { resolve, reject },
        decoders: { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') },
      });
      helper.stdin!.write(fields.map((f) => `${f}\0`).join(''));
    });
  }

  private ensure(): ChildProcess {
    if (this.helper) return this.helper;
    if (!existsSync(SPAWN_HELPER)) throw new Error(`${SPAWN_HELPER} is missing: run \`npm run build\` (it needs a C compiler)`);
    // The one process Node itself starts: small while it is young, and only once.
    const helper = spawn(SPAWN_HELPER, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    helper.stdout!.on('data', (chunk: Buffer) => this.read(chunk));
    helper.stdin!.on('error', () => undefined); // its end is handled below
    helper.once('exit', () => this.lost(helper));
    helper.once('error', () => this.lost(helper));
    // Neither pipe keeps the plugin alive at a stop.
    helper.unref();
    (helper.stdout as unknown as { unref?: () => void }).unref?.();
    (helper.stdin as unknown as { unref?: () => void }).unref?.();
    this.helper = helper;
    return helper;
  }

  /** Parses events: a header line, and for output its bytes. */
  private read(chunk: Buffer): void {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    for (;;) {
      const nl = this.buffered.indexOf(10);
      if (nl < 0) return;
      const [type, idText, nText] = this.buffered.subarray(0, nl).toString('latin1').split(' ');
      const n = Number(nText);
      const isOutput = type === 'O' || type === 'E';
      if (isOutput && this.buffered.length < nl + 1 + n) return;
      const bytes = isOutput ? this.buffered.subarray(nl + 1, nl + 1 + n) : undefined;
      this.buffered = this.buffered.subarray(nl + 1 + (isOutput ? n : 0));
      const p = this.pending.get(Number(idText));
      if (p) this.event(Number(idText), p, type!, n, bytes);
    }
  }

  private event(id: number, p: Pending, type: string, n: number, bytes: Buffer | undefined): void {
    if (type === 'S') {
      p.pid = n;
      const exited = new Promise<ProcessExit>((resolve) => (p.ended = resolve));
      p.started.resolve({ pid: n, exited, kill: (signal) => killQuietly(n, signal) });
    } else if (type === 'F') {
      this.pending.delete(id);
      p.started.reject(new SpawnError(p.command, ERRNO_NAMES[n] ?? `errno ${n}`));
    } else if (bytes) {
      const stream = type === 'O' ? 'stdout' : 'stderr';
      const text = p.decoders[stream].write(bytes);
      if (text) p.opts.onOutput?.(stream, text);
    } else if (type === 'X') {
      this.pending.delete(id);
      for (const stream of ['stdout', 'stderr'] as const) {
        const rest = p.decoders[stream].end();
        if (rest) p.opts.onOutput?.(stream, rest);
      }
      p.ended?.(fromWaitStatus(n));
    }
  }

  /**
   * The helper is gone. Requests it had not answered fail; processes it started run on, and each
   * one's end is noticed by watching /proc, without its status.
   */
  private lost(helper: ChildProcess): void {
    if (this.helper !== helper) return;
    this.helper = undefined;
    this.buffered = Buffer.alloc(0);
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      if (p.pid === undefined) p.started.reject(new SpawnError(p.command, 'the spawn helper ended'));
      else void watchUntilGone(p.pid).then(() => p.ended?.({ code: undefined, signal: undefined }));
    }
  }
}


async function watchUntilGone(pid: number): Promise<void> {
  const first = await startTime(pid);
  while (first !== undefined && (await startTime(pid)) === first) await new Promise((r) => setTimeout(r, WATCH_MS).unref());
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** A wait(2) status as exit code or signal. */
function fromWaitStatus(status: number): ProcessExit {
  const sig = status & 0x7f;
  if (sig === 0) return { code: (status >> 8) & 0xff, signal: undefined };
  const name = Object.entries(os.constants.signals).find(([, n]) => n === sig)?.[0] as NodeJS.Signals | undefined;
  return { code: undefined, signal: name ?? 'SIGKILL' };
}

const spawner = new Spawner();

/** Starts `command` through the helper; rejects with SpawnError when it cannot run at all. */
export function startProcess(command: string, args: readonly string[], opts: SpawnOptions): Promise<Started> {
  return spawner.start(command, args, opts);
}

/** Starts the helper ahead of the first process (at plugin start). */
export function startSpawnHelper(): void {
  spawner.ready();
}
