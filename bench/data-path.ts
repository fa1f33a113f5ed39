// Data-path benchmark (issue 6): sequential writes and reads of large files and of many small
// files through an OSS volume mounted by ossnas, against raw s3fs started with exactly the argv
// ossnas gave its own s3fs, and raw s3fs with only what it needs to reach the server (its own
// defaults); each configuration on its own fresh bucket of one local S3 server (s3rver), all in
// one run, interleaved operation by operation. Prints a table of medians and ratios, writes JSON.
//
//   node --import tsx bench/data-path.ts           (3 x 64 MiB and 200 x 4 KiB per repetition, 5 repetitions: ~4 min)
//   node --import tsx bench/data-path.ts --quick   (1 x 32 MiB and 50 x 4 KiB, 1 repetition: ~20 s)
//   options: --large-mib 64  --large-files 3  --small-count 200  --small-kib 4  --reps 5
//            --configs ossnas,s3fs-same,s3fs-defaults
//            --extra-opts 'parallel_count=10,multipart_size=32'   repeatable: each adds a configuration
//                candN, raw s3fs with ossnas's argv plus these -o options (a candidate for ossnas's
//                defaults), compared with ossnas; an option string starting with '-' needs --extra-opts=...
//            --drop-caches   also `sync; echo 3 > /proc/sys/vm/drop_caches` before each read phase
//            --out .cache/bench-data-path.json
// Needs root (FUSE mounts), s3fs, and `npm run build` (the plugin runs from dist/). Everything it
// mounts is unmounted again, on error and on Ctrl-C too (lazily if need be).
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, writeFile, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { startFuseDaemon, unmountFuse, type FuseDaemon } from '../src/host/fuse.js';
import { createLogger } from '../src/log.js';
import { isRunning } from '../test/helpers/docker.js';
import type { PluginProcess } from '../test/helpers/plugin-process.js';
import { checkBuild, gitRevision } from './build.js';
import { BenchClient, percentile } from './client.js';
import { startS3, type S3Server } from '../test/helpers/s3.js';
import { Cleanup, clientArgv, forceCleanBelow, log, mountId, requireRoot, runBench, sleep, startBenchPlugin, textTable, writeJsonReport } from './fuse-host.js';
import { REPO_ROOT } from './servers/ossnas.js';

const MiB = 2 ** 20;
const CHUNK = MiB; // dd-like: bs=1M
const KEY_ID = 'S3RVER'; // s3rver's built-in account
const KEY_SECRET = 'S3RVER';
const PROFILE = 'bench';
const MOUNT_DEADLINE_MS = 20_000;
const WARMUP_BUCKET = 'bench-warmup';

const loadavg = () => os.loadavg().map((l) => Math.round(l * 100) / 100);

// ---------------------------------------------------------------------------------------------
// Configurations and their mounts

type Kind = 'ossnas' | 's3fs-same' | 's3fs-defaults' | 'candidate';
interface Config {
  name: string;
  kind: Kind;
  bucket: string;
  /** For a candidate: the -o options added to ossnas's argv. */
  extra: string[];
}

interface Mounted {
  dir: string;
  unmount(): Promise<void>;
}

/** Set by the cleanup: no new mount after it has started. */
let stopping = false;

interface Env {
  dir: string;
  s3: S3Server;
  plugin: PluginProcess;
  client: BenchClient;
  passwdFile: string;
  /** ossnas's own s3fs argv as a template: (bucket, mountpoint) -> argv[1..], with our passwd file. */
  sameArgs?: (bucket: string, target: string) => string[];
  mounts: number;
}

const volumeName = (c: Config) => `bench-${c.name}`;

async function mountOssnas(env: Env, c: Config): Promise<Mounted> {
  const id = mountId(++env.mounts);
  const name = volumeName(c);
  const r = await env.client.call('VolumeDriver.Mount', { Name: name, ID: id });
  return {
    dir: String(r.json.Mountpoint),
    async unmount() {
      await env.client.call('VolumeDriver.Unmount', { Name: name, ID: id });
    },
  };
}

