// The real program (dist/main.js) as a plain host process with private directories: the legacy
// plugin mode, driven over its socket.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { readMounts } from '../../src/host/mountinfo.js';
import { PluginClient } from './docker-client.js';
import { tempDir } from './env.js';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface PluginProcess {
  dir: string;
  socket: string;
  mountRoot: string;
  credentialsDir: string;
  runDir: string;
  client: PluginClient;
  child: ChildProcess;
  output(): string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** Start again on the same directories (a plugin restart). */
  restart(): Promise<PluginProcess>;
}

export async function waitForSocket(socket: string, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect(socket, () => (s.end(), res(true)));
      s.on('error', () => res(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`plugin socket ${socket} did not listen within ${timeoutMs} ms`);
}

export interface StartOptions {
  /**
   * A command that runs the program somewhere else and execs it, e.g. `nsenter -t PID -m --`
   * (another mount namespace): the child is then the program itself, and signals reach it.
   */
  prefix?: string[];
  /** How long it may take to listen (default 5 s; a guest under TCG with dockerds starting beside it is slower). */
  socketTimeoutMs?: number;
}

export async function startPlugin(dir: string, env: Record<string, string> = {}, opts: StartOptions = {}): Promise<PluginProcess> {
  const socket = env.OSSNAS_SOCKET ?? path.join(dir, 'ossnas.sock');
  const credentialsDir = path.join(dir, 'credentials');
  const mountRoot = path.join(dir, 'volumes');
  const runDir = path.join(dir, 'run');
  await mkdir(credentialsDir, { recursive: true });
  let out = '';
  const argv = [...(opts.prefix ?? []), process.execPath, path.join(REPO_ROOT, 'dist', 'main.js')];
  const child = spawn(argv[0]!, argv.slice(1), {
    env: {
      PATH: process.env.PATH,
      OSSNAS_SOCKET: socket,
      OSSNAS_STATE_DIR: path.join(dir, 'state'),
      OSSNAS_MOUNT_ROOT: mountRoot,
      OSSNAS_CREDENTIALS_DIR: credentialsDir,
      OSSNAS_RUN_DIR: runDir,
      LOG_LEVEL: 'debug',
      UV_THREADPOOL_SIZE: '64', // as config.json sets it
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (c) => (out += String(c)));
  child.stderr?.on('data', (c) => (out += String(c)));
  try {
    await waitForSocket(socket, opts.socketTimeoutMs);
  } catch (err) {
    child.kill('SIGKILL'); // a child left running would keep the test process alive
    throw new Error(`${(err as Error).message}; its output:\n${out}`);
  }
  const client = new PluginClient(socket);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const p: PluginProcess = {
    dir,
    socket,
    mountRoot,
    credentialsDir,
    runDir,
    client,
    child,
    output: () => out,
    async stop() {
      client.close();
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
    async restart() {
      await p.stop();
      return startPlugin(dir, env, opts);
    },
  };
  return p;
}

/** The program on a fresh temporary directory: one per suite, ended with finishPlugin. */
export async function startPluginInTempDir(env: Record<string, string> = {}): Promise<PluginProcess> {
  return startPlugin((await tempDir()).dir, env);
}

/**
 * Stops the program and deletes its directory. Mounts a failed test left below it are reported
 * and detached first: a recursive delete walks into mounts, and would delete a bucket's or a
 * share's data.
 */
export async function finishPlugin(plugin: PluginProcess | undefined): Promise<void> {
  if (!plugin) return;
  await plugin.stop();
  const left = (await readMounts()).filter((m) => m.mountPoint.startsWith(plugin.dir + '/'));
  for (const m of left.reverse()) {
    // The plugin's own tmpfs for FUSE clients' keys stays by design (a restart uses it again).
    if (m.mountPoint !== plugin.runDir) console.error('left mounted:', m);
    await execa('umount', ['-l', m.mountPoint], { reject: false });
  }
  await rm(plugin.dir, { recursive: true, force: true });
}

/** A credentials profile as an operator writes one (0600); with a securityToken, an STS profile. */
export async function writeProfile(
  credentialsDir: string,
  name: string,
  akId: string,
  akSecret: string,
  securityToken?: string,
): Promise<void> {
  const token = securityToken === undefined ? '' : `securityToken=${securityToken}\n`;
  await writeFile(path.join(credentialsDir, name), `akId=${akId}\nakSecret=${akSecret}\n${token}`, { mode: 0o600 });
}
