// What the benchmarks that mount for real (mount-cycle, restore) share: root, the FUSE clients
// and mounts below a benchmark's own directory, a cleanup that runs once (also on Ctrl-C), and
// a plain text table. Nothing here touches a mount or a process outside the directories given.
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { fuseClientPid, isRunning } from '../test/helpers/docker.js';
import { finishPlugin, startPluginInTempDir, writeProfile, type PluginProcess } from '../test/helpers/plugin-process.js';
import { mountsBelow } from './process.js';
import { REPO_ROOT } from './servers/ossnas.js';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Progress and notes go to stderr; stdout carries only the report. */
export const log = (msg: string) => process.stderr.write(`${msg}\n`);

/**
 * The plugin as a process of its own (dist/main.js), logging at info, with the credentials
 * profile `profile`. Its cleanup, registered first: the plugin stops (it leaves its mounts in
 * place, and cannot mount them again meanwhile), then whatever is still mounted below its
 * directory goes, then the directory.
 */
export async function startBenchPlugin(cleanup: Cleanup, profile: { name: string; keyId: string; secret: string }): Promise<PluginProcess> {
  let plugin: PluginProcess | undefined;
  cleanup.add('plugin', async () => {
    if (!plugin) return;
    await plugin.stop();
    const left = await forceCleanBelow(plugin.dir);
    if (left.length) log(`cleanup: ${left.join('; ')}`);
    await finishPlugin(plugin);
  });
  plugin = await startPluginInTempDir({ LOG_LEVEL: 'info' });
  await writeProfile(plugin.credentialsDir, profile.name, profile.keyId, profile.secret);
  return plugin;
}

/** On a failure: the plugin's last lines, which say why (its own output is not shown otherwise). */
export function logPluginTail(plugin: { output(): string } | undefined): void {
  if (plugin) log(`plugin output (last lines):\n${plugin.output().split('\n').slice(-15).join('\n')}`);
}

/** Writes a benchmark's JSON report (`--out`, relative to the repository) and says where. */
export async function writeJsonReport(out: string, data: unknown): Promise<void> {
  const file = path.resolve(REPO_ROOT, out);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify(data, null, 2) + '\n');
  log(`\nJSON: ${path.relative(REPO_ROOT, file) || file}`);
}

/**
 * Runs a benchmark's main and exits as soon as it ends: a mount's deadline timers (up to the
 * mount timeout) would otherwise keep the process alive after the report.
 */
export function runBench(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(`bench: ${(err as Error).stack ?? String(err)}`);
      process.exit(1);
    },
  );
}

export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new Error(`${what} mounts FUSE filesystems: run it as root`);
}

const within = (p: string, dir: string) => p === dir || p.startsWith(dir + '/');

/** PIDs of running processes of the programs `names` (s3fs, rclone) whose argv names a path at or below one of `dirs`. */
export async function clientsBelow(names: readonly string[], ...dirs: string[]): Promise<number[]> {
  const pids: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const argv = (await readFile(`/proc/${e}/cmdline`, 'latin1').catch(() => '')).split('\0');
    if (!names.includes(path.basename(argv[0] ?? ''))) continue;
    if (argv.slice(1).some((w) => dirs.some((d) => within(w, d))) && (await isRunning(Number(e)))) pids.push(Number(e));
  }
  return pids;
}

/** PIDs of running s3fs processes whose argv names a path at or below one of `dirs`. */
export const s3fsClientsBelow = (...dirs: string[]): Promise<number[]> => clientsBelow(['s3fs'], ...dirs);

/**
 * The argv (without argv[0]) and environment names of the s3fs client the plugin runs for the
 * mount at `mp`, and the same argv for a client of our own: `rawTarget` for the mountpoint, our
 * `rawPasswd` file (the plugin deletes its own once the mount is ready).
 */
