// Restore after a crash: the plugin is killed (SIGKILL) with N mounted OSS volumes, each served
// by its own s3fs, and started again on the same directories. How long until every volume
// serves again (issue 6: "200 mounted OSS volumes: every volume serves again within 10 s")?
//
//   node --import tsx bench/restore.ts              N=200
//   node --import tsx bench/restore.ts --quick      N=20, well under a minute
//   node --import tsx bench/restore.ts --share      the same with OSSNAS_SHARE_CLIENTS=true: the
//                                                   volumes (each its own path) share one s3fs
//   options: --n 200  --scenarios adopt,remount,raw  --out .cache/bench-restore.json
//            --node-options='...'  (NODE_OPTIONS for the plugin, e.g. --node-options='--import HOOK.mjs'; --cpu-prof is refused in NODE_OPTIONS)
// Needs root, `npm run build` first (the plugin runs from dist/ as a plain host process) and
// Debian's s3fs. The S3 server is s3rver in a child process of its own (bench/fuse-host.ts says why).
//
// Two scenarios, one after the other on the same volumes:
//   adopt    only the plugin is killed; its s3fs clients (detached in host-process mode) keep
//            serving, and the new process adopts them.
//   remount  the plugin and every s3fs client are killed at once, as when a managed plugin's
//            cgroup dies: every mount is dead (ENOTCONN) and has to be mounted again.
// A volume serves when a file written before the kill reads back through its mountpoint and Get
// says health ok and mounted. For scale, a third column: the floor, N s3fs clients started by
// this script itself, 8 at a time as the plugin's restore does, with the plugin's argv, each
// until statfs answers from FUSE and the file reads back (--scenarios raw alone runs it only).
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { finishPlugin, startPlugin, startPluginInTempDir, writeProfile, type PluginProcess } from '../test/helpers/plugin-process.js';
import { checkBuild, runMeta } from './build.js';
import { BenchClient, percentile } from './client.js';
import {
  Cleanup,
  clientArgv,
  cpuCounters,
  cpuMs,
  fmtMs,
  forceCleanBelow,
  log,
  logPluginTail,
  mountId,
  requireRoot,
  runBench,
  s3fsClientsBelow,
  sleep,
  textTable,
  waitGone,
  waitListening,
  writeJsonReport,
} from './fuse-host.js';
import { startS3, type S3Server } from '../test/helpers/s3.js';
import { holdMount, type Holder } from '../test/helpers/holder.js';
import { SHARED_DIR } from '../src/backends/oss/shared-clients.js';

const BUCKET = 'bench';
const FILE = 'restore-check.txt';
const CONTENT = 'written before the kill\n';
/** Mounts and unmounts in flight while setting up and tearing down (not measured). */
const SETUP_CONCURRENCY = 8;
/** File reads through the mountpoints in flight at once. */
const READ_CONCURRENCY = 16;
const READ_TIMEOUT_MS = 5000;
/** Pause between two rounds of checks, so that the checking does not load the plugin much. */
const CHECK_INTERVAL_MS = 20;
const SERVE_TIMEOUT_MS = 120_000;
const SCENARIOS = ['adopt', 'remount', 'raw'] as const;
/** The plugin's restore mounts this many volumes at once (VolumeDriver.restore); the raw floor does the same. */
const RESTORE_CONCURRENCY = 8;
const FUSE_SUPER_MAGIC = 0x65735546;
type Scenario = (typeof SCENARIOS)[number];

const execFileP = promisify(execFile);
const loadavg = () => os.loadavg().map((l) => Math.round(l * 100) / 100);

interface LogLine {
  msg?: string;
  time?: string;
  [k: string]: unknown;
}

interface Result {
  scenario: Exclude<Scenario, 'raw'>;
  n: number;
  /** All from the SIGKILL of the plugin, in ms. */
  clientsDeadMs: number;
  spawnMs: number;
  listeningMs: number;
  stateLoadedMs: number;
  restoreLoggedMs: number;
  firstServesMs: number;
  medianServesMs: number;
  allServeMs: number;
  /** The plugin's own log line: counts and its own duration. */
  restore: { adopted: number; remounted: number; failed: number; released: number; ms: number } | undefined;
  /** s3fs clients serving the mountpoints before the kill that still serve them after the restore. */
  clientsKept: number;
  clientsReplaced: number;
  /** What a read of a mount gave between the kill and the restart (ENOTCONN: a dead mount). */
  readWhileDown: string;
  /** CPU the new plugin process used from its start until every volume served, in ms. */
  pluginCpuMs: { user: number; sys: number };
  /** How busy the machine's CPUs were from the kill until every volume served (all processes). */
  machineBusyPct: number;
  /** CPU of this process meanwhile (the checks), and of s3rver answering the clients. */
  benchCpuMs: number;
  s3rverCpuMs: number;
  loadavg: { before: number[]; after: number[] };
}

