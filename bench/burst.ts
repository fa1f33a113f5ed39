// Burst benchmark (issue 18): N containers started at once, each with its own ossnas OSS volume
// (a sub-path of one bucket on a local S3 server), against the same burst made with raw s3fs
// mounts by this script, each bind-mounted into its container, so that Docker's own container
// start is on both sides. Target: the ossnas burst <= 1.2 x the raw one.
//
//   node --import tsx bench/burst.ts              N = 50: 2.5-3 min after the plugin's install
//   node --import tsx bench/burst.ts --quick      N = 5: 1-1.5 min after it
//   options: --count 50  --kinds run,service,raw  --out .cache/bench-burst.json
//
// The bursts, each timed from the moment its N starts are handed over at once (to a bash that
// forks them, see Launcher; or `docker service scale` spawned):
//   run           N `docker run -d -v ossnas-bench-burst-run-I:/data` at once (volumes created before)
//   raw           N s3fs at once on the host, with the argv the plugin gives its own client (read
//                 from /proc/PID/cmdline), each followed, once statfs answers from FUSE, by its
//                 `docker run -d --mount type=bind` of that mountpoint
//   service       a swarm service made with --replicas 0, scaled 0 -> N; task I mounts its own
//                 volume ossnas-bench-burst-svc-I (`{{.Task.Slot}}` in the mount's source and
//                 path), which swarm creates from the volume-opts
//   service-bind  (with raw and service) the same service over the raw mountpoints, still mounted
//                 from the raw burst, scaled 0 -> N; its anchor is the raw s3fs burst + this
// Every container writes a marker file into its volume, reads it back and sleeps. "Running" is
// dockerd's start event of a container (`docker events`); "sees its volume" is its marker object
// in the S3 server's store. Then, from the plugin's call lines in dockerd's log: the slowest Mount,
// and whether any call came near Docker's 30 s timeout for a plugin call.
// A docker call of a burst that fails or times out, a container or task that does not come up, a
// plugin call that failed: each fails the run (exit 1), after the report.
//
// Needs root and a running dockerd (scripts/host-setup.sh). The service bursts need a swarm: a
// dockerd outside any swarm gets its own single-node swarm and leaves it at the end; a swarm
// manager is used as it is (test/helpers/swarm.ts). Everything is named ossnas-bench-burst* and
// removed at the end, also after an error or Ctrl-C: containers, services, volumes (`docker
// volume rm`, which leaves the bucket's objects alone), the plugin, the raw mounts, the S3 server
// and the temporary directories.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { CONTAINER_LABEL, docker, dockerdLogPath, dockerResult, fuseClientPid, TEST_IMAGE, volumeStatus, waitFor } from '../test/helpers/docker.js';
import { LOCAL_PROFILE, setUpPlugin } from '../test/helpers/e2e-setup.js';
import type { S3Server } from '../test/helpers/s3.js';
import { joinSwarm, leaveSwarm, removeService, tasksOf, type Swarm } from '../test/helpers/swarm.js';
import { runMeta } from './build.js';
import { percentile } from './client.js';
import {
  Cleanup,
  clientArgv,
  cpuCounters,
  fmtMs,
  forceCleanBelow,
  log,
  runBench,
  s3fsClientsBelow,
  sleep,
  textTable,
  waitGone,
  writeJsonReport,
} from './fuse-host.js';
import { mountsBelow } from './process.js';
import { dockerdComplaints, parsePluginCalls, readFrom, wallNow, type PluginCall } from './plugin-log.js';

const PLUGIN = 'ossnas-bench-burst';
const BUCKET = 'bench';
const KINDS = ['run', 'service', 'raw'] as const;
type Kind = (typeof KINDS)[number];
type BurstKind = 'run' | 'raw' | 'service' | 'service-bind';
const LABELS: Record<BurstKind, string> = {
  run: '(a) ossnas: docker run -d -v VOLUME',
  raw: '(b) raw: s3fs, then docker run -d bind',
  service: '(c) ossnas: service scale 0 -> N',
  'service-bind': '(d) bind service over (b)\'s mounts',
};
/** Each item's volume is the bucket's sub-path PREFIX-I. */
const PREFIX: Record<BurstKind, string> = { run: 'run', raw: 'raw', service: 'svc', 'service-bind': 'raw' };
const RATIO_TARGET = 1.2;
/** Docker gives up on a plugin call after 30 s; the plugin's own deadline for a Mount is OSSNAS_MOUNT_TIMEOUT, 20 s by default. */
const DOCKER_CALL_TIMEOUT_MS = 30_000;
const NEAR_TIMEOUT_MS = 20_000;
/** The CLI calls of a burst (docker run -d, docker service scale), and a whole burst. */
const CLI_TIMEOUT_MS = 180_000;
const BURST_TIMEOUT_MS = 240_000;
const TEARDOWN_TIMEOUT_MS = 180_000;
const MARKER_POLL_MS = 50;
/** How often the raw side polls statfs of a new mount: as often as the plugin's readiness wait (src/host/fuse.ts). */
const STATFS_POLL_MS = 2;
const FUSE_SUPER_MAGIC = 0x65735546;
/** The container's command: `sh -c TASK_SCRIPT MARKER` writes /data/MARKER, reads it back, and idles. */
const TASK_SCRIPT = 'f="/data/$0"; echo "$(hostname)" > "$f" && [ "$(cat "$f")" = "$(hostname)" ] && exec sleep 3600';

const loadavg = () => os.loadavg().map((l) => Math.round(l * 100) / 100);

