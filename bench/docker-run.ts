// Mount-path benchmark (issue 6): `docker run --rm` of a trivial container with no volume, with an
// ossnas OSS volume (each run mounts and unmounts it), with a local-driver volume, and the raw
// s3fs mount time (the plugin's own s3fs argv, run on the host), interleaved round-robin against
// a local S3 server (s3rver). Target: (oss) <= (none) + (raw s3fs) + 30 ms. Then, from the
// plugin's log lines in dockerd's log, which calls dockerd makes per `docker run -v` and what they
// cost, and, in a few traced runs, where the time goes inside Mount and Unmount.
//
//   npx tsx bench/docker-run.ts                 (20 rounds, ~1.5 min after the plugin build)
//   npx tsx bench/docker-run.ts --quick         (3 rounds, 2 traced runs)
//   options: --rounds 20  --traced 5  --kinds none,oss,s3fs,local  --out .cache/bench-docker-run.json
// Needs root and a running dockerd (scripts/host-setup.sh); builds the plugin bundle like the e2e
// tests (rootfs.build.sh, ~10 s with a cached base) and installs it as `ossnas-bench-docker-run`,
// which it removes at the end, with its volume, the S3 server and every temporary directory.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat, statfs, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { findMount, parseMountinfo } from '../src/host/mountinfo.js';
import {
  CONTAINER_LABEL,
  docker,
  dockerdLogPath,
  dockerResult,
  fuseClientPid,
  median,
  pluginPid,
  TEST_IMAGE,
  volumeStatus,
  waitFor,
} from '../test/helpers/docker.js';
import { LOCAL_PROFILE, setUpPlugin } from '../test/helpers/e2e-setup.js';
import { percentile } from './client.js';
import { runMeta } from './build.js';
import { clientArgv, log, writeJsonReport } from './fuse-host.js';
import { parsePluginCalls, readFrom, wallNow, type PluginCall } from './plugin-log.js';

const PLUGIN = 'ossnas-bench-docker-run';
const BUCKET = 'bench';
const VOLUME = 'ossnas-bench-oss';
const LOCAL_VOLUME = 'ossnas-bench-local';
/** Where the plugin mounts a volume, inside the plugin. */
const PLUGIN_TARGET = `/mnt/volumes/${VOLUME}`;
const TARGET_SLACK_MS = 30;
const KINDS = ['none', 'oss', 's3fs', 'local'] as const;
type Kind = (typeof KINDS)[number];
const LABELS: Record<Kind, string> = {
  none: '(a) docker run, no volume',
  oss: '(b) docker run -v, ossnas OSS volume',
  s3fs: '(c) raw s3fs mount (spawn -> statfs)',
  local: '(d) docker run -v, local volume',
};

const loadavg = () => os.loadavg().map((l) => Math.round(l * 100) / 100);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** p, or undefined after ms; the timer is cleared, so that it never keeps the process alive. */
async function timeLimit<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(r, ms, undefined)))]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Cleanup: everything set up is undone in reverse order, once, also on error and on a signal.
// ---------------------------------------------------------------------------------------------