/** Each mountpoint below `root` with the PID of the s3fs serving it. */
async function clientsByMountpoint(root: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const pid of await s3fsClientsBelow(root)) {
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'latin1').catch(() => '')).split('\0');
    const mp = argv.slice(1).find((w) => w.startsWith(root + '/'));
    if (mp) out.set(mp, pid);
  }
  return out;
}

/** The mountpoint of the one shared client (--share). */
async function sharedMountpoint(mountRoot: string): Promise<string> {
  const mp = [...(await clientsByMountpoint(mountRoot)).keys()].find((m) => m.startsWith(path.join(mountRoot, SHARED_DIR) + '/'));
  if (!mp) throw new Error('no shared client runs');
  return mp;
}

function parseLog(text: string): LogLine[] {
  return text.split('\n').flatMap((l) => {
    if (!l.startsWith('{')) return [];
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });
}

/** The first log line with this message, and its time as ms since `since` (epoch ms). */
function logged(lines: LogLine[], msg: string, since: number): { line: LogLine; ms: number } | undefined {
  const line = lines.find((l) => l.msg === msg);
  return line?.time ? { line, ms: Date.parse(line.time) - since } : undefined;
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Runs `work` over `items` with at most `limit` in flight. */
async function pool<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

/**
 * Polls until every volume serves: the file reads back through its mountpoint (a dead mount
 * answers ENOTCONN at once, without the plugin), then Get answers health ok and mounted. Reads
 * come first so that the checking asks the plugin little while it restores. Returns
 * performance.now() at which each volume was first seen serving.
 */
async function waitAllServe(client: BenchClient, plugin: PluginProcess, names: string[]): Promise<Map<string, number>> {
  const served = new Map<string, number>();
  const t0 = performance.now();
  while (served.size < names.length) {
    if (performance.now() - t0 > SERVE_TIMEOUT_MS) {
      const left = names.filter((n) => !served.has(n));
      throw new Error(`${left.length} volumes did not serve within ${SERVE_TIMEOUT_MS / 1000} s, e.g. ${left.slice(0, 5).join(', ')}`);
    }
    const read: string[] = [];
    await pool(
      names.filter((n) => !served.has(n)),
      READ_CONCURRENCY,
      async (name) => {
        const text = await withTimeout(readFile(path.join(plugin.mountRoot, name, FILE), 'utf8').catch(() => ''), READ_TIMEOUT_MS);
        if (text === CONTENT) read.push(name);
      },
    );
    for (const name of read) {
      const st = ((await client.call('VolumeDriver.Get', { Name: name })).json.Volume as { Status?: Record<string, unknown> }).Status;
      if (st?.health === 'ok' && st.mounted === true) served.set(name, performance.now());
    }
    if (served.size < names.length) await sleep(CHECK_INTERVAL_MS);
  }
  return served;
}

async function runScenario(
  scenario: Exclude<Scenario, 'raw'>,
  s3Pid: number,
  plugin: PluginProcess,
  env: Record<string, string>,
  names: string[],
): Promise<{ result: Result; plugin: PluginProcess }> {
  const before = loadavg();
  const clientsBefore = await clientsByMountpoint(plugin.mountRoot);
  // Shared clients: one for the bucket.
  const expected = env.OSSNAS_SHARE_CLIENTS === 'true' ? 1 : names.length;
  if (clientsBefore.size !== expected) throw new Error(`${clientsBefore.size} s3fs clients before the kill, expected ${expected}`);
  const exited = new Promise<void>((r) => (plugin.child.exitCode !== null || plugin.child.signalCode !== null ? r() : plugin.child.once('exit', () => r())));

  const cpuBefore = await cpuCounters();
  const benchCpu = process.cpuUsage();
  const s3Cpu = await cpuMs(s3Pid);
  const killAt = Date.now();
  const t0 = performance.now();
  plugin.child.kill('SIGKILL');
  if (scenario === 'remount') for (const pid of clientsBefore.values()) process.kill(pid, 'SIGKILL');
  await exited;
  plugin.client.close();
  if (scenario === 'remount' && !(await waitGone([...clientsBefore.values()], 10_000))) throw new Error('killed s3fs clients did not exit within 10 s');
  const clientsDeadMs = performance.now() - t0;
  // Issued now, awaited after the restart: a read through a live client takes a few ms, which
  // must not delay the restart.
  const readWhileDown = readFile(path.join(plugin.mountRoot, names[0]!, FILE), 'utf8').then(
    (t) => (t === CONTENT ? 'ok' : 'wrong content'),
    (err: NodeJS.ErrnoException) => err.code ?? err.message,
  );

  const listening = waitListening(plugin.socket, 30_000); // every millisecond, from before the spawn
  const spawnMs = performance.now() - t0;
  const next = await startPlugin(plugin.dir, env);
  const listeningMs = (await listening) - t0;
  const client = new BenchClient(next.socket);
  try {
    const served = await waitAllServe(client, next, names);
    const pluginCpuMs = await cpuMs(next.child.pid!);
    const cpuAfter = await cpuCounters();
    const benchCpuUsed = process.cpuUsage(benchCpu);
    const s3CpuAfter = await cpuMs(s3Pid);
    const times = [...served.values()].map((t) => t - t0).sort((a, b) => a - b);
    // The plugin logs its restore when it has finished (it may finish after the last read above).
    const deadline = Date.now() + 30_000;
    while (!parseLog(next.output()).some((l) => l.msg === 'mounts of held volumes restored after start') && Date.now() < deadline) await sleep(20);
    const lines = parseLog(next.output());
    const restoreLine = logged(lines, 'mounts of held volumes restored after start', killAt);
    const r = restoreLine?.line;
    const clientsAfter = await clientsByMountpoint(next.mountRoot);
    let kept = 0;
    for (const [mp, pid] of clientsBefore) if (clientsAfter.get(mp) === pid) kept++;
    return {
      plugin: next,
      result: {
        scenario,
        n: names.length,
        clientsDeadMs,
        spawnMs,
        listeningMs,
        stateLoadedMs: logged(lines, 'state loaded', killAt)?.ms ?? NaN,
        restoreLoggedMs: restoreLine?.ms ?? NaN,
        firstServesMs: times[0]!,
        medianServesMs: percentile(times, 0.5),
        allServeMs: times[times.length - 1]!,
        restore: r && {
          adopted: Number(r.adopted ?? 0),
          remounted: Number(r.remounted ?? 0),
          failed: Number(r.failed ?? 0),
          released: Number(r.released ?? 0),
          ms: Number(r.ms),
        },
        clientsKept: kept,
        clientsReplaced: [...clientsAfter.keys()].filter((mp) => clientsBefore.has(mp)).length - kept,
        readWhileDown: await readWhileDown,
        pluginCpuMs,
        machineBusyPct: (100 * (cpuAfter.busy - cpuBefore.busy)) / (cpuAfter.total - cpuBefore.total),
        benchCpuMs: (benchCpuUsed.user + benchCpuUsed.system) / 1000,
        s3rverCpuMs: s3CpuAfter.user + s3CpuAfter.sys - s3Cpu.user - s3Cpu.sys,
        loadavg: { before, after: loadavg() },
      },
    };
  } finally {
    client.close();
  }
}


interface RawResult {
  scenario: 'raw';
  n: number;
  firstServesMs: number;
  medianServesMs: number;
  allServeMs: number;
  /** How long this process's event loop sat in spawn() (fork + exec), summed over the clients. */
  spawnBlockedMs: number;
  machineBusyPct: number;
  benchCpuMs: number;
  s3rverCpuMs: number;
}

/**
 * The floor: N s3fs clients with the plugin's argv made raw (clientArgv: our own mountpoints and
 * passwd file; `argv` mounts at `firstTarget`),
 * started 8 at a time by this script, each until statfs answers from FUSE and the file reads
 * back; then all unmounted and waited for.
 */
async function rawFloor(argv: string[], firstTarget: string, dir: string, n: number, s3Pid: number): Promise<RawResult> {
  const passwd = path.join(dir, 'passwd');
  await writeFile(passwd, 'S3RVER:S3RVER\n', { mode: 0o600 });
  const targets = Array.from({ length: n }, (_, i) => path.join(dir, `m${i}`));
  for (const t of targets) await mkdir(t, { recursive: true });
  const cpuBefore = await cpuCounters();
  const benchCpu = process.cpuUsage();
  const s3Cpu = await cpuMs(s3Pid);
  const served: number[] = [];
  let spawnBlockedMs = 0;
  const t0 = performance.now();
  await pool(targets, RESTORE_CONCURRENCY, async (target) => {
    const args = argv.map((w) => (w === firstTarget ? target : w));
    const ts = performance.now();
    const child = spawn('s3fs', args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    spawnBlockedMs += performance.now() - ts;
    child.stdout.resume();
    child.stderr.resume();
    child.unref();
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`raw s3fs for ${target} exited (${child.exitCode ?? child.signalCode})`);
      if (performance.now() - t0 > SERVE_TIMEOUT_MS) throw new Error(`raw s3fs for ${target} did not serve in time`);
      const st = await statfs(target).catch(() => undefined); // the directory below answers until the mount is there
      if (st?.type === FUSE_SUPER_MAGIC && (await readFile(path.join(target, FILE), 'utf8').catch(() => '')) === CONTENT) break;
      await sleep(2);
    }
    served.push(performance.now() - t0);
  });
  const cpuAfter = await cpuCounters();
  const benchCpuUsed = process.cpuUsage(benchCpu);
  const s3CpuAfter = await cpuMs(s3Pid);
  const pids = await s3fsClientsBelow(dir);
  for (const t of targets) await execFileP('umount', [t]).catch(() => execFileP('umount', ['-l', t]));
  await waitGone(pids, 10_000);
  served.sort((a, b) => a - b);
  return {
    scenario: 'raw',
    n,
    firstServesMs: served[0]!,
    medianServesMs: percentile(served, 0.5),
    allServeMs: served[served.length - 1]!,
    spawnBlockedMs,
    machineBusyPct: (100 * (cpuAfter.busy - cpuBefore.busy)) / (cpuAfter.total - cpuBefore.total),
    benchCpuMs: (benchCpuUsed.user + benchCpuUsed.system) / 1000,
    s3rverCpuMs: s3CpuAfter.user + s3CpuAfter.sys - s3Cpu.user - s3Cpu.sys,
  };
}