interface Item {
  i: number;
  /** ms from the burst's t0: its first command started (docker CLI or s3fs), s3fs's statfs answered, docker run -d exited. */
  spawnMs?: number;
  mountedMs?: number;
  cliMs?: number;
  /** dockerd's start event of its container, and its marker object seen in the store. */
  startedMs?: number;
  markerMs?: number;
  /** Services: the first `docker service ps` (polled every half second) that showed its task Running. */
  taskRunningMs?: number;
  container?: string;
  error?: string;
}

interface Stats {
  n: number;
  p50: number;
  p90: number;
  max: number;
}

function stats(xs: Array<number | undefined>): Stats {
  const s = xs.filter((x): x is number => x !== undefined).sort((a, b) => a - b);
  return { n: s.length, p50: percentile(s, 0.5), p90: percentile(s, 0.9), max: s[s.length - 1] ?? NaN };
}

/** The time by which every item had it, or undefined when one never did. */
function allBy(items: Item[], f: (it: Item) => number | undefined): number | undefined {
  const xs = items.map(f);
  return xs.every((x) => x !== undefined) ? Math.max(...(xs as number[])) : undefined;
}

interface BurstResult {
  kind: BurstKind;
  n: number;
  /** Wall clock (ms since the epoch) when the starts were handed over, and at the end of the wait. */
  t0: number;
  end: number;
  /** The first to the last spawn of a docker CLI (run, raw) or s3fs (raw). */
  spawnSpreadMs?: number;
  allMountedMs?: number;
  allCliExitedMs?: number;
  allStartedMs?: number;
  allMarkersMs?: number;
  allTasksRunningMs?: number;
  started: Stats;
  markers: Stats;
  mounted?: Stats;
  /** Containers (or tasks) running at the end, as `docker inspect` (or `docker service ps`) says. */
  running: number;
  machineBusyPct: number;
  loadavg: { before: number[]; after: number[] };
  teardownMs?: number;
  teardownEnd?: number;
  failures: string[];
  /** What went wrong around the burst without being ossnas's or the burst's doing. */
  notes: string[];
  items: Item[];
}

// ---------------------------------------------------------------------------------------------
// Watching a burst: dockerd's container events, the marker objects in the store
// ---------------------------------------------------------------------------------------------

/**
 * dockerd's start and die events of our containers from `sinceMs` (wall clock) on; `itemOf`
 * tells an event's item from the container's attributes (name, labels), or undefined.
 */
function watchContainers(sinceMs: number, itemOf: (attrs: Record<string, string>) => number | undefined) {
  const started = new Map<number, number>();
  const died = new Map<number, string>();
  const child = spawn(
    'docker',
    ['events', '--since', String(Math.floor(sinceMs / 1000) - 1), '--filter', 'type=container', '--filter', 'event=start',
      '--filter', 'event=die', '--filter', `label=${CONTAINER_LABEL}=${PLUGIN}`, '--format', '{{json .}}'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr = (stderr + String(c)).slice(-2000)));
  createInterface({ input: child.stdout }).on('line', (line) => {
    let e: { status?: string; timeNano?: number; Actor?: { Attributes?: Record<string, string> } };
    try {
      e = JSON.parse(line) as typeof e;
    } catch {
      return;
    }
    const at = (e.timeNano ?? 0) / 1e6;
    const item = itemOf(e.Actor?.Attributes ?? {});
    if (item === undefined || at < sinceMs) return;
    if (e.status === 'start' && !started.has(item)) started.set(item, at);
    if (e.status === 'die') died.set(item, `its container exited (code ${e.Actor?.Attributes?.exitCode ?? '?'})`);
  });
  return {
    started,
    died,
    stderr: () => stderr,
    stop() {
      child.kill();
    },
  };
}

/**
 * Waits until every item's container started and its marker is in the store, or it failed, or
 * the burst timed out; and until `check` (every half second) says yes, unless an item failed.
 */
async function waitBurst(
  items: Item[],
  t0: number,
  s3: S3Server,
  markerKey: (i: number) => string,
  events: ReturnType<typeof watchContainers>,
  check?: () => Promise<boolean>,
): Promise<void> {
  let lastCheck = 0;
  let checked = !check;
  for (;;) {
    const keys = new Set(await s3.keys(BUCKET));
    const now = wallNow();
    for (const it of items) {
      if (it.markerMs === undefined && keys.has(markerKey(it.i))) it.markerMs = now - t0;
      const st = events.started.get(it.i);
      if (st !== undefined) it.startedMs = st - t0;
      const died = events.died.get(it.i);
      if (died) it.error ??= died;
    }
    const resolved = items.every((it) => it.error !== undefined || (it.markerMs !== undefined && it.startedMs !== undefined));
    if (resolved && (checked || items.some((it) => it.error !== undefined))) return;
    if (now - t0 > BURST_TIMEOUT_MS) {
      for (const it of items.filter((x) => x.error === undefined && (x.markerMs === undefined || x.startedMs === undefined))) {
        it.error =
          `not up after ${BURST_TIMEOUT_MS / 1000} s (${it.startedMs === undefined ? 'no start event' : 'started'}, ` +
          `${it.markerMs === undefined ? 'no marker' : 'marker seen'})${events.stderr() ? `; docker events: ${events.stderr()}` : ''}`;
      }
      return;
    }
    if (check && now - lastCheck > 500) {
      lastCheck = now;
      checked = await check();
    }
    await sleep(MARKER_POLL_MS);
  }
}

// ---------------------------------------------------------------------------------------------
// The pieces of a burst
// ---------------------------------------------------------------------------------------------

