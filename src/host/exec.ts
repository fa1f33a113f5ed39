// Every child process goes through execa with an argument array: never a shell string.
import { execa } from 'execa';
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

/** Runs a command to completion; throws CommandError carrying the command's own stderr. */
export async function run(command: string, args: string[], opts: RunOptions = {}): Promise<string> {
  const result = await execa(command, args, {
    reject: false,
    stdin: 'ignore',
    timeout: opts.timeoutMs ?? 10_000,
    killSignal: 'SIGKILL',
    ...(opts.env ? { env: opts.env, extendEnv: false } : {}),
  });
  if (result.exitCode === 0 && !result.failed) return result.stdout;
  const said = scrub(String(result.stderr || result.stdout || '').trim(), opts.secrets ?? []);
  const why = result.timedOut
    ? `timed out after ${opts.timeoutMs ?? 10_000} ms`
    : result.exitCode !== undefined
      ? `exited with code ${result.exitCode}`
      : `failed (${result.signal ?? result.code ?? 'unknown'})`;
  throw new CommandError(`${command} ${why}${said ? `: ${said}` : ''}`, result.exitCode, said);
}