/** Raw s3fs started exactly as ossnas starts its own (foreground child, our own environment). */
async function mountRaw(env: Env, c: Config): Promise<Mounted> {
  const dir = path.join(env.dir, 'mnt', c.name);
  await mkdir(dir, { recursive: true });
  const args = rawArgs(env, c, dir);
  let daemon: FuseDaemon;
  try {
    daemon = await startFuseDaemon({
      command: 's3fs',
      args,
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: env.dir },
      target: dir,
      deadlineMs: MOUNT_DEADLINE_MS,
      secrets: [KEY_SECRET],
      log: createLogger('silent'),
    });
  } catch (err) {
    throw new Error(`${c.name}: ${(err as Error).message}`); // it leaves nothing mounted when it fails
  }
  return {
    dir,
    async unmount() {
      await unmountFuse(dir);
      await Promise.race([daemon.exited, sleep(5000)]); // the next configuration starts from a quiet machine
      if (daemon.pid !== undefined && (await isRunning(daemon.pid))) throw new Error(`s3fs ${daemon.pid} did not exit after unmounting ${dir}`);
    },
  };
}

function rawArgs(env: Env, c: Config, target: string): string[] {
  const o = (opts: string[]) => opts.flatMap((x) => ['-o', x]);
  switch (c.kind) {
    case 's3fs-defaults':
      // Only what s3fs needs to reach s3rver (and allow_other, as any shared mount has); -f keeps it
      // our child, like ossnas's (no effect on the data path).
      return [c.bucket, target, '-f', ...o([`url=${env.s3.url}`, 'use_path_request_style', `passwd_file=${env.passwdFile}`, 'allow_other'])];
    case 's3fs-same':
    case 'candidate':
      if (!env.sameArgs) throw new Error('internal: ossnas argv not read yet');
      return [...env.sameArgs(c.bucket, target), ...o(c.extra)];
    default:
      throw new Error(`internal: ${c.kind} is not raw s3fs`);
  }
}

async function mount(env: Env, c: Config): Promise<Mounted> {
  if (stopping) throw new Error('stopping');
  return c.kind === 'ossnas' ? mountOssnas(env, c) : mountRaw(env, c);
}

/**
 * Mounts the ossnas volume once and turns its s3fs argv into a template for the raw runs: the
 * bucket, the mountpoint and the passwd file (which ossnas deletes once mounted) are replaced.
 * Returns that argv, for the report.
 */
async function readOssnasArgv(env: Env, c: Config): Promise<string[]> {
  const m = await mount(env, c);
  try {
    const TARGET = '\0target'; // placeholders, replaced per configuration
    const { plugin, raw } = await clientArgv(m.dir, TARGET, env.passwdFile);
    if (raw[0] !== c.bucket || raw.filter((w) => w === c.bucket).length !== 1 || raw[1] !== TARGET) {
      throw new Error(`unexpected argv of ossnas's s3fs: ${plugin.join(' ')}`);
    }
    if (!raw.includes(`passwd_file=${env.passwdFile}`)) throw new Error(`no passwd_file in ${plugin.join(' ')}`);
    env.sameArgs = (bucket, target) => [bucket, target, ...raw.slice(2)];
    return ['s3fs', ...plugin];
  } finally {
    await m.unmount();
  }
}

// ---------------------------------------------------------------------------------------------
// Workloads. Each runs on all configurations at once, round-robin, one operation (a 1 MiB write or
// read, an fsync, a close, a whole small file) on each in turn, each operation timed: the load
// other processes put on the machine comes in bursts of a second or so, and so hits all alike.

interface Timing {
  /** The sum of this configuration's timed operations. */
  ms: number;
  bytes: number;
  files: number;
}