/** What a job of the launcher gave: its start and end (wall clock, ms since the epoch), exit code, output. */
interface JobResult {
  start: number;
  end: number;
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * A bash that starts the commands of a burst: each line written to it (an ID, then the argv,
 * tab-separated) becomes a background job at once, and the job's end comes back as a line
 * `ID START END EXIT` (bash's EPOCHREALTIME), its output in DIR/ID.out and DIR/ID.err. A fork of
 * bash costs about a millisecond; one of this Node process 20-90 ms on a loaded 2-core machine,
 * which spread 50 `docker run -d` spawned from here over 4 s (the plugin pays that for each s3fs
 * it spawns, but the docker CLIs and a script's s3fs should not).
 */
class Launcher {
  private readonly child: ChildProcess;
  private readonly jobs = new Map<string, (r: { start: number; end: number; exitCode: number }) => void>();
  private readonly exited: Promise<void>;
  private seq = 0;

  constructor(private readonly dir: string) {
    const script = [
      'while IFS=$\'\\t\' read -r -a cmd; do',
      '  ( s=$EPOCHREALTIME; "${cmd[@]:1}" >"$0/${cmd[0]}.out" 2>"$0/${cmd[0]}.err" </dev/null; rc=$?; echo "${cmd[0]} $s $EPOCHREALTIME $rc" ) &',
      'done',
      'wait',
    ].join('\n');
    // C.UTF-8: EPOCHREALTIME's decimal point is the locale's.
    this.child = spawn('bash', ['-c', script, dir], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, LC_ALL: 'C.UTF-8' } });
    this.exited = new Promise((r) => this.child.once('exit', () => r()));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const [id = '', start, end, rc] = line.split(' ');
      this.jobs.get(id)?.({ start: Number(start) * 1000, end: Number(end) * 1000, exitCode: Number(rc) });
      this.jobs.delete(id);
    });
  }

  /** Starts ARGV (no tab or newline in any word) as a job named NAME; resolves when it has ended. */
  async run(name: string, argv: string[]): Promise<JobResult> {
    const id = `${name}.${++this.seq}`;
    const ended = new Promise<{ start: number; end: number; exitCode: number }>((r) => this.jobs.set(id, r));
    this.child.stdin!.write(`${[id, ...argv].join('\t')}\n`);
    const r = await ended;
    const read = (ext: string) => readFile(path.join(this.dir, `${id}.${ext}`), 'utf8').then((t) => t.trim(), () => '');
    return { ...r, stdout: await read('out'), stderr: await read('err') };
  }

  /** Ends the launcher once its jobs have ended (it waits for them), or after 20 s. */
  async close(): Promise<void> {
    this.child.stdin!.end();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.exited, new Promise((r) => (timer = setTimeout(r, 20_000)))]);
    clearTimeout(timer);
    this.child.kill();
  }
}

/**
 * `docker run -d` of item IT's container, through the launcher, under `timeout`: a failure (an
 * exit code, or the timeout's 124) is the item's error.
 */
async function runContainer(launcher: Launcher, it: Item, t0: number, name: string, mountArgs: string[], marker: string): Promise<void> {
  const args = ['run', '-d', '--name', name, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, ...mountArgs, TEST_IMAGE, 'sh', '-c', TASK_SCRIPT, marker];
  const r = await launcher.run(name, ['timeout', String(CLI_TIMEOUT_MS / 1000), 'docker', ...args]);
  it.spawnMs ??= r.start - t0;
  it.cliMs = r.end - t0;
  if (r.exitCode === 124) it.error = `docker run -d ${name} timed out after ${CLI_TIMEOUT_MS / 1000} s: ${r.stderr}`;
  else if (r.exitCode !== 0) it.error = `docker run -d ${name} failed after ${fmtMs(r.end - r.start)} ms (exit ${r.exitCode}): ${r.stderr}`;
  else it.container = r.stdout;
}

/** The raw side's s3fs clients: started through the launcher, watched and unmounted by this script. */
class RawMounts {
  constructor(
    readonly dir: string,
    private readonly argvFor: (i: number) => string[],
    private readonly env: Record<string, string>,
  ) {}

  target(i: number): string {
    return path.join(this.dir, `m-${i}`);
  }

  /** Makes the mountpoints 1..N (before a burst: the plugin makes its own in no time). */
  async prepare(n: number): Promise<void> {
    for (let i = 1; i <= n; i++) await mkdir(this.target(i), { recursive: true });
  }

  /**
   * Starts s3fs for item I (in the foreground, as the plugin runs it) and resolves once statfs of
   * its mountpoint answers from FUSE.
   */
  async mount(launcher: Launcher, i: number, deadline: number): Promise<void> {
    const target = this.target(i);
    const env = Object.entries(this.env).map(([k, v]) => `${k}=${v}`);
    let exited: JobResult | undefined;
    void launcher.run(`s3fs-${i}`, ['env', '-i', ...env, 's3fs', ...this.argvFor(i)]).then((r) => (exited = r));
    for (;;) {
      if (exited) throw new Error(`s3fs for ${target} exited (${exited.exitCode}): ${exited.stderr}`);
      const st = await statfs(target).catch(() => undefined); // the directory below answers until the mount is there
      if (st?.type === FUSE_SUPER_MAGIC) return;
      if (wallNow() > deadline) throw new Error(`s3fs for ${target} did not mount in time`);
      await sleep(STATFS_POLL_MS);
    }
  }

