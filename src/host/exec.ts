// Every command runs through the spawn helper (spawner.ts) with an argument array: never a shell
// string, and never a fork of the plugin itself.
import { scrub } from '../redact.js';
import { SpawnError, startProcess, type ProcessExit } from './spawner.js';

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

/** How long to wait for a killed child to go away before giving up on it. */
const EXIT_GRACE_MS = 1000;
/** Output kept per stream: our commands print a few lines; a runaway one must not fill memory. */
const OUTPUT_LIMIT = 4 << 20;

/**
 * How long past its timeout a run() may take (it kills the child, then stops waiting for it
 * EXIT_GRACE_MS later), with some room: what a caller keeps of its deadline after each command.
 */
export const RUN_OVERRUN_MS = EXIT_GRACE_MS + 500;

/** One final newline off, as a shell's $(...) does: callers compare and parse the text. */
const withoutFinalNewline = (text: string) => text.replace(/\r?\n$/, '');

/**
 * Runs a command to completion; throws CommandError carrying the command's own stderr. At the
 * deadline the child is killed, and we stop waiting for it a moment later even if it has not
 * gone: a umount or mount blocked in the kernel on a dead NFS server ignores SIGKILL for minutes
 * (measured: 6 min for an NFS v4.1 umount), and no caller may hang with it.
 */
export async function run(command: string, args: string[], opts: RunOptions = {}): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const out = { stdout: '', stderr: '' };
  let child;
  try {
    child = await startProcess(command, args, {
      env: opts.env ?? process.env,
      onOutput: (stream, text) => {
        if (out[stream].length < OUTPUT_LIMIT) out[stream] += text;
      },
    });
  } catch (err) {
    if (err instanceof SpawnError) throw new CommandError(`${command} failed (${err.code})`, undefined, '');
    throw err;
  }
  let timedOut = false;
  const killer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  let timer: NodeJS.Timeout | undefined;
  const abandoned = new Promise<'abandoned'>((resolve) => {
    timer = setTimeout(() => resolve('abandoned'), timeoutMs + EXIT_GRACE_MS);
  });
  const result: ProcessExit | 'abandoned' = await Promise.race([child.exited, abandoned]).finally(() => {
    clearTimeout(timer);
    clearTimeout(killer);
  });
  if (result === 'abandoned') {
    child.kill('SIGKILL');
    throw new CommandError(`${command} timed out after ${timeoutMs} ms and is stuck in the kernel (pid ${child.pid}); no longer waiting for it`, undefined, '');
  }
  const [stdout, stderr] = [withoutFinalNewline(out.stdout), withoutFinalNewline(out.stderr)];
  if (result.code === 0 && !timedOut) return stdout;
  const said = scrub((stderr || stdout).trim(), opts.secrets ?? []);
  const why = timedOut
    ? `timed out after ${timeoutMs} ms`
    : result.code !== undefined
      ? `exited with code ${result.code}`
      : `failed (${result.signal ?? 'unknown'})`;
  throw new CommandError(`${command} ${why}${said ? `: ${said}` : ''}`, result.code, said);
}