/**
 * `steps` rounds; in round i, step(k, i) for every target k, starting with a different target
 * each round. Returns the time spent in each target's steps.
 */
async function roundRobin(targets: number, steps: number, step: (k: number, i: number) => Promise<void>): Promise<number[]> {
  const ms = new Array<number>(targets).fill(0);
  for (let i = 0; i < steps; i++) {
    for (let j = 0; j < targets; j++) {
      const k = (i + j) % targets;
      const t0 = performance.now();
      await step(k, i);
      ms[k]! += performance.now() - t0;
    }
  }
  return ms;
}

/** Chunk `i` of the large file: a shared random buffer with `i` in its first 8 bytes (so misplaced chunks show). */
function stamp(buf: Buffer, i: number): Buffer {
  buf.writeBigUInt64LE(BigInt(i), 0);
  return buf;
}

/** Timings added up per configuration. */
const add = (a: Timing[], b: Timing[]): Timing[] =>
  b.map((t, k) => ({ ms: (a[k]?.ms ?? 0) + t.ms, bytes: (a[k]?.bytes ?? 0) + t.bytes, files: (a[k]?.files ?? 0) + t.files }));

async function closeAll(handles: Array<FileHandle | undefined>): Promise<void> {
  await Promise.all(handles.map((fh) => fh?.close().catch(() => undefined)));
}

/**
 * open(O_CREAT|O_TRUNC) with the first 1 MiB write, the other 1 MiB writes, fsync, close: s3fs
 * uploads at fsync (and would at close), so all of it is timed.
 */
async function writeLarge(files: string[], bytes: number, pattern: Buffer): Promise<Timing[]> {
  const chunks = Math.ceil(bytes / CHUNK);
  const fhs: Array<FileHandle | undefined> = [];
  try {
    const ms = await roundRobin(files.length, chunks + 2, async (k, i) => {
      if (i === 0) fhs[k] = await open(files[k]!, 'w');
      const fh = fhs[k]!;
      if (i < chunks) {
        const n = Math.min(CHUNK, bytes - i * CHUNK);
        const { bytesWritten } = await fh.write(stamp(pattern, i), 0, n, i * CHUNK);
        if (bytesWritten !== n) throw new Error(`${files[k]}: short write at chunk ${i}`);
      } else if (i === chunks) {
        await fh.sync();
      } else {
        fhs[k] = undefined;
        await fh.close();
      }
    });
    return ms.map((t) => ({ ms: t, bytes, files: 1 }));
  } finally {
    await closeAll(fhs);
  }
}

/** open with the first 1 MiB read, then 1 MiB reads to the end, each compared with what was written (a memcmp), close. */
async function readLarge(files: string[], bytes: number, pattern: Buffer): Promise<Timing[]> {
  const chunks = Math.ceil(bytes / CHUNK);
  const buf = Buffer.alloc(CHUNK);
  const fhs: Array<FileHandle | undefined> = [];
  try {
    const ms = await roundRobin(files.length, chunks + 1, async (k, i) => {
      if (i === 0) fhs[k] = await open(files[k]!, 'r');
      const fh = fhs[k]!;
      if (i === chunks) {
        // the end: nothing more to read, then close
        if ((await fh.read(buf, 0, 1, i * CHUNK)).bytesRead !== 0) throw new Error(`${files[k]}: longer than the ${bytes} bytes written`);
        fhs[k] = undefined;
        await fh.close();
        return;
      }
      const want = Math.min(CHUNK, bytes - i * CHUNK);
      let got = 0; // a read may return less than asked
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, i * CHUNK + got);
        if (bytesRead === 0) throw new Error(`${files[k]}: ends at ${i * CHUNK + got} bytes, ${bytes} were written`);
        got += bytesRead;
      }
      if (!buf.subarray(0, want).equals(stamp(pattern, i).subarray(0, want))) throw new Error(`${files[k]}: chunk ${i} differs from what was written`);
    });
    return ms.map((t) => ({ ms: t, bytes, files: 1 }));
  } finally {
    await closeAll(fhs);
  }
}

