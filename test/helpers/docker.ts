// The docker CLI for end-to-end tests: plain calls, a tiny local test image, the plugin bundle
// built by rootfs.build.sh (once per test process), and a managed plugin installed under a test
// name with private state and credentials directories, removed again by its cleanup.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { readFile, readlink, rm, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { readMounts } from '../../src/host/mountinfo.js';
import { REPO_ROOT } from './plugin-process.js';

export { REPO_ROOT };

export const TEST_IMAGE = 'ossnas/busybox:1';
/** Every container a test starts carries this label (value: the plugin name), so cleanup finds it. */
export const CONTAINER_LABEL = 'ossnas-e2e';

export interface DockerOptions {
  /** ms; default 120 s */
  timeout?: number;
  /** text written to docker's stdin */
  input?: string;
}

export interface DockerResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `docker ARGS` and never throws on a non-zero exit (for calls that are meant to fail). */
export async function dockerResult(args: string[], opts: DockerOptions = {}): Promise<DockerResult> {
  const t0 = performance.now();
  const r = await execa('docker', args, {
    reject: false,
    timeout: opts.timeout ?? 120_000,
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' as const }),
    env: { LC_ALL: 'C.UTF-8' },
  });
  const ms = performance.now() - t0;
  if (r.timedOut) throw new Error(`docker ${args.join(' ')} timed out after ${opts.timeout ?? 120_000} ms\n${r.stderr}`);
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout.trim(), stderr: r.stderr.trim(), ms };
}

/** Runs `docker ARGS`; returns stdout (trimmed); throws with docker's stderr on failure. */
export async function docker(args: string[], opts: DockerOptions = {}): Promise<string> {
  const r = await dockerResult(args, opts);
  if (r.exitCode !== 0) {
    throw new Error(`docker ${args.join(' ')} failed (exit ${r.exitCode}): ${r.stderr || r.stdout || '(no output)'}`);
  }
  return r.stdout;
}

let daemonChecked: Promise<string> | undefined;
/** The engine's version; fails clearly when no dockerd answers (CI starts one before the tests). */
export function requireDocker(): Promise<string> {
  daemonChecked ??= dockerResult(['version', '--format', '{{.Server.Version}}'], { timeout: 20_000 }).then((r) => {
    if (r.exitCode !== 0 || !r.stdout) {
      throw new Error(
        `e2e tests need a running Docker engine and none answers ('docker version': ${r.stderr || 'no server version'}). ` +
          `Start one first, e.g. dockerd --host unix:///var/run/docker.sock >/tmp/dockerd.log 2>&1 &`,
      );
    }
    return r.stdout;
  });
  return daemonChecked;
}

/** The tiny local test image, made by the same script the quick start uses. */
export async function ensureBusyboxImage(): Promise<void> {
  await execa('bash', [path.join(REPO_ROOT, 'scripts', 'busybox-image.sh'), TEST_IMAGE], { timeout: 120_000 });
}

// ---------------------------------------------------------------------------------------------
// The plugin bundle
// ---------------------------------------------------------------------------------------------

export interface Timings {
  /** ms, keyed by step: 'plugin build', 'plugin create', 'plugin enable', ... */
  [step: string]: number;
}
/** Times of the steps this process ran (build once; create/enable per installPlugin name). */
export const timings: Timings = {};

