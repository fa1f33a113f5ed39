// Every child process goes through execa with an argument array: never a shell string.
import type { execa as Execa } from 'execa';
import { scrub } from '../redact.js';

export class CommandError extends Error {
  constructor(
    message: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
  ) {
    super(message);
  }
}

export interface RunOptions {
  timeoutMs?: number;
  /** Values to remove from any error text (the command's output can echo them). */
  secrets?: string[];
  env?: Record<string, string>;
}

let execaModule: Promise<typeof Execa> | undefined;
/**
 * execa, loaded at its first use: it is the slowest of our modules to load (about 100-190 ms
 * here), and a plugin answers Get and List at start without running any command.
 */
export function loadExeca(): Promise<typeof Execa> {
  execaModule ??= import('execa').then((m) => m.execa);
  return execaModule;
}

/** How long to wait for a killed child to go away before giving up on it. */
const EXIT_GRACE_MS = 1000;

/**
 * How long past its timeout a run() may take (it kills the child, then stops waiting for it
 * EXIT_GRACE_MS later), with some room: what a caller keeps of its deadline after each command.
 */
export const RUN_OVERRUN_MS = EXIT_GRACE_MS + 500;

/**
 * Runs a command to completion; throws CommandError carrying the command's own stderr. At the
 * deadline the child is killed, and we stop waiting for it a moment later even if it has not
 * gone: a umount or mount blocked in the kernel on a dead NFS server ignores SIGKILL for minutes
 * (measured: 6 min for an NFS v4.1 umount), and no caller may hang with it.
 */
export async function run(command: string, args: string[], opts: RunOptions = {}): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const execa = await loadExeca();
  const child = execa(command, args, {
    reject: false,
    stdin: 'ignore',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    ...(opts.env ? { env: opts.env, extendEnv: false } : {}),
  });
  let timer: NodeJS.Timeout | undefined;
  const abandoned = new Promise<'abandoned'>((resolve) => {
    timer = setTimeout(() => resolve('abandoned'), timeoutMs + EXIT_GRACE_MS);
  });
  const result = await Promise.race([child, abandoned]).finally(() => clearTimeout(timer));
  if (result === 'abandoned') {
    child.kill('SIGKILL');
    throw new CommandError(`${command} timed out after ${timeoutMs} ms and is stuck in the kernel (pid ${child.pid ?? '?'}); no longer waiting for it`, undefined, '');
  }
  if (result.exitCode === 0 && !result.failed) return result.stdout;
  const said = scrub(String(result.stderr || result.stdout || '').trim(), opts.secrets ?? []);
  const why = result.timedOut
    ? `timed out after ${timeoutMs} ms`
    : result.exitCode !== undefined
      ? `exited with code ${result.exitCode}`
      : `failed (${result.signal ?? result.code ?? 'unknown'})`;
  throw new CommandError(`${command} ${why}${said ? `: ${said}` : ''}`, result.exitCode, said);
}