const smallName = (dir: string, i: number) => path.join(dir, `f${String(i).padStart(5, '0')}`);
function smallContent(rep: number, i: number, size: number): Buffer {
  const b = Buffer.alloc(size, 97 + ((rep + i) % 26));
  b.write(`rep ${rep} file ${i}\n`);
  return b;
}

/** Each file created, written and closed (writeFile), s3fs uploading it at close. */
async function writeSmall(dirs: string[], rep: number, count: number, size: number): Promise<Timing[]> {
  const ms = await roundRobin(dirs.length, count, (k, i) => writeFile(smallName(dirs[k]!, i), smallContent(rep, i, size)));
  return ms.map((t) => ({ ms: t, bytes: count * size, files: count }));
}

async function readSmall(dirs: string[], rep: number, count: number, size: number): Promise<Timing[]> {
  const ms = await roundRobin(dirs.length, count, async (k, i) => {
    const got = await readFile(smallName(dirs[k]!, i));
    if (!got.equals(smallContent(rep, i, size))) throw new Error(`${smallName(dirs[k]!, i)}: content differs from what was written`);
  });
  return ms.map((t) => ({ ms: t, bytes: count * size, files: count }));
}

async function dropCaches(): Promise<void> {
  await execa('sync');
  await writeFile('/proc/sys/vm/drop_caches', '3\n');
}

interface Sample {
  config: string;
  rep: number;
  /** Position of this configuration in the repetition's order (rotates; within a round-robin it hardly matters). */
  position: number;
  largeWrite: Timing;
  largeRead: Timing;
  smallWrite: Timing;
  smallRead: Timing;
}

interface Sizes {
  largeBytes: number;
  /** Large files per repetition, one after the other: the large workload is a few long steps, each exposed to a stall. */
  largeFiles: number;
  smallCount: number;
  smallBytes: number;
  dropCaches: boolean;
}

/** Mounts each configuration in turn; on a failure, what was mounted is unmounted again. */
async function mountAll(env: Env, order: Config[]): Promise<Mounted[]> {
  const mounted: Mounted[] = [];
  try {
    for (const c of order) mounted.push(await mount(env, c));
  } catch (err) {
    await unmountAll(mounted).catch(() => undefined); // the cleanup detaches what this leaves
    throw err;
  }
  return mounted;
}

async function unmountAll(mounted: Mounted[]): Promise<void> {
  const errors: string[] = [];
  for (const m of mounted) await m.unmount().catch((err: Error) => errors.push(`${m.dir}: ${err.message}`));
  if (errors.length) throw new Error(`unmount failed: ${errors.join('; ')}`);
}

/**
 * One repetition of every configuration: mount all; the large file written through all
 * (round-robin), then the small files; unmount all. Mount all again (a new s3fs process and a
 * new FUSE superblock each: no page cache, s3fs data or stat cache survives), the large file
 * read back through all, then the small files; unmount all.
 */
async function runRep(env: Env, order: Config[], rep: number, sizes: Sizes, pattern: Buffer): Promise<Sample[]> {
  const large = (ms: Mounted[], f: number) => ms.map((m) => path.join(m.dir, `rep${rep}`, `large${f}.bin`));
  const small = (ms: Mounted[]) => ms.map((m) => path.join(m.dir, `rep${rep}`, 'small'));
  let mounted = await mountAll(env, order);
  let largeWrite: Timing[], smallWrite: Timing[], largeRead: Timing[], smallRead: Timing[];
  try {
    for (const dir of small(mounted)) await mkdir(dir, { recursive: true });
    largeWrite = [];
    for (let f = 0; f < sizes.largeFiles; f++) largeWrite = add(largeWrite, await writeLarge(large(mounted, f), sizes.largeBytes, pattern));
    smallWrite = await writeSmall(small(mounted), rep, sizes.smallCount, sizes.smallBytes);
  } finally {
    await unmountAll(mounted);
  }
  if (sizes.dropCaches) await dropCaches();
  mounted = await mountAll(env, order);
  try {
    largeRead = [];
    for (let f = 0; f < sizes.largeFiles; f++) largeRead = add(largeRead, await readLarge(large(mounted, f), sizes.largeBytes, pattern));
    smallRead = await readSmall(small(mounted), rep, sizes.smallCount, sizes.smallBytes);
  } finally {
    await unmountAll(mounted);
  }
  return order.map((c, i) => ({
    config: c.name,
    rep,
    position: i,
    largeWrite: largeWrite[i]!,
    largeRead: largeRead[i]!,
    smallWrite: smallWrite[i]!,
    smallRead: smallRead[i]!,
  }));
}