function formatTable(results: Array<Result | RawResult>): string {
  const title = (r: Result | RawResult) =>
    r.scenario === 'adopt' ? '(a) clients survive' : r.scenario === 'remount' ? '(b) clients killed too' : `raw: ${r.n} s3fs, ${RESTORE_CONCURRENCY} at a time`;
  const row = (label: string, value: (r: Result) => string, raw?: (r: RawResult) => string) => [
    label,
    ...results.map((r) => (r.scenario === 'raw' ? (raw ? raw(r) : '-') : value(r))),
  ];
  const ms = (f: (r: Result) => number) => (r: Result) => fmtMs(f(r));
  return textTable(
    [`N = ${results[0]?.n ?? 0} mounted OSS volumes`, ...results.map(title)],
    [
      row('kill -> clients dead, plugin spawned ms', (r) => `${r.scenario === 'remount' ? fmtMs(r.clientsDeadMs) : '-'}, ${fmtMs(r.spawnMs)}`),
      row('kill -> socket listening ms', ms((r) => r.listeningMs)),
      row("kill -> 'state loaded' logged ms", ms((r) => r.stateLoadedMs)),
      row('kill (raw: first spawn) -> first volume serves ms', ms((r) => r.firstServesMs), (r) => fmtMs(r.firstServesMs)),
      row('kill (raw: first spawn) -> half serve ms', ms((r) => r.medianServesMs), (r) => fmtMs(r.medianServesMs)),
      row('kill (raw: first spawn) -> every volume serves ms', ms((r) => r.allServeMs), (r) => fmtMs(r.allServeMs)),
      row("kill -> 'restored after start' logged ms", ms((r) => r.restoreLoggedMs)),
      row("restore's own duration (its log) ms", ms((r) => r.restore?.ms ?? NaN)),
      row('adopted / remounted / failed', (r) => (r.restore ? `${r.restore.adopted} / ${r.restore.remounted} / ${r.restore.failed}` : 'not logged')),
      row('s3fs clients kept / replaced', (r) => `${r.clientsKept} / ${r.clientsReplaced}`),
      row('a read while the plugin was down', (r) => r.readWhileDown),
      row('plugin CPU until every volume serves, user + sys ms', (r) => `${fmtMs(r.pluginCpuMs.user)} + ${fmtMs(r.pluginCpuMs.sys)}`),
      row('raw: event loop blocked in spawn(), total ms', () => '-', (r) => fmtMs(r.spawnBlockedMs)),
      row('s3rver CPU ms', (r) => fmtMs(r.s3rverCpuMs), (r) => fmtMs(r.s3rverCpuMs)),
      row('this process CPU (checks; raw: spawning too) ms', (r) => fmtMs(r.benchCpuMs), (r) => fmtMs(r.benchCpuMs)),
      row('machine CPU busy meanwhile', (r) => `${r.machineBusyPct.toFixed(0)} %`, (r) => `${r.machineBusyPct.toFixed(0)} %`),
    ],
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: '200' },
      quick: { type: 'boolean', default: false },
      share: { type: 'boolean', default: false },
      scenarios: { type: 'string', default: SCENARIOS.join(',') },
      out: { type: 'string', default: path.join('.cache', 'bench-restore.json') },
      'node-options': { type: 'string', default: '' },
    },
  });
  const n = Number(values.quick ? 20 : values.n);
  if (!Number.isInteger(n) || n < 1) throw new Error('--n takes a positive integer');
  const scenarios = values.scenarios.split(',').map((s) => {
    if (!(SCENARIOS as readonly string[]).includes(s.trim())) throw new Error(`unknown scenario '${s}'; known: ${SCENARIOS.join(', ')}`);
    return s.trim() as Scenario;
  });
  requireRoot('bench/restore.ts');
  await checkBuild();

  const started = new Date();
  const cleanup = new Cleanup();
  const env: Record<string, string> = {
    LOG_LEVEL: 'info',
    ...(values.share && { OSSNAS_SHARE_CLIENTS: 'true' }),
    ...(values['node-options'] && { NODE_OPTIONS: values['node-options'] }),
  };
  const names = Array.from({ length: n }, (_, i) => `r${String(i).padStart(4, '0')}`);
  const mounted = names.map(() => false);
  let s3: S3Server | undefined;
  let plugin: PluginProcess | undefined;
  try {
    s3 = await startS3([BUCKET]);
    cleanup.add('s3rver', () => s3!.stop());
    plugin = await startPluginInTempDir(env);
    const dir = plugin.dir;
    cleanup.add('plugin', async () => {
      // Unmount through the API while the plugin runs (it waits for each client to exit) ...
      if (plugin && plugin.child.exitCode === null && plugin.child.signalCode === null) {
        const client = new BenchClient(plugin.socket);
        const t0 = performance.now();
        const held = names.filter((_, i) => mounted[i]);
        await pool(held, SETUP_CONCURRENCY, async (name) => {
          await client.call('VolumeDriver.Unmount', { Name: name, ID: mountId(names.indexOf(name)) }).catch((err: Error) => log(`cleanup: ${err.message}`));
        });
        client.close();
        if (held.length) log(`unmounted ${held.length} volumes through the API in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      }
      // ... then stop it, and detach and kill whatever is left below its directory.
      await finishPlugin(plugin);
      const left = await forceCleanBelow(dir);
      if (left.length) log(`cleanup: ${left.slice(0, 10).join('; ')}${left.length > 10 ? ` and ${left.length - 10} more` : ''}`);
    });
    await writeProfile(plugin.credentialsDir, 'local', 'S3RVER', 'S3RVER');

    const setup = new BenchClient(plugin.socket);
    const opts = { type: 'oss', bucket: BUCKET, url: s3.url, credentials: 'local' };
    const t0 = performance.now();
    // Shared: each volume its own path of the bucket, all served by one client.
    for (const name of names) await setup.call('VolumeDriver.Create', { Name: name, Opts: values.share ? { ...opts, path: `/v/${name}` } : opts });
    await pool(names, SETUP_CONCURRENCY, async (name) => {
      const i = names.indexOf(name);
      await setup.call('VolumeDriver.Mount', { Name: name, ID: mountId(i) });
      mounted[i] = true;
    });
    const setupMs = performance.now() - t0;
    // A container holds each volume, as in production: a bind of its mount in a namespace of its
    // own. Without one, the restarted plugin rightly releases the references (no container holds
    // them) instead of restoring the mounts.
    const holders: Holder[] = [];
    cleanup.add('holders', async () => Promise.all(holders.map((h) => h.release())));
    await pool(names, SETUP_CONCURRENCY, async (name) => {
      holders.push(await holdMount(path.join(plugin!.mountRoot, name), path.join(dir, 'holders', name)));
    });
    // Every volume reads the file back: with one path each (shared), each gets its own copy, and
    // the bucket's root one for the raw clients, which mount the root as the shared one does.
    for (const name of values.share ? names : names.slice(0, 1)) await writeFile(path.join(plugin.mountRoot, name, FILE), CONTENT);
    if (values.share) await writeFile(path.join(await sharedMountpoint(plugin.mountRoot), FILE), CONTENT);
    setup.close();
    log(`created and mounted ${n} OSS volumes in ${(setupMs / 1000).toFixed(1)} s (${SETUP_CONCURRENCY} Mounts in flight)`);
    {
      const c = new BenchClient(plugin.socket);
      await waitAllServe(c, plugin, names); // every mount serves before the first kill
      c.close();
    }

    const results: Array<Result | RawResult> = [];
    for (const scenario of scenarios) {
      if (scenario === 'raw') {
        const mp = values.share ? await sharedMountpoint(plugin.mountRoot) : path.join(plugin.mountRoot, names[0]!);
        const rawDir = await mkdtemp(path.join(os.tmpdir(), 'ossnas-bench-raw-'));
        cleanup.add('raw clients', async () => {
          const left = await forceCleanBelow(rawDir);
          if (left.length) log(`cleanup: ${left.slice(0, 5).join('; ')}${left.length > 5 ? ` and ${left.length - 5} more` : ''}`);
          await rm(rawDir, { recursive: true, force: true });
        });
        const argv = await clientArgv(mp, path.join(rawDir, 'm0'), path.join(rawDir, 'passwd'));
        const result = await rawFloor(argv.raw, path.join(rawDir, 'm0'), rawDir, n, s3.pid);
        results.push(result);
        log(`[raw] ${n} s3fs of our own, ${RESTORE_CONCURRENCY} at a time: every one serves ${fmtMs(result.allServeMs)} ms after the first spawn`);
        continue;
      }
      const { result, plugin: next } = await runScenario(scenario, s3.pid, plugin, env, names);
      plugin = next;
      results.push(result);
      log(`[${scenario}] every volume serves ${fmtMs(result.allServeMs)} ms after the kill; restore: ${JSON.stringify(result.restore)}`);
    }

    const meta = {
      ...runMeta(started),
      node: process.version,
      n,
      setupMs,
    };
    const header = [
      `Restore benchmark, ${meta.date}, ossnas ${meta.revision}; ${meta.cpus} x ${meta.cpuModel}; node ${meta.node}`,
      values.share
        ? `  ${n} OSS volumes of one bucket, each its own path, sharing one s3fs (OSSNAS_SHARE_CLIENTS=true), each held by one mount ID; plugin killed with SIGKILL, started again on the same directories`
        : `  ${n} OSS volumes, each mounted (its own s3fs) and held by one mount ID; plugin killed with SIGKILL, started again on the same directories`,
      `  serves = a file reads back through the mountpoint and Get says health ok and mounted (polled every ${CHECK_INTERVAL_MS} ms; ${READ_CONCURRENCY} reads in flight)`,
      `  load average ${results.map((r) => ('loadavg' in r ? `${r.scenario}: ${r.loadavg.before.join(' ')} -> ${r.loadavg.after.join(' ')}` : '')).filter(Boolean).join('; ')}`,
    ];
    const verdict = results
      .filter((r) => r.scenario !== 'raw')
      .map((r) => `${r.scenario}: every volume serves ${fmtMs(r.allServeMs / 1000)} s after the kill`)
      .join('; ');
    // Issue 18: the remount against the raw floor of the same run (same N, same concurrency).
    const raw = results.find((r) => r.scenario === 'raw');
    const remount = results.find((r) => r.scenario === 'remount');
    const ratio = raw && remount ? remount.allServeMs / raw.allServeMs : undefined;
    const against =
      ratio === undefined
        ? ''
        : `remount over raw (every volume serves): ${ratio.toFixed(2)} (issue 18 target: <= 1.2)` +
          (values.share ? "; the raw clients mount the bucket's root, which costs the S3 server more than the shared client's binds do" : '') +
          '\n';
    process.stdout.write(`${header.join('\n')}\n\n${formatTable(results)}\n\n${verdict} (issue 6 target: <= 10 s at N = 200)\n${against}`);

    await writeJsonReport(values.out, { meta, results, ...(ratio !== undefined && { ratios: { remountOverRaw: ratio } }) });
  } catch (err) {
    logPluginTail(plugin);
    throw err;
  } finally {
    await cleanup.run();
  }
}

runBench(main);