  /**
   * Unmounts every mount and waits for its s3fs to exit. A client still running 20 s after its
   * umount serves a copy of its mount in another mount namespace (a process that unshared its
   * namespace while the mount was up, such as the tests' holders on a shared machine): it is
   * stopped, and a note says so.
   */
  async unmountAll(): Promise<string | undefined> {
    const pids = await s3fsClientsBelow(this.dir);
    const refused: string[] = [];
    for (const mp of (await mountsBelow(this.dir)).reverse()) {
      const r = await execa('umount', [mp], { reject: false });
      if (r.exitCode !== 0) refused.push(`umount ${mp}: ${r.stderr.trim()}`);
    }
    if (refused.length) throw new Error(`${refused.length} umounts failed, e.g. ${refused[0]}`);
    if (await waitGone(pids, 20_000)) return undefined;
    const left = await s3fsClientsBelow(this.dir);
    for (const pid of left) process.kill(pid, 'SIGTERM');
    if (!(await waitGone(left, 10_000))) for (const pid of left) process.kill(pid, 'SIGKILL');
    return `${left.length} raw s3fs clients still ran 20 s after their umount (another mount namespace held their mounts): stopped`;
  }
}

/**
 * The raw argv of item I from the argv of the plugin's client for the warm-up volume (mounted
 * at `warmTarget`, source `bucket:/warm`): item I's mountpoint and sub-path. s3fs splits its
 * `bucket:/path` argument in place, so /proc shows it as one word or as two.
 */
function rawArgvFactory(raw: string[], warmTarget: string, warmPath: string, targetOf: (i: number) => string): (i: number) => string[] {
  const joined = raw.indexOf(`${BUCKET}:${warmPath}`);
  const split = raw.findIndex((w, k) => w === BUCKET && raw[k + 1] === warmPath);
  if (joined < 0 && split < 0) throw new Error(`no ${BUCKET}:${warmPath} in the client's argv: ${raw.join(' ')}`);
  return (i) => {
    const source = `${BUCKET}:/${PREFIX.raw}-${i}`;
    const words = joined >= 0 ? raw.map((w, k) => (k === joined ? source : w)) : [...raw.slice(0, split), source, ...raw.slice(split + 2)];
    return words.map((w) => (w === warmTarget ? targetOf(i) : w));
  };
}

/** Whether nothing is mounted below the plugin's propagated mount any more (every Unmount done). */
async function pluginMountsGone(propagatedMount: string): Promise<boolean> {
  return (await mountsBelow(propagatedMount)).every((mp) => mp === propagatedMount);
}

// ---------------------------------------------------------------------------------------------
// Plugin calls per burst
// ---------------------------------------------------------------------------------------------

interface CallSummary {
  counts: Record<string, number>;
  mount: Stats;
  slowestMount: { volume: string | undefined; ms: number } | undefined;
  slowest: { call: string; volume: string | undefined; ms: number } | undefined;
  /** Failed calls, but for a Get of a volume not created yet (dockerd asks before it creates one). */
  failed: Array<{ call: string; volume: string | undefined; status: number; ms: number; err: string | undefined }>;
}

function summariseCalls(calls: PluginCall[]): CallSummary {
  const counts: Record<string, number> = {};
  for (const c of calls) counts[c.call] = (counts[c.call] ?? 0) + 1;
  const mounts = calls.filter((c) => c.call === 'Mount');
  const by = (xs: PluginCall[]) => [...xs].sort((a, b) => b.ms - a.ms)[0];
  const sm = by(mounts);
  const s = by(calls);
  return {
    counts,
    mount: stats(mounts.map((c) => c.ms)),
    slowestMount: sm && { volume: sm.volume, ms: sm.ms },
    slowest: s && { call: s.call, volume: s.volume, ms: s.ms },
    failed: calls
      .filter((c) => c.status !== 200 && !(c.call === 'Get' && / not found$/.test(c.err ?? '')))
      .map((c) => ({ call: c.call, volume: c.volume, status: c.status, ms: c.ms, err: c.err })),
  };
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      count: { type: 'string', default: '50' },
      quick: { type: 'boolean', default: false },
      kinds: { type: 'string', default: KINDS.join(',') },
      out: { type: 'string', default: path.join('.cache', 'bench-burst.json') },
    },
  });
  const n = values.quick ? 5 : Number(values.count);
  if (!Number.isInteger(n) || n < 1) throw new Error('--count takes a positive integer');
  const kinds = values.kinds.split(',').map((k) => {
    if (!(KINDS as readonly string[]).includes(k.trim())) throw new Error(`unknown kind '${k}'; known: ${KINDS.join(', ')}`);
    return k.trim() as Kind;
  });
  if (process.getuid?.() !== 0) throw new Error('needs root (dockerd, FUSE mounts)');
  const started = new Date();
  const logPath = await dockerdLogPath();
  if (!logPath) throw new Error("cannot find dockerd's log (its stdout is not a file); set OSSNAS_E2E_DOCKERD_LOG=FILE");
  const cleanup = new Cleanup();
  try {
    await bench(n, kinds, values.out, started, logPath, cleanup);
  } finally {
    log('[cleanup] removing containers, services, raw mounts, the swarm if ours, volumes, the plugin, the S3 server and temporary directories');
    await cleanup.run();
  }
}