// ---------------------------------------------------------------------------------------------
// Summary and table

type Metric = 'largeWrite' | 'largeRead' | 'smallWrite' | 'smallRead';
const ROWS: Array<{ metric: Metric; label: string; value: (t: Timing) => number }> = [
  { metric: 'largeWrite', label: 'Large file write MiB/s', value: (t) => t.bytes / MiB / (t.ms / 1000) },
  { metric: 'largeRead', label: 'Large file read MiB/s', value: (t) => t.bytes / MiB / (t.ms / 1000) },
  { metric: 'smallWrite', label: 'Small files write files/s', value: (t) => t.files / (t.ms / 1000) },
  { metric: 'smallRead', label: 'Small files read files/s', value: (t) => t.files / (t.ms / 1000) },
];

interface Stat {
  median: number;
  min: number;
  max: number;
  /** One per repetition, in repetition order. */
  values: number[];
}
const stat = (values: number[]): Stat => {
  const sorted = [...values].sort((a, b) => a - b);
  return { median: percentile(sorted, 0.5), min: sorted[0]!, max: sorted[sorted.length - 1]!, values };
};

interface Summary {
  /** config -> metric -> its rate over the repetitions */
  rates: Record<string, Record<Metric, Stat>>;
  /** 'a/b' -> metric -> a's rate over b's in the same repetition (measured seconds apart), over the repetitions */
  ratios: Record<string, Record<Metric, Stat>>;
}

/** The ratios shown: ossnas over each baseline, each candidate over ossnas. */
function ratioPairs(configs: Config[]): Array<[string, string]> {
  const names = configs.map((c) => c.name);
  return [
    ...['s3fs-same', 's3fs-defaults'].filter((b) => names.includes(b)).map((b) => ['ossnas', b] as [string, string]),
    ...configs.filter((c) => c.kind === 'candidate').map((c) => [c.name, 'ossnas'] as [string, string]),
  ];
}

function summarise(samples: Sample[], configs: Config[], reps: number): Summary {
  const value = (config: string, rep: number, metric: Metric) => {
    const s = samples.find((x) => x.config === config && x.rep === rep)!;
    return ROWS.find((r) => r.metric === metric)!.value(s[metric]);
  };
  const repList = Array.from({ length: reps }, (_, i) => i + 1);
  const perMetric = (f: (metric: Metric) => Stat) => Object.fromEntries(ROWS.map((r) => [r.metric, f(r.metric)])) as Record<Metric, Stat>;
  return {
    rates: Object.fromEntries(configs.map((c) => [c.name, perMetric((m) => stat(repList.map((rep) => value(c.name, rep, m))))])),
    ratios: Object.fromEntries(
      ratioPairs(configs).map(([a, b]) => [`${a}/${b}`, perMetric((m) => stat(repList.map((rep) => value(a, rep, m) / value(b, rep, m))))]),
    ),
  };
}

const num = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const pct = (v: number) => `${(v * 100).toFixed(0)}%`;