const BUNDLE_PREFIX = 'e2e-plugin-';
let built: Promise<string> | undefined;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A bundle built beforehand, where none can be built: OSSNAS_E2E_BUNDLE=DIR (the NFS guest, which
 * has no network, gets the host's at /ossnas-bundle). Used as it is, never removed.
 */
const PREBUILT_BUNDLE = process.env.OSSNAS_E2E_BUNDLE;

/** Whether DIR holds a plugin bundle: config.json + rootfs/. */
function isBundle(dir: string): boolean {
  return existsSync(path.join(dir, 'config.json')) && existsSync(path.join(dir, 'rootfs'));
}

/**
 * Runs `bash rootfs.build.sh` once per test process and returns the bundle dir (config.json +
 * rootfs/); or returns OSSNAS_E2E_BUNDLE when set. The bundle lives at .cache/e2e-plugin-<pid>:
 * per process, because test files run in parallel processes and a rebuild swaps its output dir
 * while another process may be reading it for `docker plugin create`. It is removed when the
 * process exits; bundles of processes that died are swept here. Never the developer's plugin/.
 */
export function buildPlugin(): Promise<string> {
  built ??= (async () => {
    if (PREBUILT_BUNDLE) {
      if (!isBundle(PREBUILT_BUNDLE)) {
        throw new Error(`OSSNAS_E2E_BUNDLE=${PREBUILT_BUNDLE} has no config.json + rootfs/`);
      }
      return PREBUILT_BUNDLE;
    }
    const cache = path.join(REPO_ROOT, '.cache');
    await mkdir(cache, { recursive: true });
    for (const e of readdirSync(cache)) {
      const m = new RegExp(`^${BUNDLE_PREFIX}(?:[a-z]+-)?(\\d+)(\\.tmp|\\.old)?$`).exec(e);
      if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) {
        await rm(path.join(cache, e), { recursive: true, force: true });
      }
    }
    const t0 = performance.now();
    const out = await buildBundle('', {});
    timings['plugin build'] = performance.now() - t0;
    return out;
  })();
  return built;
}

/**
 * A bundle built with rootfs.build.sh's optional inputs (e.g. { OSSFS_DEB: file }), at
 * .cache/e2e-plugin-FLAVOUR-<pid>, removed when the process exits like buildPlugin()'s.
 */
export async function buildPluginWith(flavour: string, env: Record<string, string>): Promise<string> {
  await buildPlugin(); // sweeps dead processes' bundles, and warms the cached base
  return buildBundle(`${flavour}-`, env);
}