async function bench(n: number, kinds: Kind[], out: string, started: Date, logPath: string, cleanup: Cleanup): Promise<void> {
  const has = (k: Kind) => kinds.includes(k);
  const items = (): Item[] => Array.from({ length: n }, (_, k) => ({ i: k + 1 }));

  // --- setup: S3 server, plugin (every call logged at info), swarm, raw directory, warm-up
  log(`[setup] building the plugin bundle and installing it as ${PLUGIN} (the e2e route: rootfs.build.sh, docker plugin create)`);
  let t = performance.now();
  const setup = await setUpPlugin(PLUGIN, { buckets: [BUCKET], env: { LOG_LEVEL: 'info' } });
  cleanup.add('plugin, its volumes and containers, state and credentials dirs, S3 server', () => setup.cleanup());
  const { plugin } = setup;
  const s3 = setup.s3!;
  log(`[setup] plugin ${plugin.id.slice(0, 12)} enabled, S3 server ${s3.url}, ${((performance.now() - t) / 1000).toFixed(1)} s`);
  const ossOpts = (subPath: string) => ({ type: 'oss', bucket: BUCKET, url: s3.url, credentials: LOCAL_PROFILE, path: subPath });
  const createOpts = (subPath: string) => Object.entries(ossOpts(subPath)).flatMap(([k, v]) => ['-o', `${k}=${v}`]);

  let swarm: Swarm | undefined;
  let swarmNote = '';
  if (has('service')) {
    // After the plugin, as in the swarm e2e test: the node then describes it to the scheduler from the start.
    swarm = await joinSwarm((m) => (swarmNote = m));
    const s = swarm;
    cleanup.add('swarm', () => leaveSwarm(s));
    log(`[setup] ${swarmNote}`);
  }

  const rawDir = await mkdtemp(path.join(os.tmpdir(), `${PLUGIN}-raw-`));
  cleanup.add(`raw mounts and ${rawDir}`, async () => {
    const left = await forceCleanBelow(rawDir);
    if (left.length) log(`cleanup: ${left.slice(0, 5).join('; ')}${left.length > 5 ? ` and ${left.length - 5} more` : ''}`);
    await rm(rawDir, { recursive: true, force: true });
  });
  const launcher = new Launcher(await mkdtemp(path.join(rawDir, 'jobs-')));
  cleanup.add('launcher', () => launcher.close()); // after the raw mounts: it waits for their s3fs
  const services: string[] = [];
  cleanup.add('services', async () => {
    for (const s of services) await removeService(s, TEARDOWN_TIMEOUT_MS);
  });
  cleanup.add('containers', async () => {
    const ids = (await docker(['ps', '-aq', '--filter', `label=${CONTAINER_LABEL}=${PLUGIN}`])).split('\n').filter(Boolean);
    if (ids.length) await docker(['rm', '-f', ...ids], { timeout: TEARDOWN_TIMEOUT_MS });
  });

  // Warm-up: one container with an OSS volume (the plugin's first Mount runs cold code), whose
  // client's argv is the raw side's; one raw mount.
  const warm = `${PLUGIN}-warm`;
  const warmPath = '/warm';
  const warmTarget = `/mnt/volumes/${warm}`;
  await docker(['volume', 'create', '-d', PLUGIN, ...createOpts(warmPath), warm]);
  const passwd = path.join(rawDir, 'passwd');
  await writeFile(passwd, 'S3RVER:S3RVER\n', { mode: 0o600 });
  const holder = await docker(['run', '-d', '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '-v', `${warm}:/data`, TEST_IMAGE, 'sleep', '600']);
  let argv: Awaited<ReturnType<typeof clientArgv>>;
  try {
    await waitFor("the plugin's s3fs", () => fuseClientPid(warmTarget), 20_000, 50);
    argv = await clientArgv(warmTarget, path.join(rawDir, 'm-1'), passwd);
  } finally {
    await docker(['rm', '-f', holder]);
  }
  await waitFor('the warm-up volume to be unmounted', async () => (await volumeStatus(warm)).mounted === false, 20_000, 50);
  const raw = new RawMounts(
    rawDir,
    rawArgvFactory(argv.raw, path.join(rawDir, 'm-1'), warmPath, (i) => path.join(rawDir, `m-${i}`)),
    { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: rawDir },
  );
  await raw.prepare(n);
  if (has('raw')) {
    await raw.mount(launcher, 1, wallNow() + 20_000);
    const note = await raw.unmountAll();
    if (note) log(`[setup] warm-up: ${note}`);
  }
  const rootfs = path.join(path.dirname(plugin.propagatedMount), 'rootfs');
  const versions = {
    dockerd: await docker(['version', '--format', '{{.Server.Version}}']),
    s3fsHost: (await execa('s3fs', ['--version'], { reject: false })).stdout.split('\n')[0] ?? 'unknown',
    s3fsPlugin: (await execa('chroot', [rootfs, 's3fs', '--version'], { reject: false })).stdout.split('\n')[0] ?? 'unknown',
    node: process.version,
  };

  // Volumes of the run burst, and the services (no task yet).
  const runVolume = (i: number) => `${PLUGIN}-run-${i}`;
  if (has('run')) {
    t = performance.now();
    for (let i = 1; i <= n; i++) await docker(['volume', 'create', '-d', PLUGIN, ...createOpts(`/${PREFIX.run}-${i}`), runVolume(i)]);
    log(`[setup] ${n} volumes created for the run burst in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const svc = `${PLUGIN}-svc`;
  const svcBind = `${PLUGIN}-svc-bind`;
  const createService = async (name: string, mount: string, marker: string) => {
    services.push(name);
    await docker([
      'service', 'create', '--detach', '--name', name, '--replicas', '0', '--no-resolve-image',
      '--restart-condition', 'none', '--stop-grace-period', '1s', '--constraint', `node.id==${swarm!.nodeId}`,
      '--container-label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mount, TEST_IMAGE, 'sh', '-c', TASK_SCRIPT, marker,
    ]);
  };
  const slot = '{{.Task.Slot}}';
  if (has('service')) {
    const opts = Object.entries(ossOpts(`/${PREFIX.service}-${slot}`)).map(([k, v]) => `volume-opt=${k}=${v}`).join(',');
    await createService(svc, `type=volume,source=${PLUGIN}-svc-${slot},target=/data,volume-driver=${PLUGIN},${opts}`, 'marker-service');
    if (has('raw')) await createService(svcBind, `type=bind,source=${rawDir}/m-${slot},target=/data`, 'marker-service-bind');
  }

  const logOffset = (await stat(logPath)).size;
  const results: BurstResult[] = [];

  /** Runs one burst: `start` starts every item; the wait; the final running count; the teardown. */
  const burst = async (
    kind: BurstKind,
    itemOf: (attrs: Record<string, string>) => number | undefined,
    start: (its: Item[], t0: number) => Promise<void>,
    runningCount: (its: Item[]) => Promise<number>,
    teardown: (its: Item[]) => Promise<string | undefined | void>,
    check?: (its: Item[], t0: number) => Promise<boolean>,
  ): Promise<BurstResult> => {
    const its = items();
    const marker = `marker-${kind}`;
    await sleep(1000); // let the previous teardown's stragglers settle
    const before = loadavg();
    const cpu0 = await cpuCounters();
    const events = watchContainers(wallNow(), itemOf); // spawned before the clock starts
    const t0 = wallNow();
    log(`[${kind}] burst of ${n}`);
    try {
      const starting = start(its, t0);
      await waitBurst(its, t0, s3, (i) => `${PREFIX[kind]}-${i}/${marker}`, events, check && (() => check(its, t0)));
      await starting;
    } finally {
      events.stop();
    }
    const end = wallNow();
    const cpu1 = await cpuCounters();
    const after = loadavg();
    const running = await runningCount(its);
    const failures = its.filter((it) => it.error).map((it) => `${kind} ${it.i}: ${it.error}`);
    if (running !== n) failures.push(`${kind}: ${running} of ${n} running at the end`);
    const spawns = its.map((it) => it.spawnMs).filter((x): x is number => x !== undefined);
    const r: BurstResult = {
      kind,
      n,
      t0,
      end,
      spawnSpreadMs: spawns.length ? Math.max(...spawns) - Math.min(...spawns) : undefined,
      allMountedMs: allBy(its, (it) => it.mountedMs),
      allCliExitedMs: allBy(its, (it) => it.cliMs),
      allStartedMs: allBy(its, (it) => it.startedMs),
      allMarkersMs: allBy(its, (it) => it.markerMs),
      allTasksRunningMs: allBy(its, (it) => it.taskRunningMs),
      started: stats(its.map((it) => it.startedMs)),
      markers: stats(its.map((it) => it.markerMs)),
      ...(kind === 'raw' && { mounted: stats(its.map((it) => it.mountedMs)) }),
      running,
      machineBusyPct: (100 * (cpu1.busy - cpu0.busy)) / Math.max(1, cpu1.total - cpu0.total),
      loadavg: { before, after },
      failures,
      notes: [],
      items: its,
    };
    log(`[${kind}] all running after ${fmtMs(r.allStartedMs ?? NaN)} ms, every marker after ${fmtMs(r.allMarkersMs ?? NaN)} ms` +
      `${failures.length ? `; ${failures.length} failures, e.g. ${failures[0]}` : ''}`);
    const td = performance.now();
    try {
      const note = await teardown(its);
      if (note) r.notes.push(`${kind} teardown: ${note}`);
    } catch (err) {
      // Recorded, and the run goes on: the next burst's setting may still be clean, and the cleanup removes what is left.
      r.failures.push(`${kind} teardown: ${(err as Error).message}`);
      log(`[${kind}] teardown failed: ${(err as Error).message}`);
    }
    r.teardownMs = performance.now() - td;
    r.teardownEnd = wallNow();
    results.push(r);
    return r;
  };

  const byName = (prefix: string) => (attrs: Record<string, string>) => {
    const m = new RegExp(`^${prefix}-(\\d+)$`).exec(attrs.name ?? '');
    return m ? Number(m[1]) : undefined;
  };
  const bySlot = (service: string) => (attrs: Record<string, string>) =>
    attrs['com.docker.swarm.service.name'] === service ? Number((attrs['com.docker.swarm.task.name'] ?? '').split('.')[1]) || undefined : undefined;
  const inspectRunning = async (its: Item[]) => {
    const ids = its.map((it) => it.container).filter((c): c is string => !!c);
    if (!ids.length) return 0;
    const r = await dockerResult(['inspect', '--format', '{{.State.Running}}', ...ids]);
    return r.stdout.split('\n').filter((l) => l === 'true').length;
  };
  const removeContainers = async (its: Item[]) => {
    const ids = its.map((it) => it.container).filter((c): c is string => !!c);
    if (ids.length) await docker(['rm', '-f', ...ids], { timeout: TEARDOWN_TIMEOUT_MS });
  };
  const waitUnmounted = () => waitFor("every Unmount (nothing left below the plugin's propagated mount)", () => pluginMountsGone(plugin.propagatedMount), TEARDOWN_TIMEOUT_MS, 100);
  const runningTasks = async (service: string) => (await tasksOf(service)).filter((k) => k.desired === 'Running' && k.current.startsWith('Running')).length;
  /** Whether swarm says all N tasks run; notes when each was first seen Running, and the tasks that failed. */
  const tasksUp = (service: string) => async (its: Item[], t0: number) => {
    const tasks = await tasksOf(service);
    const now = wallNow();
    let running = 0;
    for (const k of tasks) {
      const it = its.find((x) => x.i === Number(k.name.split('.').pop()));
      if (k.desired === 'Running' && k.current.startsWith('Running')) {
        running++;
        if (it) it.taskRunningMs ??= now - t0;
      } else if (it && /^(Failed|Rejected|Complete|Orphaned|Shutdown)/.test(k.current)) it.error ??= `task ${k.name} ${k.current}: ${k.error}`;
    }
    return running === its.length;
  };
  const scale = (service: string) => async (its: Item[]) => {
    const r = await dockerResult(['service', 'scale', '--detach', `${service}=${n}`], { timeout: CLI_TIMEOUT_MS }).catch((err: Error) => err);
    const error = r instanceof Error ? r.message : r.exitCode !== 0 ? `docker service scale failed (exit ${r.exitCode}): ${r.stderr}` : undefined;
    if (error) for (const it of its) it.error ??= error;
  };
  const scaleDown = (service: string) => async () => {
    await docker(['service', 'scale', '--detach', `${service}=0`], { timeout: CLI_TIMEOUT_MS });
    await waitFor(`the tasks of ${service} to go`, async () => (await docker(['ps', '-aq', '--filter', `label=com.docker.swarm.service.name=${service}`])) === '', TEARDOWN_TIMEOUT_MS, 250);
  };

  if (has('run')) {
    await burst(
      'run',
      byName(`${PLUGIN}-run`),
      async (its, t0) => {
        await Promise.all(its.map((it) => runContainer(launcher, it, t0, `${PLUGIN}-run-${it.i}`, ['-v', `${runVolume(it.i)}:/data`], 'marker-run')));
      },
      inspectRunning,
      async (its) => {
        await removeContainers(its);
        await waitUnmounted();
      },
    );
  }
  if (has('raw')) {
    await burst(
      'raw',
      byName(`${PLUGIN}-raw`),
      async (its, t0) => {
        await Promise.all(its.map(async (it) => {
          it.spawnMs = wallNow() - t0;
          try {
            await raw.mount(launcher, it.i, t0 + BURST_TIMEOUT_MS);
          } catch (err) {
            it.error = (err as Error).message;
            return;
          }
          it.mountedMs = wallNow() - t0;
          await runContainer(launcher, it, t0, `${PLUGIN}-raw-${it.i}`, ['--mount', `type=bind,source=${raw.target(it.i)},target=/data`], 'marker-raw');
        }));
      },
      inspectRunning,
      // The mounts stay for the bind service; without it they go now.
      async (its) => {
        await removeContainers(its);
        return has('service') ? undefined : raw.unmountAll();
      },
    );
  }
  if (has('service') && has('raw')) {
    await burst('service-bind', bySlot(svcBind), scale(svcBind), () => runningTasks(svcBind), async () => {
      await scaleDown(svcBind)();
      return raw.unmountAll();
    }, tasksUp(svcBind));
  }
  if (has('service')) {
    await burst('service', bySlot(svc), scale(svc), () => runningTasks(svc), async () => {
      await scaleDown(svc)();
      await waitUnmounted();
    }, tasksUp(svc));
  }

  // --- the plugin's calls, per burst and per teardown, from dockerd's log
  await sleep(500); // dockerd copies the plugin's output to its log asynchronously
  const logText = await readFrom(logPath, logOffset);
  const calls = parsePluginCalls(logText, plugin.id);
  const inWindow = (from: number, to: number) => calls.filter((c) => c.start >= from - 2 && c.end <= to + 2);
  const callsPerBurst = Object.fromEntries(
    results.map((r) => [r.kind, { burst: summariseCalls(inWindow(r.t0, r.end)), teardown: summariseCalls(inWindow(r.end, r.teardownEnd ?? r.end)) }]),
  );
  const all = summariseCalls(calls);
  const complaints = dockerdComplaints(logText, [PLUGIN, plugin.id]);
  const timeouts = complaints.filter((l) => /deadline exceeded|timeout|timed out/i.test(l));
  const notes = results.flatMap((r) => r.notes);
  const cliFailures = results.flatMap((r) => r.items.filter((it) => it.error?.startsWith('docker ')).map((it) => it.error!));
  const cliTimeouts = cliFailures.filter((e) => / timed out after /.test(e));
  const failures = [
    ...results.flatMap((r) => r.failures),
    ...all.failed.map((c) => `plugin call ${c.call} ${c.volume ?? ''} answered ${c.status} after ${fmtMs(c.ms)} ms: ${c.err ?? ''}`),
    ...timeouts.map((l) => `dockerd: ${l}`),
  ];
  if (all.slowest && all.slowest.ms >= NEAR_TIMEOUT_MS) {
    failures.push(`plugin call ${all.slowest.call} ${all.slowest.volume ?? ''} took ${fmtMs(all.slowest.ms)} ms, near Docker's ${DOCKER_CALL_TIMEOUT_MS / 1000} s timeout`);
  }

  // --- ratios
  const get = (k: BurstKind) => results.find((r) => r.kind === k);
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? a / b : undefined);
  const run = get('run');
  const rawR = get('raw');
  const service = get('service');
  const bind = get('service-bind');
  const serviceAnchor = (f: (r: BurstResult) => number | undefined) =>
    rawR?.allMountedMs !== undefined && bind && f(bind) !== undefined ? rawR.allMountedMs + f(bind)! : undefined;
  const ratios = {
    runRunning: ratio(run?.allStartedMs, rawR?.allStartedMs),
    runMarkers: ratio(run?.allMarkersMs, rawR?.allMarkersMs),
    serviceAnchorRunningMs: serviceAnchor((r) => r.allStartedMs),
    serviceAnchorMarkersMs: serviceAnchor((r) => r.allMarkersMs),
    serviceRunning: ratio(service?.allStartedMs, serviceAnchor((r) => r.allStartedMs)),
    serviceMarkers: ratio(service?.allMarkersMs, serviceAnchor((r) => r.allMarkersMs)),
  };
  const verdict = ratios.runRunning === undefined ? 'n/a' : ratios.runRunning <= RATIO_TARGET ? 'PASS' : 'FAIL';

  // --- printing
  const ms = (v: number | undefined) => (v === undefined ? '-' : fmtMs(v));
  const rows = results.map((r) => [
    LABELS[r.kind],
    ms(r.allStartedMs),
    ms(r.started.p50),
    ms(r.started.p90),
    ms(r.allMarkersMs),
    ms(r.allMountedMs),
    ms(r.allCliExitedMs),
    ms(r.allTasksRunningMs),
    ms(r.spawnSpreadMs),
    `${r.running}/${r.n}`,
    `${r.machineBusyPct.toFixed(0)} %`,
    ms(r.teardownMs),
  ]);
  const table = textTable(
    [`N = ${n}, ms from the burst's start`, 'all running', 'p50', 'p90', 'all markers', 's3fs all up', 'CLIs exited', 'tasks Running', 'spawn spread', 'running', 'CPU busy', 'teardown'],
    rows,
  );
  const f2 = (v: number | undefined) => (v === undefined ? 'n/a' : v.toFixed(2));
  const ratioLines = [
    `(a)/(b): all running ${f2(ratios.runRunning)}, all markers ${f2(ratios.runMarkers)}; target <= ${RATIO_TARGET} on all running: ${verdict}`,
    `(c)/((b) s3fs all up + (d)): all running ${f2(ratios.serviceRunning)} (anchor ${ms(ratios.serviceAnchorRunningMs)} ms), ` +
      `all markers ${f2(ratios.serviceMarkers)} (anchor ${ms(ratios.serviceAnchorMarkersMs)} ms); the anchor adds two phases that ossnas overlaps`,
  ];
  const callLines = [`plugin calls (dockerd's log; the plugin's own time per call, from its request to its answer):`];
  for (const [kind, c] of Object.entries(callsPerBurst)) {
    const cs = (s: CallSummary) => Object.entries(s.counts).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
    if (!Object.keys(c.burst.counts).length && !Object.keys(c.teardown.counts).length) {
      callLines.push(`  ${kind}: no plugin call`);
      continue;
    }
    callLines.push(
      `  ${kind}: ${cs(c.burst)}; Mount p50 ${ms(c.burst.mount.p50)}, p90 ${ms(c.burst.mount.p90)}, slowest ${ms(c.burst.slowestMount?.ms)} ms` +
        `${c.burst.slowestMount ? ` (${c.burst.slowestMount.volume})` : ''}; teardown: ${cs(c.teardown)}, slowest ${c.teardown.slowest ? `${c.teardown.slowest.call} ${ms(c.teardown.slowest.ms)} ms` : '-'}`,
    );
  }
  callLines.push(
    `  slowest call of the run: ${all.slowest ? `${all.slowest.call} ${all.slowest.volume ?? ''} ${ms(all.slowest.ms)} ms, ${((100 * all.slowest.ms) / DOCKER_CALL_TIMEOUT_MS).toFixed(0)} % of Docker's ${DOCKER_CALL_TIMEOUT_MS / 1000} s timeout` : 'none seen'}` +
      `; calls >= ${NEAR_TIMEOUT_MS / 1000} s: ${calls.filter((c) => c.ms >= NEAR_TIMEOUT_MS).length}; failed calls: ${all.failed.length}`,
    `  dockerd's own warnings and errors about the plugin: ${complaints.length}${complaints.length ? `, e.g. ${complaints[0]}` : ''}`,
  );
  const meta = { ...runMeta(started), versions, n, kinds, plugin: PLUGIN, image: TEST_IMAGE, swarm: swarmNote || undefined, pluginS3fsArgv: ['s3fs', ...argv.plugin] };
  const header = [
    `Burst benchmark, ${meta.date}, ossnas ${meta.revision}; ${meta.cpus} x ${meta.cpuModel}`,
    `  dockerd ${versions.dockerd}; s3fs: host ${versions.s3fsHost}, plugin ${versions.s3fsPlugin}; s3rver on 127.0.0.1, one bucket, a sub-path per volume`,
    `  ${n} containers at once, each with its own volume; "running": dockerd's start event; "markers": each container's file in the store`,
  ];
  process.stdout.write(
    `${header.join('\n')}\n\n${table}\n${ratioLines.join('\n')}\n\n${callLines.join('\n')}\n` +
      `\ndocker calls of the bursts: ${cliFailures.length} failed, of which ${cliTimeouts.length} timed out (after ${CLI_TIMEOUT_MS / 1000} s); ` +
      `dockerd's complaints of a timeout: ${timeouts.length}\n` +
      notes.map((n) => `note: ${n}\n`).join('') +
      (failures.length ? `FAILED: ${failures.length} problems:\n${failures.slice(0, 20).map((f) => `  ${f}`).join('\n')}\n` : 'no problem: every container and task came up\n'),
  );
  await writeJsonReport(out, {
    meta,
    target: { ratio: RATIO_TARGET, verdict },
    ratios,
    bursts: results,
    calls: { perBurst: callsPerBurst, all, count: calls.length, nearTimeoutMs: NEAR_TIMEOUT_MS, atLeastNear: calls.filter((c) => c.ms >= NEAR_TIMEOUT_MS).length },
    dockerdComplaints: complaints.slice(0, 50),
    dockerCalls: { failed: cliFailures, timedOut: cliTimeouts.length, dockerdTimeouts: timeouts },
    failures,
    notes,
  });
  if (failures.length) throw new Error(`${failures.length} problems in the run (listed above)`);
}

runBench(main);