function formatTable(summary: Summary, configs: Config[], reps: number): string {
  const names = configs.map((c) => c.name);
  const pairs = Object.keys(summary.ratios);
  const header = ['median over repetitions', ...names, ...pairs, 'noise', 'better'];
  const body = ROWS.map((row) => {
    const rate = (n: string) => summary.rates[n]![row.metric];
    // The noise: the widest (max - min) / median of any configuration's rate over the repetitions.
    const noise = Math.max(...names.map((n) => (rate(n).max - rate(n).min) / rate(n).median));
    return [
      row.label,
      ...names.map((n) => num(rate(n).median)),
      ...pairs.map((p) => {
        const r = summary.ratios[p]![row.metric];
        return reps > 1 ? `${r.median.toFixed(2)} (${r.min.toFixed(2)}-${r.max.toFixed(2)})` : r.median.toFixed(2);
      }),
      reps > 1 ? pct(noise) : '-',
      'higher',
    ];
  });
  return textTable(header, body);
}

/**
 * The issue's targets, against the median ratios. A miss whose per-repetition ratios reach the
 * target says so: a single run on a busy machine cannot tell it from noise.
 */
function targets(summary: Summary, reps: number): string[] {
  const lines: string[] = [];
  const check = (other: string, min: number, what: string) => {
    const ratios = summary.ratios[`ossnas/${other}`];
    if (!ratios) return;
    const misses = ROWS.filter((row) => ratios[row.metric].median < min).map((row) => ({ label: row.label, r: ratios[row.metric] }));
    const verdict =
      misses.length === 0
        ? 'met on every row'
        : reps < 3
          ? `missed on ${misses.length} row(s), but ${reps} repetition(s) give no verdict`
          : misses
              .map((m) => `NOT met: ${m.label} ${m.r.median.toFixed(2)}${m.r.max >= min ? ` (per repetition ${m.r.min.toFixed(2)}-${m.r.max.toFixed(2)}: within the noise)` : ''}`)
              .join('; ');
    lines.push(`target: ossnas >= ${min} x ${other} (${what}): ${verdict}`);
  };
  check('s3fs-same', 0.95, 'the same options');
  check('s3fs-defaults', 1, "s3fs's own defaults");
  return lines;
}

// ---------------------------------------------------------------------------------------------

/** `a,b=1`, `-o a -o b=1` or `-oa`: the -o options, in order. */
function parseExtra(text: string): string[] {
  const items = text
    .trim()
    .split(/[\s]+/)
    .filter((t) => t !== '-o')
    .map((t) => (t.startsWith('-o') ? t.slice(2) : t))
    .flatMap((t) => t.split(','))
    .filter(Boolean);
  if (items.length === 0) throw new Error(`--extra-opts '${text}' names no option`);
  for (const i of items) if (i.startsWith('-')) throw new Error(`--extra-opts: only -o options, got '${i}'`);
  return items;
}