export async function clientArgv(mp: string, rawTarget: string, rawPasswd: string): Promise<{ plugin: string[]; raw: string[]; envKeys: string[] }> {
  const pid = await fuseClientPid(mp);
  if (!pid) throw new Error(`no s3fs process serves ${mp}`);
  const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  if (argv[argv.length - 1] === '') argv.pop();
  const envKeys = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0').filter(Boolean).map((kv) => kv.split('=')[0]!);
  const plugin = argv.slice(1);
  // The plugin's tmpdir is relative to its client's working directory (in the plugin's state
  // directory, maybe in another mount namespace): raw s3fs gets its own, next to its mountpoint.
  const rawTmp = path.join(path.dirname(rawTarget), 's3fs-tmp');
  await mkdir(rawTmp, { recursive: true, mode: 0o700 });
  const raw = plugin.map((w) =>
    w === mp ? rawTarget : w.startsWith('passwd_file=') ? `passwd_file=${rawPasswd}` : w.startsWith('tmpdir=') ? `tmpdir=${rawTmp}` : w,
  );
  if (!raw.includes(rawTarget)) throw new Error(`the mountpoint is not in the client's argv: ${plugin.join(' ')}`);
  return { plugin, raw, envKeys };
}

/** Waits until none of `pids` runs (zombies count as gone); false at the deadline. */
export async function waitGone(pids: number[], timeoutMs: number): Promise<boolean> {
  const t0 = Date.now();
  let left = pids;
  while (left.length > 0) {
    if (Date.now() - t0 > timeoutMs) return false;
    await sleep(5);
    left = (await Promise.all(left.map(async (p) => ((await isRunning(p)) ? p : 0)))).filter((p) => p !== 0);
  }
  return true;
}

/**
 * Leaves nothing behind below `dirs`: every mount there is lazily unmounted (deepest first), then
 * every s3fs or rclone client of those paths is killed. Returns what it had to clean, for a warning.
 */
export async function forceCleanBelow(...dirs: string[]): Promise<string[]> {
  const done: string[] = [];
  const mounted = (await Promise.all(dirs.map((d) => mountsBelow(d)))).flat();
  for (const mp of mounted.reverse()) {
    await execa('umount', ['-l', mp], { reject: false });
    done.push(`unmounted ${mp}`);
  }
  const pids = await clientsBelow(['s3fs', 'rclone'], ...dirs);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
      done.push(`killed client ${pid}`);
    } catch {
      // already gone
    }
  }
  await waitGone(pids, 5000);
  return done;
}

/**
 * Cleanup steps, run once in reverse order of registration: at the end, on an error, and on
 * SIGINT/SIGTERM (then the process exits 130).
 */
export class Cleanup {
  private readonly steps: Array<[string, () => Promise<unknown>]> = [];
  private running: Promise<void> | undefined;

  constructor() {
    // Handled for good: a second Ctrl-C (or the one a parent forwards) must not cut the cleanup short.
    const onSignal = (sig: string) => {
      if (this.running) return;
      process.stderr.write(`\n${sig}: cleaning up\n`);
      void this.run().finally(() => process.exit(130));
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
  }

  add(label: string, step: () => Promise<unknown>): void {
    this.steps.push([label, step]);
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      for (const [label, step] of this.steps.reverse()) {
        try {
          await step();
        } catch (err) {
          process.stderr.write(`cleanup: ${label}: ${(err as Error).message}\n`);
        }
      }
    })();
    return this.running;
  }
}

/**
 * Resolves with performance.now() at the first connection `socket` accepts, trying every
 * millisecond (a stale socket file of a killed process refuses connections until replaced).
 */
export async function waitListening(socket: string, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(socket, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return performance.now();
    if (performance.now() - t0 > timeoutMs) throw new Error(`${socket} did not accept a connection within ${timeoutMs} ms`);
    await sleep(1);
  }
}


/** PSS and RSS of a process in kB, from smaps_rollup. */
export async function memoryKb(pid: number): Promise<{ pss: number; rss: number }> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, 'latin1').catch(() => '');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return { pss: field('Pss'), rss: field('Rss') };
}

/** CPU time a process has used, in ms: in user mode and in the kernel. */
export async function cpuMs(pid: number): Promise<{ user: number; sys: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[11]) * 10, sys: Number(f[12]) * 10 }; // utime, stime in clock ticks (USER_HZ = 100)
}

/** The machine's CPU counters: busy and total jiffies over all CPUs. */
export async function cpuCounters(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'latin1')).split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = line.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - line[3]! - line[4]!, total };
}

/** A text table: first column left-aligned, the others right-aligned. */
export function textTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export const fmtMs = (v: number) => (!Number.isFinite(v) ? '-' : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

/** A 64-hex mount ID, as Docker sends. */
export function mountId(i: number, salt = 0): string {
  return (salt.toString(16).padStart(8, '0') + i.toString(16).padStart(8, '0')).repeat(4);
}