const undo: Array<[string, () => Promise<unknown>]> = [];
let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const [what, u] of undo.reverse()) {
      await u().catch((err: unknown) => log(`cleanup: ${what}: ${(err as Error).message}`));
    }
  })();
  return cleaning;
}
// `on`, not `once`: execa's signal-exit handler re-raises a signal that no other listener is left
// for, which would kill us in the middle of the cleanup.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (cleaning) return;
    log(`\n${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------------
// The measured things
// ---------------------------------------------------------------------------------------------

interface RunSample {
  kind: Kind;
  round: number;
  ms: number;
  /** Wall clock at spawn of the docker CLI and at its exit (ms since the epoch). */
  start: number;
  end: number;
}

async function dockerRun(volumeArgs: string[]): Promise<{ ms: number; start: number; end: number }> {
  const start = wallNow();
  const r = await dockerResult(['run', '--rm', '--label', `${CONTAINER_LABEL}=${PLUGIN}`, ...volumeArgs, TEST_IMAGE, 'true']);
  const end = wallNow();
  if (r.exitCode !== 0) throw new Error(`docker run ${volumeArgs.join(' ')} failed (exit ${r.exitCode}): ${r.stderr}`);
  return { ms: end - start, start, end };
}

interface RawS3fs {
  /** spawn -> statfs of the mountpoint answered (the kernel's INIT answered by s3fs): the number used as (c) */
  ms: number;
  /** spawn -> the mount is in /proc/self/mountinfo */
  inTableMs: number;
  /** `umount` of it (spawn to exit) */
  umountMs: number;
  /** `umount` start -> s3fs exited */
  unmountedMs: number;
}

async function fuseMounted(target: string): Promise<boolean> {
  const m = await findMount(target);
  return !!m && m.fsType.startsWith('fuse');
}

/** s3fs in the foreground as our child, as the plugin runs it; the table polled every millisecond. */
async function rawS3fs(argv: string[], env: Record<string, string>, target: string): Promise<RawS3fs> {
  const t0 = performance.now();
  const child = spawn('s3fs', argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  let done = false;
  const exited = new Promise<void>((r) => child.once('exit', () => ((done = true), r())));
  try {
    while (!(await fuseMounted(target))) {
      if (done) throw new Error(`s3fs exited before mounting (${child.exitCode ?? child.signalCode}): ${stderr.trim()}`);
      if (performance.now() - t0 > 20_000) throw new Error(`s3fs did not mount within 20 s: ${stderr.trim()}`);
      await sleep(1);
    }
    const inTableMs = performance.now() - t0;
    if (!(await timeLimit(statfs(target), 20_000))) throw new Error('statfs of the s3fs mount took over 20 s');
    const ms = performance.now() - t0;
    const t1 = performance.now();
    await execa('umount', [target], { timeout: 10_000 });
    const umountMs = performance.now() - t1;
    await timeLimit(exited, 10_000);
    if (!done) throw new Error('s3fs did not exit within 10 s of its umount');
    return { ms, inTableMs, umountMs, unmountedMs: performance.now() - t1 };
  } finally {
    if (!done) child.kill('SIGKILL');
    if (await findMount(target)) await execa('umount', ['-l', target], { reject: false });
  }
}

// ---------------------------------------------------------------------------------------------
// Traced runs: the plugin's children and the host's mount table, polled every millisecond
// ---------------------------------------------------------------------------------------------

interface TraceEvents {
  /** first seen as a child of the plugin, and first seen with s3fs's argv */
  s3fsChild?: number;
  s3fsExec?: number;
  inTable?: number;
  statfsAnswered?: number;
  /** s3fs's /proc/PID/cgroup changing: the plugin moving it out of its cgroups, first and last change seen */
  cgroupFirstMove?: number;
  cgroupLastMove?: number;
  umountChild?: number;
  goneFromTable?: number;
  s3fsExited?: number;
  polls: number;
}

/** The basename of argv[0]; undefined while it cannot be told (gone, or empty in the middle of exec). */
function argv0(pid: number): string | undefined {
  try {
    return path.basename(readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0')[0] ?? '') || undefined;
  } catch {
    return undefined;
  }
}

function readOr(file: string, otherwise: string): string {
  try {
    return readFileSync(file, 'latin1');
  } catch {
    return otherwise;
  }
}

function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch {
    return true;
  }
}

/** Watches one `docker run -v` from the host: the plugin's children (s3fs, umount) and the propagated mount. */
function traceRun(pluginPidNum: number, hostTarget: string): { stop(): Promise<TraceEvents> } {
  const ev: TraceEvents = { polls: 0 };
  const childrenFile = `/proc/${pluginPidNum}/task/${pluginPidNum}/children`;
  const seen = new Map<number, number>(); // pid -> first seen
  const named = new Set<number>();
  let s3fsPid: number | undefined;
  let s3fsCgroups: string | undefined;
  let mounted = false;
  let running = true;
  const loop = (async () => {
    while (running) {
      ev.polls++;
      const now = wallNow();
      let children: number[] = [];
      try {
        children = readFileSync(childrenFile, 'latin1').trim().split(/\s+/).filter(Boolean).map(Number);
      } catch {
        // the plugin's main thread is gone: nothing to see
      }
      for (const pid of children) {
        if (!seen.has(pid)) seen.set(pid, now);
        if (named.has(pid)) continue;
        const name = argv0(pid); // node's own name until the child has exec'd
        if (name === 's3fs' && s3fsPid === undefined) {
          s3fsPid = pid;
          ev.s3fsChild = seen.get(pid);
          ev.s3fsExec = now;
          named.add(pid);
        } else if (name === 'umount' && ev.umountChild === undefined) {
          ev.umountChild = seen.get(pid);
          named.add(pid);
        } else if (name !== undefined && name !== 'node') named.add(pid);
      }
      const inTable = parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).some((m) => m.mountPoint === hostTarget);
      if (inTable && !mounted) {
        mounted = true;
        ev.inTable ??= now;
        void statfs(hostTarget).then(
          () => (ev.statfsAnswered ??= wallNow()),
          () => undefined,
        );
      } else if (!inTable && mounted) {
        mounted = false;
        ev.goneFromTable ??= now;
      }
      if (s3fsPid !== undefined && ev.goneFromTable === undefined) {
        const cg = readOr(`/proc/${s3fsPid}/cgroup`, '');
        if (cg && s3fsCgroups !== undefined && cg !== s3fsCgroups) {
          ev.cgroupFirstMove ??= now;
          ev.cgroupLastMove = now;
        }
        if (cg) s3fsCgroups = cg;
      }
      if (ev.goneFromTable !== undefined && s3fsPid !== undefined && ev.s3fsExited === undefined && processGone(s3fsPid)) {
        ev.s3fsExited = now;
      }
      await sleep(1);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return ev;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Statistics and the printed report
// ---------------------------------------------------------------------------------------------

interface Stats {
  n: number;
  median: number;
  p90: number;
  min: number;
  max: number;
}

function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, median: median(s), p90: percentile(s, 0.9), min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN };
}

const fmt = (v: number | undefined) =>
  v === undefined || !Number.isFinite(v) ? '-' : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const pad = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [pad(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(pad)].join('\n');
}

/** Median of f over the items for which it is defined. */
function medianOf<T>(items: T[], f: (x: T) => number | undefined): number | undefined {
  const xs = items.map(f).filter((x): x is number => x !== undefined && Number.isFinite(x));
  return xs.length ? median(xs) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '20' },
      traced: { type: 'string', default: '5' },
      quick: { type: 'boolean', default: false },
      kinds: { type: 'string', default: KINDS.join(',') },
      out: { type: 'string', default: path.join('.cache', 'bench-docker-run.json') },
    },
  });
  const rounds = values.quick ? 3 : Number(values.rounds);
  const tracedRuns = values.quick ? 2 : Number(values.traced);
  if (!Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(tracedRuns) || tracedRuns < 0) {
    throw new Error('--rounds takes a positive integer, --traced a non-negative one');
  }
  const kinds = values.kinds.split(',').map((k) => {
    if (!(KINDS as readonly string[]).includes(k.trim())) throw new Error(`unknown kind '${k}'; known: ${KINDS.join(', ')}`);
    return k.trim() as Kind;
  });
  if (process.getuid?.() !== 0) throw new Error('needs root (dockerd, FUSE mounts)');

  const started = new Date();
  const loadBefore = loadavg();
  const logPath = await dockerdLogPath();
  if (!logPath) throw new Error("cannot find dockerd's log (its stdout is not a file); set OSSNAS_E2E_DOCKERD_LOG=FILE");

  // --- setup: S3 server, plugin (LOG_LEVEL=debug logs every call, the reads too: the call counts read them), volumes
  log(`[setup] building the plugin bundle and installing it as ${PLUGIN} (the e2e route: rootfs.build.sh, docker plugin create)`);
  let t0 = performance.now();
  const setup = await setUpPlugin(PLUGIN, { buckets: [BUCKET], env: { LOG_LEVEL: 'debug' } });
  undo.push(['plugin, its volumes and containers, state and credentials dirs, S3 server', () => setup.cleanup()]);
  const { plugin, s3 } = setup;
  log(`[setup] plugin ${plugin.id.slice(0, 12)} enabled, S3 server ${s3!.url}, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3!.url}`,
    '-o', `credentials=${LOCAL_PROFILE}`, VOLUME]);
  if (kinds.includes('local')) {
    await dockerResult(['volume', 'rm', '-f', LOCAL_VOLUME]);
    await docker(['volume', 'create', LOCAL_VOLUME]);
    undo.push([`volume ${LOCAL_VOLUME}`, () => docker(['volume', 'rm', '-f', LOCAL_VOLUME])]);
  }
  const hostTarget = path.join(plugin.propagatedMount, VOLUME);
  const rootfs = path.join(path.dirname(plugin.propagatedMount), 'rootfs');

  // --- raw s3fs: the plugin's argv, read while a container holds the volume, with our own
  // mountpoint and our own 0600 passwd file
  const rawDir = await mkdtemp(path.join(os.tmpdir(), 'ossnas-bench-s3fs-'));
  undo.push([`temporary directory ${rawDir}`, async () => {
    if (await findMount(path.join(rawDir, 'mnt'))) await execa('umount', ['-l', path.join(rawDir, 'mnt')], { reject: false });
    await rm(rawDir, { recursive: true, force: true });
  }]);
  const rawTarget = path.join(rawDir, 'mnt');
  const rawPasswd = path.join(rawDir, 'passwd');
  await mkdir(rawTarget);
  await writeFile(rawPasswd, 'S3RVER:S3RVER\n', { mode: 0o600 });
  const holder = await docker(['run', '-d', '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '-v', `${VOLUME}:/data`, TEST_IMAGE, 'sleep', '600']);
  let argv: Awaited<ReturnType<typeof clientArgv>>;
  try {
    await waitFor('the plugin\'s s3fs', () => fuseClientPid(PLUGIN_TARGET), 20_000, 50);
    argv = await clientArgv(PLUGIN_TARGET, rawTarget, rawPasswd);
  } finally {
    await docker(['rm', '-f', holder]);
  }
  await waitFor('the volume to be unmounted', async () => (await volumeStatus(VOLUME)).mounted === false, 20_000, 50);
  const pluginArgv = ['s3fs', ...argv.plugin];
  const pluginEnvKeys = argv.envKeys;
  const rawArgv = argv.raw;
  const rawEnv = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: rawDir };
  log(`[setup] plugin's s3fs: ${pluginArgv.join(' ')}`);

  const s3fsHost = (await execa('s3fs', ['--version'], { reject: false })).stdout.split('\n')[0] ?? 'unknown';
  const s3fsPlugin = (await execa('chroot', [rootfs, 's3fs', '--version'], { reject: false })).stdout.split('\n')[0] ?? 'unknown';
  const versions = {
    dockerd: await docker(['version', '--format', '{{.Server.Version}}']),
    s3fsHost,
    s3fsPlugin,
    node: process.version,
  };

  const runKind = async (kind: Kind): Promise<{ ms: number; start: number; end: number; raw?: RawS3fs }> => {
    switch (kind) {
      case 'none':
        return dockerRun([]);
      case 'oss':
        return dockerRun(['-v', `${VOLUME}:/data`]);
      case 'local':
        return dockerRun(['-v', `${LOCAL_VOLUME}:/data`]);
      case 's3fs': {
        const start = wallNow();
        const raw = await rawS3fs(rawArgv, rawEnv, rawTarget);
        return { ms: raw.ms, start, end: wallNow(), raw };
      }
    }
  };

  // --- warm-up: two of each (the plugin's first Mount after enable runs cold JIT code)
  for (let i = 0; i < 2; i++) for (const k of kinds) await runKind(k);
  const logOffset = (await stat(logPath)).size;

  // --- measured rounds, round-robin, the starting kind rotating; the traced runs (not in the
  // table: the tracer polls every millisecond) spread over the rounds, each after its round
  const samples: RunSample[] = [];
  const raws: RawS3fs[] = [];
  const traces: Array<{ round: number; ms: number; start: number; end: number; ev: TraceEvents }> = [];
  const tracedRounds = new Set(Array.from({ length: tracedRuns }, (_, i) => Math.floor((i * rounds) / tracedRuns)));
  const ppid = tracedRuns > 0 ? await pluginPid(plugin.id) : undefined;
  if (tracedRuns > 0 && !ppid) throw new Error(`cannot find the plugin's node process (plugin ${plugin.id})`);
  log(`[rounds] ${rounds} rounds of ${kinds.join(', ')}; ${tracedRuns} traced OSS runs among them`);
  t0 = performance.now();
  for (let round = 0; round < rounds; round++) {
    const order = kinds.map((_, i) => kinds[(i + round) % kinds.length]!);
    const line: string[] = [];
    for (const kind of order) {
      const r = await runKind(kind);
      samples.push({ kind, round, ms: r.ms, start: r.start, end: r.end });
      if (r.raw) raws.push(r.raw);
      line.push(`${kind} ${fmt(r.ms)}`);
    }
    for (let i = 0; tracedRounds.has(round) && i < Math.ceil(tracedRuns / rounds); i++) {
      const tracer = traceRun(ppid!, hostTarget);
      await sleep(5);
      const r = await dockerRun(['-v', `${VOLUME}:/data`]);
      await sleep(5);
      traces.push({ round, ...r, ev: await tracer.stop() });
      line.push(`traced oss ${fmt(r.ms)}`);
    }
    log(`[round ${round + 1}/${rounds}] ${line.join(', ')} ms`);
  }
  const roundsSeconds = (performance.now() - t0) / 1000;

  // --- the plugin's log lines of everything measured
  await sleep(300); // dockerd copies the plugin's output to its log asynchronously
  const calls = parsePluginCalls(await readFrom(logPath, logOffset), plugin.id);
  const within = (w: { start: number; end: number }) => (c: PluginCall) => c.start >= w.start - 2 && c.end <= w.end + 2;
  const windows = [...samples, ...traces.map((t) => ({ ...t, kind: 'oss' as Kind }))];
  const outside = calls.filter((c) => !windows.some((w) => within(w)(c)));
  const callsInOtherKinds = Object.fromEntries(
    kinds.filter((k) => k !== 'oss').map((k) => [k, calls.filter((c) => samples.some((s) => s.kind === k && within(s)(c))).length]),
  );

  const ossRuns = samples
    .filter((s) => s.kind === 'oss')
    .map((s) => ({ ...s, calls: calls.filter(within(s)).sort((a, b) => a.start - b.start) }));
  const sequences = new Map<string, number>();
  for (const r of ossRuns) {
    const seq = r.calls.map((c) => c.call).join(' ');
    sequences.set(seq, (sequences.get(seq) ?? 0) + 1);
  }
  const [commonSeq] = [...sequences.entries()].sort((a, b) => b[1] - a[1])[0] ?? [''];
  const common = ossRuns.filter((r) => r.calls.map((c) => c.call).join(' ') === commonSeq);
  const methods = [...new Set(ossRuns.flatMap((r) => r.calls.map((c) => c.call)))];
  const perMethod = methods.map((m) => {
    const all = ossRuns.flatMap((r) => r.calls.filter((c) => c.call === m).map((c) => c.ms));
    return { method: m, perRun: all.length / Math.max(ossRuns.length, 1), ...stats(all) };
  });
  const pluginMsPerRun = stats(ossRuns.map((r) => r.calls.reduce((t, c) => t + c.ms, 0)));
  // The common sequence as a timeline: each call's start and end relative to the docker CLI's spawn.
  const timeline = commonSeq
    ? commonSeq.split(' ').map((call, i) => ({
        call,
        startMs: medianOf(common, (r) => r.calls[i]!.start - r.start)!,
        ms: medianOf(common, (r) => r.calls[i]!.ms)!,
        endMs: medianOf(common, (r) => r.calls[i]!.end - r.start)!,
      }))
    : [];
  const commonExitMs = medianOf(common, (r) => r.end - r.start);

  // Mount and Unmount inside the plugin, from the traced runs.
  const tracedPhases = traces.map((t) => {
    const cs = calls.filter(within(t));
    const mount = cs.find((c) => c.call === 'Mount');
    const unmount = cs.find((c) => c.call === 'Unmount');
    const e = t.ev;
    const d = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? undefined : b - a);
    return {
      totalMs: t.ms,
      polls: e.polls,
      mount: mount && {
        ms: mount.ms,
        startToS3fsChild: d(mount.start, e.s3fsChild),
        s3fsChildToExec: d(e.s3fsChild, e.s3fsExec),
        s3fsChildToInTable: d(e.s3fsChild, e.inTable),
        startToInTable: d(mount.start, e.inTable),
        inTableToStatfs: d(e.inTable, e.statfsAnswered),
        statfsToAnswered: d(e.statfsAnswered, mount.end),
        statfsToCgroupMove: d(e.statfsAnswered, e.cgroupFirstMove),
        cgroupMove: d(e.cgroupFirstMove, e.cgroupLastMove),
        cgroupMovedToAnswered: d(e.cgroupLastMove, mount.end),
      },
      unmount: unmount && {
        ms: unmount.ms,
        startToUmountChild: d(unmount.start, e.umountChild),
        umountChildToGone: d(e.umountChild, e.goneFromTable),
        goneToS3fsExited: d(e.goneFromTable, e.s3fsExited),
        s3fsExitedToAnswered: d(e.s3fsExited, unmount.end),
      },
      mountEndToUnmountStart: mount && unmount ? unmount.start - mount.end : undefined,
    };
  });

  // --- summary
  const by = (k: Kind) => stats(samples.filter((s) => s.kind === k).map((s) => s.ms));
  const summary = Object.fromEntries(kinds.map((k) => [k, by(k)])) as Partial<Record<Kind, Stats>>;
  const paired = (k: Kind) =>
    stats(
      Array.from({ length: rounds }, (_, round) => {
        const x = samples.find((s) => s.round === round && s.kind === k);
        const a = samples.find((s) => s.round === round && s.kind === 'none');
        return x && a ? x.ms - a.ms : NaN;
      }).filter(Number.isFinite),
    );
  const hasTarget = kinds.includes('none') && kinds.includes('oss') && kinds.includes('s3fs');
  const overhead = hasTarget ? summary.oss!.median - summary.none!.median : undefined;
  const budget = hasTarget ? summary.s3fs!.median + TARGET_SLACK_MS : undefined;
  const verdict = overhead === undefined || budget === undefined ? 'n/a' : overhead <= budget ? 'PASS' : 'FAIL';
  const rawStats = {
    inTable: stats(raws.map((r) => r.inTableMs)),
    statfs: stats(raws.map((r) => r.ms)),
    umount: stats(raws.map((r) => r.umountMs)),
    unmounted: stats(raws.map((r) => r.unmountedMs)),
  };

  // --- printing
  const rows: string[][] = kinds.map((k) => [LABELS[k], ...['median', 'p90', 'min', 'max'].map((f) => fmt(summary[k]![f as keyof Stats]))]);
  if (kinds.includes('s3fs')) {
    rows.push(['    raw s3fs: spawn -> in mount table', ...[rawStats.inTable.median, rawStats.inTable.p90, rawStats.inTable.min, rawStats.inTable.max].map(fmt)]);
    rows.push(['    raw s3fs: umount -> s3fs exited', ...[rawStats.unmounted.median, rawStats.unmounted.p90, rawStats.unmounted.min, rawStats.unmounted.max].map(fmt)]);
  }
  if (kinds.includes('none')) {
    for (const k of kinds.filter((k) => k === 'oss' || k === 'local')) {
      const p = paired(k);
      rows.push([`${k === 'oss' ? '(b)' : '(d)'} - (a), same round`, ...[p.median, p.p90, p.min, p.max].map(fmt)]);
    }
  }
  const mainTable = table([`ms, ${rounds} rounds`, 'median', 'p90', 'min', 'max'], rows);
  const verdictLines = hasTarget
    ? [
        `overhead (b) - (a), medians: ${fmt(overhead)} ms; budget (c) + ${TARGET_SLACK_MS} ms: ${fmt(budget)} ms`,
        `target (b) <= (a) + (c) + ${TARGET_SLACK_MS} ms: ${verdict}` +
          (verdict === 'FAIL' ? ` (over by ${fmt(overhead! - budget!)} ms)` : ` (${fmt(budget! - overhead!)} ms to spare)`),
      ]
    : ['target: n/a (needs the kinds none, oss and s3fs)'];

  const breakdown: string[] = [];
  if (ossRuns.length) {
    breakdown.push(
      `plugin calls per docker run -v (dockerd's log, ${ossRuns.length} runs; the plugin's own time per call, from its request to its answer):`,
      ...[...sequences.entries()].sort((a, b) => b[1] - a[1]).map(([seq, n]) => `  ${n} of ${ossRuns.length} runs: ${seq || '(no calls seen)'}`),
      table(
        ['call', 'per run', 'median ms', 'p90 ms', 'max ms'],
        perMethod.map((m) => [m.method, m.perRun.toFixed(2), fmt(m.median), fmt(m.p90), fmt(m.max)]),
      ),
      `  all calls of a run, summed: median ${fmt(pluginMsPerRun.median)} ms, p90 ${fmt(pluginMsPerRun.p90)} ms` +
        (overhead !== undefined
          ? `; (b) - (a) minus that: ${fmt(overhead - pluginMsPerRun.median)} ms (dockerd's own work for the volume, plus noise)`
          : ''),
      `  plugin calls seen outside any oss run: ${outside.length}; during other kinds: ${JSON.stringify(callsInOtherKinds)}`,
    );
    if (timeline.length) {
      breakdown.push(`timeline of a run (medians over the ${common.length} runs with the common sequence; ms from the docker CLI's spawn):`);
      let prevEnd = 0;
      for (const s of timeline) {
        breakdown.push(`  ${fmt(s.startMs).padStart(6)} -> ${fmt(s.endMs).padStart(6)}  ${s.call.padEnd(8)} ${fmt(s.ms).padStart(6)} ms in the plugin   (gap before it ${fmt(s.startMs - prevEnd)} ms)`);
        prevEnd = s.endMs;
      }
      breakdown.push(`  ${fmt(commonExitMs).padStart(6)}            docker CLI exits             (after the last call ${fmt((commonExitMs ?? NaN) - prevEnd)} ms)`);
    }
  }
  if (tracedPhases.length) {
    const m = (f: (p: (typeof tracedPhases)[number]) => number | undefined) => fmt(medianOf(tracedPhases, f));
    breakdown.push(
      `Mount and Unmount seen from the host (${tracedPhases.length} traced runs, medians; plugin log times have 1 ms resolution;`,
      `  the tracer polls every ~1 ms, so these runs are not in the table above: their docker run -v median ${m((p) => p.totalMs)} ms):`,
      `  Mount ${m((p) => p.mount?.ms)} ms = call -> s3fs forked ${m((p) => p.mount?.startToS3fsChild)}` +
        ` + -> in mount table ${m((p) => p.mount?.s3fsChildToInTable)} (of which fork -> exec ${m((p) => p.mount?.s3fsChildToExec)})` +
        ` + -> statfs answered ${m((p) => p.mount?.inTableToStatfs)} + -> Mount answered ${m((p) => p.mount?.statfsToAnswered)}`,
      `    of the last: statfs -> s3fs starts leaving the plugin's cgroups ${m((p) => p.mount?.statfsToCgroupMove)}` +
        ` (negative since 8962319: the move starts when s3fs is spawned), the move ${m((p) => p.mount?.cgroupMove)},` +
        ` -> Mount answered ${m((p) => p.mount?.cgroupMovedToAnswered)} (passwd unlink, state fdatasync)`,
      `  Unmount ${m((p) => p.unmount?.ms)} ms = call -> umount spawned ${m((p) => p.unmount?.startToUmountChild)}` +
        ` + -> gone from the table ${m((p) => p.unmount?.umountChildToGone)} + -> s3fs exited ${m((p) => p.unmount?.goneToS3fsExited)}` +
        ` + -> Unmount answered ${m((p) => p.unmount?.s3fsExitedToAnswered)}`,
      `  Mount answered -> Unmount called (container create, start, run, stop): ${m((p) => p.mountEndToUnmountStart)} ms`,
      `  raw s3fs for comparison: spawn -> in table ${fmt(rawStats.inTable.median)}, -> statfs ${fmt(rawStats.statfs.median)}; ` +
        `umount ${fmt(rawStats.umount.median)}, -> s3fs exited ${fmt(rawStats.unmounted.median)}`,
    );
  }

  const loadAfter = loadavg();
  const meta = runMeta(started);
  const header = [
    `docker run benchmark (mount path), ${meta.date}, ossnas ${meta.revision}; ${meta.cpus} x ${meta.cpuModel}`,
    `  dockerd ${versions.dockerd}; s3fs: host ${versions.s3fsHost}, plugin ${versions.s3fsPlugin}; s3rver on 127.0.0.1, bucket ${BUCKET}`,
    `  image ${TEST_IMAGE}, command 'true'; plugin ${PLUGIN} with LOG_LEVEL=debug; rounds interleaved (the first kind rotates)`,
    `  load average before ${loadBefore.join(' ')}, after ${loadAfter.join(' ')}; rounds took ${roundsSeconds.toFixed(0)} s`,
  ];
  process.stdout.write(`${header.join('\n')}\n\n${mainTable}\n${verdictLines.join('\n')}\n\n${breakdown.join('\n')}\n`);

  const json = {
    meta: {
      ...meta,
      versions,
      rounds,
      tracedRuns,
      kinds,
      plugin: PLUGIN,
      image: TEST_IMAGE,
      pluginS3fsArgv: pluginArgv,
      pluginS3fsEnvKeys: pluginEnvKeys,
      loadavg: { before: loadBefore, after: loadAfter },
    },
    summary,
    rawS3fs: rawStats,
    paired: Object.fromEntries(kinds.filter((k) => k === 'oss' || k === 'local').map((k) => [k, paired(k)])),
    target: { overheadMs: overhead, budgetMs: budget, slackMs: TARGET_SLACK_MS, verdict },
    calls: { sequences: Object.fromEntries(sequences), perMethod, pluginMsPerRun, timeline, exitMs: commonExitMs, outside: outside.length, callsInOtherKinds },
    traced: tracedPhases,
    samples,
    raws,
    ossRunCalls: ossRuns.map((r) => ({ round: r.round, ms: r.ms, calls: r.calls.map((c) => ({ call: c.call, ms: c.ms, at: c.start - r.start })) })),
  };
  await writeJsonReport(values.out, json);
}

main()
  .catch((err: unknown) => {
    if (cleaning) return; // interrupted: what failed is the cleanup pulling things away
    console.error(`bench: ${(err as Error).message}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    log('[cleanup] removing the plugin, volumes, S3 server and temporary directories');
    await cleanup();
  });