async function versions(s3fsPath: string): Promise<Record<string, string>> {
  const s3fs = (await execa('s3fs', ['--version'], { reject: false })).stdout.split('\n')[0] ?? 'unknown';
  const ldd = (await execa('ldd', [s3fsPath], { reject: false })).stdout;
  const libfuse = /libfuse[^\s]*/.exec(ldd)?.[0] ?? 'unknown';
  const s3rver = (JSON.parse(await readFile(path.join(REPO_ROOT, 'node_modules', 's3rver', 'package.json'), 'utf8')) as { version: string }).version;
  return { s3fs, libfuse, s3rver, node: process.version, kernel: os.release(), ossnas: gitRevision() };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      'large-mib': { type: 'string' },
      'large-files': { type: 'string' },
      'small-count': { type: 'string' },
      'small-kib': { type: 'string', default: '4' },
      reps: { type: 'string' },
      configs: { type: 'string', default: 'ossnas,s3fs-same,s3fs-defaults' },
      'extra-opts': { type: 'string', multiple: true, default: [] },
      'drop-caches': { type: 'boolean', default: false },
      out: { type: 'string', default: path.join('.cache', 'bench-data-path.json') },
    },
  });
  const int = (name: string, text: string | undefined, dflt: number, quick: number) => {
    const v = text === undefined ? (values.quick ? quick : dflt) : Number(text);
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} takes a positive integer`);
    return v;
  };
  const sizes: Sizes = {
    largeBytes: int('large-mib', values['large-mib'], 64, 32) * MiB,
    largeFiles: int('large-files', values['large-files'], 3, 1),
    smallCount: int('small-count', values['small-count'], 200, 50),
    smallBytes: int('small-kib', values['small-kib'], 4, 4) * 1024,
    dropCaches: values['drop-caches'],
  };
  const reps = int('reps', values.reps, 5, 1);
  requireRoot('bench/data-path.ts');
  await checkBuild();
  const s3fsPath = (await execa('sh', ['-c', 'command -v s3fs'], { reject: false })).stdout.trim();
  if (!s3fsPath) throw new Error('s3fs is not installed (apt-get install -y s3fs)');

  const kinds = values.configs.split(',').map((s) => s.trim());
  for (const k of kinds) if (!['ossnas', 's3fs-same', 's3fs-defaults'].includes(k)) throw new Error(`unknown configuration '${k}'`);
  if (!kinds.includes('ossnas')) throw new Error('--configs must include ossnas (the others are compared with it, and read its argv)');
  const configs: Config[] = [
    ...kinds.map((k) => ({ name: k, kind: k as Kind, bucket: `bench-${k}`, extra: [] })),
    ...values['extra-opts'].map((text, i) => ({ name: `cand${i + 1}`, kind: 'candidate' as Kind, bucket: `bench-cand${i + 1}`, extra: parseExtra(text) })),
  ];

  const started = new Date();
  // Run once, in reverse order of registration: at the end, after an error, on SIGINT/SIGTERM.
  const cleanup = new Cleanup();
  process.once('SIGHUP', () => process.kill(process.pid, 'SIGTERM')); // a closed terminal: the same cleanup
  try {
    // s3rver as a process of its own: in this process it would share our event loop, and a
    // spawn() while a file is open on s3fs can deadlock with it (bench/fuse-host.ts).
    const s3 = await startS3([WARMUP_BUCKET]);
    cleanup.add('s3rver', () => s3.stop()); // last: the mounts go first, their s3fs may still upload
    for (const c of configs) {
      const res = await fetch(`${s3.url}/${c.bucket}`, { method: 'PUT' }); // CreateBucket; s3rver takes it unsigned
      if (!res.ok) throw new Error(`creating bucket ${c.bucket}: HTTP ${res.status}`);
    }
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ossnas-bench-data-'));
    cleanup.add('temporary directory', async () => {
      const left = await forceCleanBelow(dir); // nothing, unless something failed on the way
      if (left.length) log(`cleanup: ${left.join('; ')}`);
      await rm(dir, { recursive: true, force: true });
    });
    const plugin = await startBenchPlugin(cleanup, { name: PROFILE, keyId: KEY_ID, secret: KEY_SECRET });
    const client = new BenchClient(plugin.socket);
    cleanup.add('client', async () => {
      stopping = true; // runs first: the measuring code mounts nothing more
      client.close();
    });
    const passwdFile = path.join(dir, 'passwd');
    await writeFile(passwdFile, `${KEY_ID}:${KEY_SECRET}\n`, { mode: 0o600 });
    const env: Env = { dir, s3, plugin, client, passwdFile, mounts: 0 };
    const ossnasCfg = configs.find((c) => c.kind === 'ossnas')!;
    await client.call('VolumeDriver.Create', {
      Name: volumeName(ossnasCfg),
      Opts: { type: 'oss', bucket: ossnasCfg.bucket, url: s3.url, credentials: PROFILE },
    });
    const ossnasArgv = await readOssnasArgv(env, ossnasCfg);
    const argvOf = (c: Config) =>
      (c.kind === 'ossnas' ? ossnasArgv : ['s3fs', ...rawArgs(env, c, path.join(dir, 'mnt', c.name))])
        .map((w) => w.replace(dir, '$TMP').replace(plugin.dir, '$PLUGIN'))
        .join(' ');
    const argv = Object.fromEntries(configs.map((c) => [c.name, argvOf(c)]));
    const vers = await versions(s3fsPath);
    log(
      `data-path benchmark: large ${sizes.largeFiles} x ${sizes.largeBytes / MiB} MiB, ${sizes.smallCount} x ${sizes.smallBytes / 1024} KiB, ` +
        `${reps} repetitions, configurations ${configs.map((c) => c.name).join(', ')}`,
    );
    for (const c of configs) log(`  ${c.name}: ${argv[c.name]}`);

    // One random megabyte, written stamped with its chunk number: incompressible enough for
    // anything between us and s3rver's disk.
    const pattern = randomBytes(CHUNK);
    // s3rver is JIT-compiled: without a warm-up the first configuration measured is measured
    // against a cold server (seen: half the small-file rate of the same options later).
    // Multipart (above 25 MB) and the small-file requests both, on a bucket of its own, not measured.
    const warmup: Config = { name: 'warmup', kind: 's3fs-defaults', bucket: WARMUP_BUCKET, extra: [] };
    await runRep(env, [warmup], 0, { ...sizes, largeBytes: Math.min(sizes.largeBytes, 26 * MiB), largeFiles: 1, smallCount: Math.min(sizes.smallCount, 30) }, pattern);
    log('warm-up done');
    const samples: Sample[] = [];
    const before = loadavg();
    for (let rep = 1; rep <= reps; rep++) {
      // The order rotates too.
      const order = configs.map((_, i) => configs[(i + rep - 1) % configs.length]!);
      for (const s of await runRep(env, order, rep, sizes, pattern)) {
        samples.push(s);
        const [lw, lr, sw, sr] = ROWS.map((row) => num(row.value(s[row.metric])));
        log(`[rep ${rep} ${s.config}] large write ${lw} MiB/s, read ${lr} MiB/s; small write ${sw} files/s, read ${sr} files/s`);
      }
    }
    const after = loadavg();
    const summary = summarise(samples, configs, reps);

    const headerLines = [
      `Data path benchmark, ${started.toISOString()}, ossnas ${vers.ossnas}; ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown'}`,
      `  ${vers.s3fs}, ${vers.libfuse}; s3rver ${vers.s3rver} as a local process (node ${vers.node}); kernel ${vers.kernel}`,
      `  large: ${sizes.largeFiles} file(s) of ${sizes.largeBytes / MiB} MiB per repetition, each 1 MiB writes + fsync + close; small: ${sizes.smallCount} files of ` +
        `${sizes.smallBytes / 1024} KiB, each create + write + close, one after the other`,
      `  reads after unmount + mount (new s3fs, new FUSE superblock: no page cache or s3fs cache)` +
        (sizes.dropCaches ? ' and drop_caches' : '') +
        `; median of ${reps} repetitions, configurations interleaved operation by operation; ` +
        'a ratio is the median of per-repetition ratios (min-max); noise: the widest (max-min)/median of a rate',
      ...configs.map((c) => `  ${c.name}: ${argv[c.name]}`),
      `  load average before ${before.join(' ')}, after ${after.join(' ')}; time ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s`,
    ];
    process.stdout.write(`${headerLines.join('\n')}\n\n${formatTable(summary, configs, reps)}\n\n${targets(summary, reps).join('\n')}\n`);

    const meta = { date: started.toISOString(), versions: vers, cpus: os.cpus().length, sizes, reps, argv, loadavg: { before, after } };
    await writeJsonReport(values.out, { meta, summary, samples });
  } finally {
    await cleanup.run();
  }
}

runBench(main);