async function buildBundle(flavour: string, env: Record<string, string>): Promise<string> {
  const out = path.join(REPO_ROOT, '.cache', `${BUNDLE_PREFIX}${flavour}${process.pid}`);
  process.once('exit', () => {
    for (const d of [out, `${out}.tmp`, `${out}.old`]) rmSync(d, { recursive: true, force: true });
  });
  const r = await execa('bash', [path.join(REPO_ROOT, 'rootfs.build.sh')], {
    cwd: REPO_ROOT,
    env: { ...env, OUT: out },
    all: true,
    reject: false,
    timeout: 900_000,
  });
  if (r.exitCode !== 0) {
    throw new Error(`rootfs.build.sh failed (exit ${r.exitCode}):\n${(r.all ?? '').split('\n').slice(-40).join('\n')}`);
  }
  if (!isBundle(out)) {
    throw new Error(`rootfs.build.sh succeeded but ${out} has no config.json + rootfs/`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Plugins
// ---------------------------------------------------------------------------------------------

/** `NAME` as Docker lists it: the `:latest` tag is added when none is given. */
export function pluginRef(name: string): string {
  const last = name.slice(name.lastIndexOf('/') + 1);
  return last.includes(':') ? name : `${name}:latest`;
}

/**
 * Names of volumes whose driver is the plugin NAME (with or without its tag). Always filtered
 * by driver: an unfiltered `docker volume ls` (and `docker volume inspect` of an unknown name)
 * asks every volume driver dockerd has ever seen, and each dead legacy plugin it still caches
 * (a host-process plugin that has stopped) costs ~15 s of connection retries.
 */
export async function volumesOf(name: string): Promise<string[]> {
  const ref = pluginRef(name);
  const out = await docker(['volume', 'ls', '--filter', `driver=${ref}`, '--format', '{{.Driver}}\t{{.Name}}']);
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\t') as [string, string])
    .filter(([driver]) => driver === name || driver === ref)
    .map(([, vol]) => vol);
}

/** The Status the plugin reports for a volume, as `docker volume inspect` shows it. */
export async function volumeStatus(volume: string): Promise<Record<string, unknown>> {
  return (JSON.parse(await docker(['volume', 'inspect', volume])) as Array<{ Status: Record<string, unknown> }>)[0]!.Status;
}

/** Whether Docker lists volume VOLUME for the plugin DRIVER (without asking other drivers). */
export async function volumeExists(driver: string, volume: string): Promise<boolean> {
  return (await volumesOf(driver)).includes(volume);
}

/**
 * Removes a plugin and everything that keeps it busy: containers labelled for it, its volumes,
 * then `disable -f` and `rm -f`. Quiet about what is already gone; returns what went wrong.
 */
export async function removePlugin(name: string): Promise<string[]> {
  const problems: string[] = [];
  const note = async (what: string, p: Promise<unknown>) => {
    try {
      await p;
    } catch (err) {
      problems.push(`${what}: ${(err as Error).message}`);
    }
  };
  const containers = (await dockerResult(['ps', '-aq', '--filter', `label=${CONTAINER_LABEL}=${name}`])).stdout;
  if (containers) await note('rm containers', docker(['rm', '-f', ...containers.split('\n')], { timeout: 60_000 }));
  if ((await dockerResult(['plugin', 'inspect', name])).exitCode !== 0) return problems;
  let vols: string[] = [];
  await note('list volumes', volumesOf(name).then((v) => (vols = v)));
  for (const v of vols) {
    // -f: a volume the plugin no longer knows (or refuses to remove) must not keep the plugin.
    await note(`volume rm ${v}`, docker(['volume', 'rm', '-f', v], { timeout: 60_000 }));
  }
  await note('plugin disable', dockerResult(['plugin', 'disable', '-f', name], { timeout: 60_000 }));
  await note('plugin rm', docker(['plugin', 'rm', '-f', name], { timeout: 60_000 }));
  return problems;
}

export interface InstallOptions {
  stateDir: string;
  credentialsDir: string;
  /** plugin settings set before enabling, e.g. { LOG_LEVEL: 'debug' } */
  env?: Record<string, string>;
  /** the bundle dir; default buildPlugin()'s */
  bundle?: string;
  /** ms for `docker plugin create`; default 300 s (14-21 s on our hosts, 4-6 min under TCG) */
  createTimeoutMs?: number;
}

export interface InstalledPlugin {
  name: string;
  id: string;
  /** Host path of the plugin's propagated mount (volumes appear below it). */
  propagatedMount: string;
  timings: { create: number; enable: number };
  cleanup(): Promise<void>;
}

export async function pluginInfo(name: string): Promise<{ id: string; propagatedMount: string }> {
  const id = await docker(['plugin', 'inspect', '--format', '{{.Id}}', name]);
  const root = await docker(['info', '--format', '{{.DockerRootDir}}']);
  return { id, propagatedMount: path.join(root, 'plugins', id, 'propagated-mount') };
}

/**
 * `docker plugin create NAME BUNDLE`, `docker plugin set` (state/credentials sources, env), and
 * `docker plugin enable --timeout 60`. A plugin left under NAME by an earlier run is removed first.
 */
export async function installPlugin(name: string, opts: InstallOptions): Promise<InstalledPlugin> {
  await requireDocker();
  const bundle = opts.bundle ?? (await buildPlugin());
  const stale = await removePlugin(name);
  if (stale.length) throw new Error(`could not remove a plugin ${name} left by an earlier run: ${stale.join('; ')}`);

  const cleanup = async () => {
    const problems = await removePlugin(name);
    if (problems.length) throw new Error(`cleanup of plugin ${name}: ${problems.join('; ')}`);
  };
  try {
    let t0 = performance.now();
    await docker(['plugin', 'create', name, bundle], { timeout: opts.createTimeoutMs ?? 300_000 });
    const create = performance.now() - t0;
    const settings = [
      `state.source=${opts.stateDir}`,
      `credentials.source=${opts.credentialsDir}`,
      ...Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`),
    ];
    await docker(['plugin', 'set', name, ...settings]);
    t0 = performance.now();
    await docker(['plugin', 'enable', '--timeout', '60', name], { timeout: 90_000 });
    const enable = performance.now() - t0;
    timings[`plugin create (${name})`] = create;
    timings[`plugin enable (${name})`] = enable;
    return { name, ...(await pluginInfo(name)), timings: { create, enable }, cleanup };
  } catch (err) {
    await cleanup().catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Host views used by the assertions
// ---------------------------------------------------------------------------------------------

/** Mount points of this process's mount namespace (the host's, where dockerd runs). */
export async function mountPoints(): Promise<string[]> {
  return (await readMounts()).map((m) => m.mountPoint);
}

export async function isMountpoint(p: string): Promise<boolean> {
  return (await mountPoints()).includes(path.resolve(p));
}

/**
 * dockerd's log file, where a managed plugin's output lands (tagged plugin=<id>): the env var
 * OSSNAS_E2E_DOCKERD_LOG, else whatever file dockerd's stdout is. Undefined when neither is a file.
 */
export async function dockerdLogPath(): Promise<string | undefined> {
  if (process.env.OSSNAS_E2E_DOCKERD_LOG) return process.env.OSSNAS_E2E_DOCKERD_LOG;
  const pids: number[] = [];
  for (const f of ['/var/run/docker.pid', '/run/docker.pid']) {
    const t = await readFile(f, 'utf8').catch(() => '');
    if (/^\d+\s*$/.test(t)) pids.push(Number(t));
  }
  const r = await execa('pgrep', ['-x', 'dockerd'], { reject: false });
  pids.push(...r.stdout.split('\n').filter(Boolean).map(Number));
  for (const pid of pids) {
    for (const fd of [1, 2]) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      // Read through /proc: that works even when the file was deleted after dockerd opened it.
      if (target.startsWith('/') && !target.startsWith('/dev/')) return `/proc/${pid}/fd/${fd}`;
    }
  }
  return undefined;
}

/** Command lines of every process on the host that contain NEEDLE, as "pid: argv". */
export async function processesWith(needle: string, file: 'cmdline' | 'environ' = 'cmdline'): Promise<string[]> {
  const hits: string[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const text = await readFile(`/proc/${e}/${file}`, 'latin1').catch(() => '');
    if (text.includes(needle)) {
      const argv = await readFile(`/proc/${e}/cmdline`, 'latin1').catch(() => '');
      hits.push(`${e}: ${argv.replace(/\0/g, ' ').trim()}`);
    }
  }
  return hits;
}

/** The FUSE client (s3fs or rclone mount) serving a mountpoint of the plugin (its path inside the plugin), by its argv. */
export async function fuseClientPid(pluginPath: string): Promise<number | undefined> {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const argv = (await readFile(`/proc/${e}/cmdline`, 'latin1').catch(() => '')).split('\0');
    // s3fs splits its `bucket:/path` argument in place, so the mountpoint's position varies.
    if (['s3fs', 'rclone'].includes(path.basename(argv[0] ?? '')) && argv.slice(1).includes(pluginPath)) return Number(e);
  }
  return undefined;
}

/**
 * Whether a FUSE client left the plugin's cgroup, from its /proc/PID/cgroup: every hierarchy in
 * which it is not at the root puts it in `ossnas-fuse` (beside the plugin's cgroup), and there is
 * at least one. On cgroup v1 that is every controller's line (`5:devices:/.../ossnas-fuse`); on
 * v2 the one line `0::/.../ossnas-fuse` (a v1 host's `0::/` line of an unused unified hierarchy
 * does not count).
 */
export function leftPluginCgroup(procCgroup: string): boolean {
  const paths = procCgroup
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(':').slice(2).join(':'))
    .filter((p) => p !== '/');
  return paths.length > 0 && paths.every((p) => p.endsWith('/ossnas-fuse'));
}

/** Whether a process runs: it exists and is not a zombie (an orphan's zombie may wait long for its reaper). */
export async function isRunning(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'latin1').catch(() => '');
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== '' && state !== 'Z' && state !== 'X';
}

/** The plugin's node process: the one whose cgroup names the plugin's id. */
export async function pluginPid(id: string): Promise<number | undefined> {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const [cmdline, cgroup] = await Promise.all([
      readFile(`/proc/${e}/cmdline`, 'latin1').catch(() => ''),
      readFile(`/proc/${e}/cgroup`, 'latin1').catch(() => ''),
    ]);
    // argv[0] is node (tini, its parent, has the same words in its command line).
    if (cmdline.split('\0')[0]!.endsWith('/node') && cmdline.includes('/app/dist/main.js') && cgroup.includes(id)) return Number(e);
  }
  return undefined;
}

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 15_000,
  everyMs = 200,
): Promise<T> {
  const t0 = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
