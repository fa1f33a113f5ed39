// The OSS clients through an ossnas volume (issue 19): the plugin runs as a process of its own
// (dist/main.js), its volumes made with VolumeDriver.Create/Mount over its socket, one with the
// default client (s3fs) and one with `client=rclone` (the plugin's own rclone defaults), against
// raw s3fs with the options ossnas gives its own (bench/raw-clients.ts), the anchor. All three on
// one bucket of one local S3 server (s3rver, in a process of its own), in one run, configurations
// taking turns run by run. Prints a table per case of medians and their ratios to the anchor (and
// rclone's to ossnas-s3fs), the issue's targets met or MISSED, and writes JSON.
//
//   node --import tsx bench/clients.ts             (N = 100, 2 000, 20 000; 64 MiB; 10 000 objects for find; 3 runs)
//   node --import tsx bench/clients.ts --quick     (N = 100, 8 MiB, 20 small files, 200 objects for find, 50 files to clone, 1 run: ~1.5 min)
//   options: --configs s3fs-raw,ossnas-s3fs,ossnas-rclone  --runs 3  --sizes 100,2000,20000
//            --large-mib 64  --small-count 200  --append-mib 8  --tree 10000  --git-files 200
//            --upload-deadline 60 (s; quick 20)  --out .cache/bench-clients.json
// Needs root (FUSE mounts), s3fs, rclone, git (Debian: git), and `npm run build` (the plugin runs
// from dist/). Everything it mounts is unmounted again, on error and on Ctrl-C too (lazily if need
// be; a volume whose Unmount the plugin refuses, uploads pending, is left to that final cleanup).
//
// The cases, each the median of --runs, each run on a fresh mount (a new client process):
// 1. listing: `ls -l` of N objects (100 bytes, put by `rclone copy`), cold (the mount's first
//    look at the directory) and warm (the same again); bench/listing.ts's helpers.
// 2. data path, 1 MiB writes (dd-like) and reads:
//    - large write: open, write, close (s3fs uploads at close); "uploaded": from the open until the
//      S3 server answers a HEAD with the full size (rclone uploads after close);
//    - small write: --small-count files of 4 KiB, each create + write + close; "uploaded": until a
//      listing of the server shows them all;
//    - large read, small read: what the run wrote, read back on a new mount. An rclone volume's
//      write cache (in the plugin's state directory) survives the remount, so rclone reads its own
//      writes from the local disk: what a container restarted on the same host sees;
//    - large read (bucket), small read (bucket): objects put beforehand by `rclone copy`, in no
//      client's cache: a cold read from the server;
//    - append: one line appended (O_APPEND, write, close) to an object of --append-mib put
//      beforehand, one per configuration and run, on a new mount; "uploaded": until HEAD answers
//      the new size. 8 MiB by default: from s3fs's multipart_size (10 MB) on, s3fs sends the parts
//      it did not change as UploadPartCopy requests, which s3rver answers 501 (close fails, EIO);
//      below it s3fs downloads the object and puts it whole, as rclone does.
// 3. metadata: `find` over --tree objects in ~sqrt(N) directories, cold; `git clone --no-hardlinks`
//    of a local repository (--git-files small files in a few directories, 3 commits) onto the
//    mount; "uploaded": until every file of the clone is in the bucket with its size.
// 4. memory: the FUSE client's RSS after the listings (the s3fs or rclone process serving the mount).
// The polls of the S3 server are anonymous HEADs and ListObjectsV2 requests (s3rver answers
// them), every 10 ms (HEAD) or 25 ms (listing). A clone whose files do not all reach the bucket
// within --upload-deadline is a failure of that case, reported (table, "failures" in the JSON)
// instead of a number; any other failure ends the run.
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, writeFile, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { fuseClientPid } from '../test/helpers/docker.js';
import { tempDir } from '../test/helpers/env.js';
import type { PluginProcess } from '../test/helpers/plugin-process.js';
import { startS3, type S3Server } from '../test/helpers/s3.js';
import { checkBuild, runMeta } from './build.js';
import { BenchClient } from './client.js';
import { Cleanup, fmtMs, log, logPluginTail, memoryKb, mountId, requireRoot, runBench, sleep, startBenchPlugin, textTable, writeJsonReport } from './fuse-host.js';
import { copyToBucket, listMs, median, putObjects } from './listing.js';
import { clientVersion, mountRaw } from './raw-clients.js';
import { REPO_ROOT } from './servers/ossnas.js';

const MiB = 2 ** 20;
const CHUNK = MiB; // dd-like: bs=1M
const SMALL_BYTES = 4096;
const BUCKET = 'clients';
const PROFILE = 'bench';
const KEY_ID = 'S3RVER'; // s3rver's built-in account, which the signature-checking front knows
const KEY_SECRET = 'S3RVER';
const APPENDED = 'one more line, appended\n';
/** How long a client may take to get a write into the bucket (--upload-deadline). */
const limits = { uploadDeadlineMs: 60_000 };

const CONFIGS = ['s3fs-raw', 'ossnas-s3fs', 'ossnas-rclone'] as const;
type ConfigName = (typeof CONFIGS)[number];
const ANCHOR: ConfigName = 's3fs-raw';

/** Issue 19's targets. */
const TARGET_COLD_LIST_RATIO = 0.3; // ossnas-rclone's cold listing of 2 000 objects over s3fs-raw's
const TARGET_DATA_RATIO = 0.95; // ossnas-s3fs's speed over s3fs-raw's, on every data-path case

/** One case of one configuration: the median of its runs. */
export interface Result {
  config: ConfigName;
  /** list-cold, large-write-uploaded, git-clone, rss-after-listing, ... (CASES) */
  case: string;
  /** The case's size: objects listed or found, bytes of the large file, small files, files in the repository */
  n: number;
  unit: 'ms' | 'MiB';
  value: number;
  min: number;
  max: number;
  samples: number[];
}

/** A case a configuration could not complete in a run (so far: the clone's files never all uploaded), kept apart from the numbers. */
export interface Failure {
  config: ConfigName;
  case: string;
  n: number;
  run: number;
  error: string;
}

/** The cases' labels, in the order of the tables; `group` is the table. */
const CASES: Array<{ case: string; group: 'listing' | 'data' | 'metadata' | 'memory'; label: (n: number) => string }> = [
  { case: 'list-cold', group: 'listing', label: (n) => `ls -l of ${n}, cold` },
  { case: 'list-warm', group: 'listing', label: (n) => `ls -l of ${n}, warm` },
  { case: 'large-write', group: 'data', label: (n) => `large write ${n / MiB} MiB, to close` },
  { case: 'large-write-uploaded', group: 'data', label: (n) => `large write ${n / MiB} MiB, to uploaded` },
  { case: 'large-read', group: 'data', label: (n) => `large read ${n / MiB} MiB, own write` },
  { case: 'large-read-bucket', group: 'data', label: (n) => `large read ${n / MiB} MiB, from the bucket` },
  { case: 'small-write', group: 'data', label: (n) => `small write ${n} x 4 KiB, to close` },
  { case: 'small-write-uploaded', group: 'data', label: (n) => `small write ${n} x 4 KiB, to uploaded` },
  { case: 'small-read', group: 'data', label: (n) => `small read ${n} x 4 KiB, own writes` },
  { case: 'small-read-bucket', group: 'data', label: (n) => `small read ${n} x 4 KiB, from the bucket` },
  { case: 'append', group: 'data', label: (n) => `append a line to ${n / MiB} MiB, to close` },
  { case: 'append-uploaded', group: 'data', label: (n) => `append a line to ${n / MiB} MiB, to uploaded` },
  { case: 'find', group: 'metadata', label: (n) => `find over ${n} objects, cold` },
  { case: 'git-clone', group: 'metadata', label: (n) => `git clone of ${n} files, to exit` },
  { case: 'git-clone-uploaded', group: 'metadata', label: (n) => `git clone of ${n} files, to uploaded` },
  { case: 'rss-after-listing', group: 'memory', label: (n) => `client RSS after ls -l of ${n}` },
];

// ---------------------------------------------------------------------------------------------
// Mounts

interface ClientMount {
  config: ConfigName;
  mp: string;
  /** The FUSE client serving the mount */
  pid: number;
  /** Unmounts (once; again after a failure) */
  stop(): Promise<void>;
  /** From now on stop() does nothing: the mount is left to the final cleanup (the plugin's stop, then a lazy unmount). */
  abandon(): void;
}

const volumeName = (c: ConfigName) => `bench-${c}`;

class Mounter {
  private mounts = 0;
  /** Set by the cleanup: nothing is mounted after it has started. */
  stopping = false;

  constructor(
    private readonly s3: S3Server,
    private readonly client: BenchClient,
    private readonly cleanup: Cleanup,
  ) {}

  async mount(c: ConfigName): Promise<ClientMount> {
    if (this.stopping) throw new Error('stopping');
    if (c === 's3fs-raw') {
      const m = await mountRaw('s3fs', this.s3, BUCKET);
      this.cleanup.add(`${c} client`, () => this.stopAll(m.stop)); // a raw client is always stopped, abandoned or not
      if (this.stopping) {
        await m.stop();
        throw new Error('stopping');
      }
      let left = false;
      return { config: c, mp: m.mp, pid: m.pid, stop: () => (left ? Promise.resolve() : m.stop()), abandon: () => (left = true) };
    }
    const name = volumeName(c);
    const id = mountId(++this.mounts);
    const r = await this.client.call('VolumeDriver.Mount', { Name: name, ID: id });
    const mp = String(r.json.Mountpoint);
    let stopping: Promise<void> | undefined;
    let left = false;
    const unmount = () =>
      this.client.call('VolumeDriver.Unmount', { Name: name, ID: id }).then(
        () => undefined,
        (err: unknown) => {
          stopping = undefined; // the cleanup tries again
          throw err;
        },
      );
    const stop = () => (left ? Promise.resolve() : (stopping ??= unmount()));
    this.cleanup.add(`${c} mount ${id.slice(8, 16)}`, () => this.stopAll(stop));
    const pid = this.stopping ? undefined : await fuseClientPid(mp);
    if (!pid) {
      await stop();
      throw new Error(this.stopping ? 'stopping' : `${c}: no s3fs or rclone process serves ${mp}`);
    }
    return { config: c, mp, pid, stop, abandon: () => (left = true) };
  }

  /** A mount's cleanup step: from the first one run on (the cleanup has begun), nothing more is mounted. */
  private stopAll(stop: () => Promise<void>): Promise<void> {
    this.stopping = true;
    return stop();
  }

  /** fn on a fresh mount of c, unmounted after, whatever happens. */
  async with<T>(c: ConfigName, fn: (m: ClientMount) => Promise<T>): Promise<T> {
    const m = await this.mount(c);
    let result: T;
    try {
      result = await fn(m);
    } catch (err) {
      // fn's error is the one to see; the cleanup tries the unmount again if this one fails.
      await m.stop().catch((e: Error) => log(`${c}: unmount after a failure: ${e.message}`));
      throw err;
    }
    await m.stop();
    return result;
  }
}

// ---------------------------------------------------------------------------------------------
// The S3 server, looked at directly (anonymous requests: s3rver answers them)

const objectUrl = (s3: S3Server, key: string) => `${s3.url}/${BUCKET}/${key.split('/').map(encodeURIComponent).join('/')}`;

/** Every object below `prefix`, key -> size (ListObjectsV2, page after page). */
async function listBucket(s3: S3Server, prefix: string): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  let token: string | undefined;
  do {
    const q = new URLSearchParams({ 'list-type': '2', prefix, 'max-keys': '1000' });
    if (token) q.set('continuation-token', token);
    const res = await fetch(`${s3.url}/${BUCKET}?${q}`);
    const xml = await res.text();
    if (!res.ok) throw new Error(`listing ${prefix}: HTTP ${res.status}: ${xml.slice(0, 200)}`);
    for (const m of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
      const key = /<Key>([^<]*)<\/Key>/.exec(m[1]!)?.[1];
      const size = /<Size>(\d+)<\/Size>/.exec(m[1]!)?.[1];
      if (key !== undefined && size !== undefined) found.set(unescapeXml(key), Number(size));
    }
    token = /<IsTruncated>true<\/IsTruncated>/.test(xml) ? /<NextContinuationToken>([^<]*)<\/NextContinuationToken>/.exec(xml)?.[1] : undefined;
  } while (token);
  return found;
}

const unescapeXml = (s: string) =>
  s.replace(/&(lt|gt|quot|apos|amp);/g, (_, e: string) => ({ lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' })[e]!);

/** A write the client did not get into the bucket by the deadline. */
class NotUploaded extends Error {}

/** ms from t0 until check() returns '' (what is missing otherwise), polled every intervalMs; throws NotUploaded at the deadline. */
async function until(what: string, t0: number, intervalMs: number, check: () => Promise<string>): Promise<number> {
  for (;;) {
    const missing = await check();
    if (missing === '') return performance.now() - t0;
    if (performance.now() - t0 > limits.uploadDeadlineMs) throw new NotUploaded(`${what}: not in the bucket after ${limits.uploadDeadlineMs / 1000} s: ${missing}`);
    await sleep(intervalMs);
  }
}

/** ms from t0 until the object answers a HEAD with `size` bytes. */
function untilObjectSize(s3: S3Server, key: string, size: number, t0: number): Promise<number> {
  return until(key, t0, 10, async () => {
    const res = await fetch(objectUrl(s3, key), { method: 'HEAD' });
    const got = res.ok ? res.headers.get('content-length') : `HTTP ${res.status}`;
    return got === String(size) ? '' : `${got} bytes of ${size}`;
  });
}

/** ms from t0 until every key of `want` (key -> size) is in the bucket with its size. */
function untilAllObjects(s3: S3Server, prefix: string, want: Map<string, number>, t0: number): Promise<number> {
  return until(`${want.size} objects below ${prefix}`, t0, 25, async () => {
    // s3rver answers a listing 500 when it meets an object being written (its metadata file not
    // complete yet): not there yet.
    const have = await listBucket(s3, prefix).catch((err: Error) => err);
    if (have instanceof Error) return have.message.slice(0, 200);
    const wrong = [...want].filter(([k, size]) => have.get(k) !== size).map(([k, size]) => `${k} ${have.get(k) ?? 'missing'} bytes of ${size}`);
    return wrong.length === 0 ? '' : `${wrong.length} missing or short: ${wrong.slice(0, 5).join(', ')}`;
  });
}

// ---------------------------------------------------------------------------------------------
// Contents

/** Chunk i of a large file: a shared random megabyte with i in its first 8 bytes (misplaced chunks show). */
function chunk(pattern: Buffer, i: number, bytes: number): Buffer {
  pattern.writeBigUInt64LE(BigInt(i), 0);
  return pattern.subarray(0, Math.min(CHUNK, bytes - i * CHUNK));
}

function smallContent(tag: string, i: number): Buffer {
  const b = Buffer.alloc(SMALL_BYTES, 97 + (i % 26));
  b.write(`${tag} file ${i}\n`);
  return b;
}

const smallName = (i: number) => `f${String(i).padStart(5, '0')}`;

async function writeLargeLocal(file: string, bytes: number, pattern: Buffer): Promise<void> {
  const fh = await open(file, 'w');
  try {
    for (let i = 0; i * CHUNK < bytes; i++) await fh.write(chunk(pattern, i, bytes), 0, undefined, i * CHUNK);
  } finally {
    await fh.close();
  }
}

/** open, 1 MiB writes, close: ms, the close (s3fs's upload) included. */
async function writeLarge(file: string, bytes: number, pattern: Buffer): Promise<number> {
  const t0 = performance.now();
  const fh = await open(file, 'w');
  try {
    for (let i = 0; i * CHUNK < bytes; i++) {
      const c = chunk(pattern, i, bytes);
      const { bytesWritten } = await fh.write(c, 0, c.length, i * CHUNK);
      if (bytesWritten !== c.length) throw new Error(`${file}: short write at chunk ${i}`);
    }
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
  await fh.close();
  return performance.now() - t0;
}

/** open, 1 MiB reads to the end, each compared with what was written, close: ms. */
async function readLarge(file: string, bytes: number, pattern: Buffer): Promise<number> {
  const buf = Buffer.alloc(CHUNK);
  const t0 = performance.now();
  let fh: FileHandle | undefined = await open(file, 'r');
  try {
    for (let i = 0; ; i++) {
      const want = Math.min(CHUNK, bytes - i * CHUNK);
      let got = 0; // a read may return less than asked
      while (got < Math.max(want, 1)) {
        const { bytesRead } = await fh.read(buf, got, CHUNK - got, i * CHUNK + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      if (want <= 0) {
        if (got !== 0) throw new Error(`${file}: longer than the ${bytes} bytes written`);
        break;
      }
      if (got !== want) throw new Error(`${file}: chunk ${i} has ${got} bytes, ${want} expected`);
      if (!buf.subarray(0, want).equals(chunk(pattern, i, bytes))) throw new Error(`${file}: chunk ${i} differs from what was written`);
    }
    const h = fh;
    fh = undefined;
    await h.close();
  } finally {
    await fh?.close().catch(() => undefined);
  }
  return performance.now() - t0;
}

/** Each file created, written and closed, one after the other: ms. */
async function writeSmall(dir: string, count: number, tag: string): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) await writeFile(path.join(dir, smallName(i)), smallContent(tag, i));
  return performance.now() - t0;
}

async function readSmall(dir: string, count: number, tag: string): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const got = await readFile(path.join(dir, smallName(i)));
    if (!got.equals(smallContent(tag, i))) throw new Error(`${path.join(dir, smallName(i))}: content differs from what was written`);
  }
  return performance.now() - t0;
}

/** Every regular file below dir, its path relative to dir -> size. */
async function filesBelow(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  for (const e of entries) {
    if (!e.isFile()) continue;
    const full = path.join(e.parentPath, e.name);
    out.set(path.relative(dir, full), (await lstat(full)).size);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Seeds: what is put in the bucket beforehand (never through a mount)

/** `--tree` objects of 100 bytes below tree/, in ceil(sqrt(N)) directories; `find` prints N + dirs + 1 lines. */
async function putTree(s3: S3Server, n: number): Promise<number> {
  const dirs = Math.ceil(Math.sqrt(n));
  const t = await tempDir('ossnas-bench-clients-tree-');
  try {
    for (let d = 0; d < dirs; d++) await mkdir(path.join(t.dir, `d${String(d).padStart(3, '0')}`));
    const body = 'x'.repeat(99) + '\n';
    for (let i = 0; i < n; i += 500) {
      await Promise.all(
        Array.from({ length: Math.min(500, n - i) }, (_, j) =>
          writeFile(path.join(t.dir, `d${String((i + j) % dirs).padStart(3, '0')}`, `f${String(i + j).padStart(6, '0')}`), body),
        ),
      );
    }
    await copyToBucket(s3, t.dir, `${BUCKET}/tree`);
  } finally {
    await t.cleanup();
  }
  return dirs;
}

/** seed/large.bin and seed/small/* to read, and seed/append/<config>-run<r>.bin, one object per append. */
async function putDataSeeds(s3: S3Server, configs: ConfigName[], runs: number, sizes: DataSizes, pattern: Buffer): Promise<void> {
  const { largeBytes, smallCount, appendBytes } = sizes;
  const t = await tempDir('ossnas-bench-clients-seed-');
  try {
    await mkdir(path.join(t.dir, 'small'));
    await mkdir(path.join(t.dir, 'append'));
    await writeLargeLocal(path.join(t.dir, 'large.bin'), largeBytes, pattern);
    for (let i = 0; i < smallCount; i++) await writeFile(path.join(t.dir, 'small', smallName(i)), smallContent('seed', i));
    for (const c of configs) for (let r = 1; r <= runs; r++) await writeLargeLocal(path.join(t.dir, 'append', `${c}-run${r}.bin`), appendBytes, pattern);
    await copyToBucket(s3, t.dir, `${BUCKET}/seed`);
  } finally {
    await t.cleanup();
  }
}

/** A repository of `files` small files in a few directories, three commits; its path. */
async function makeRepo(dir: string, files: number): Promise<string> {
  const repo = path.join(dir, 'repo');
  const subdirs = ['src/core', 'src/util', 'docs', 'test', 'assets'];
  const git = (...args: string[]) =>
    execa('git', ['-c', 'user.name=bench', '-c', 'user.email=bench@localhost', '-c', 'init.defaultBranch=main', ...args], {
      cwd: repo,
      env: { GIT_CONFIG_NOSYSTEM: '1', HOME: dir },
    });
  await mkdir(repo);
  await git('init', '-q');
  const file = (i: number) => path.join(subdirs[i % subdirs.length]!, `file${String(i).padStart(4, '0')}.txt`);
  const body = (i: number, v: number) => Array.from({ length: 20 + (i % 30) }, (_, l) => `line ${l} of file ${i}, version ${v}`).join('\n') + '\n';
  for (const d of subdirs) await mkdir(path.join(repo, d), { recursive: true });
  const thirds = [Math.floor(files / 3), Math.floor((2 * files) / 3), files];
  for (let i = 0; i < thirds[0]!; i++) await writeFile(path.join(repo, file(i)), body(i, 1));
  await git('add', '-A');
  await git('commit', '-q', '-m', 'first third');
  for (let i = thirds[0]!; i < files; i++) await writeFile(path.join(repo, file(i)), body(i, 1));
  await git('add', '-A');
  await git('commit', '-q', '-m', 'the rest');
  for (let i = 0; i < files; i += 7) await writeFile(path.join(repo, file(i)), body(i, 2));
  await git('commit', '-q', '-a', '-m', 'every seventh file changed');
  return repo;
}

// ---------------------------------------------------------------------------------------------
// The cases

type Samples = Map<string, number[]>; // `${config} ${case} ${n}` -> one value per run
const sampleKey = (c: ConfigName, kase: string, n: number) => `${c} ${kase} ${n}`;

interface Ctx {
  s3: S3Server;
  mounter: Mounter;
  configs: ConfigName[];
  runs: number;
  samples: Samples;
  failures: Failure[];
}

function record(ctx: Ctx, c: ConfigName, kase: string, n: number, value: number): void {
  const k = sampleKey(c, kase, n);
  if (!ctx.samples.has(k)) ctx.samples.set(k, []);
  ctx.samples.get(k)!.push(value);
}

/** The configurations of run r, the first one moving by one each run. */
const rotated = (configs: ConfigName[], r: number) => configs.map((_, i) => configs[(i + r - 1) % configs.length]!);

async function listingCase(ctx: Ctx, n: number): Promise<void> {
  for (let r = 1; r <= ctx.runs; r++) {
    for (const c of rotated(ctx.configs, r)) {
      await ctx.mounter.with(c, async (m) => {
        const dir = path.join(m.mp, `ls${n}`);
        const cold = await listMs(dir, n);
        const warm = await listMs(dir, n);
        const rss = (await memoryKb(m.pid)).rss / 1024;
        record(ctx, c, 'list-cold', n, cold);
        record(ctx, c, 'list-warm', n, warm);
        record(ctx, c, 'rss-after-listing', n, rss);
        log(`[run ${r} ${c}] ls -l of ${n}: cold ${fmtMs(cold)} ms, warm ${fmtMs(warm)} ms, client RSS ${rss.toFixed(1)} MiB`);
      });
    }
  }
}

interface DataSizes {
  largeBytes: number;
  smallCount: number;
  /** The object appended to: below s3fs's multipart_size (10 MB), see --append-mib */
  appendBytes: number;
}

async function dataCases(ctx: Ctx, sizes: DataSizes, pattern: Buffer): Promise<void> {
  const { largeBytes, smallCount, appendBytes } = sizes;
  const { s3 } = ctx;
  for (let r = 1; r <= ctx.runs; r++) {
    for (const c of rotated(ctx.configs, r)) {
      const base = `data/${c}-run${r}`;
      const tag = `${c} run ${r}`;
      const note: string[] = [];
      // Writes, each waited for until it is in the bucket before the next.
      await ctx.mounter.with(c, async (m) => {
        await mkdir(path.join(m.mp, base, 'small'), { recursive: true });
        let t0 = performance.now();
        const lw = await writeLarge(path.join(m.mp, base, 'large.bin'), largeBytes, pattern);
        const lwUp = await untilObjectSize(s3, `${base}/large.bin`, largeBytes, t0);
        t0 = performance.now();
        const sw = await writeSmall(path.join(m.mp, base, 'small'), smallCount, tag);
        const want = new Map(Array.from({ length: smallCount }, (_, i) => [`${base}/small/${smallName(i)}`, SMALL_BYTES]));
        const swUp = await untilAllObjects(s3, `${base}/small/`, want, t0);
        record(ctx, c, 'large-write', largeBytes, lw);
        record(ctx, c, 'large-write-uploaded', largeBytes, lwUp);
        record(ctx, c, 'small-write', smallCount, sw);
        record(ctx, c, 'small-write-uploaded', smallCount, swUp);
        note.push(`large write ${fmtMs(lw)} ms (uploaded ${fmtMs(lwUp)}), small write ${fmtMs(sw)} ms (uploaded ${fmtMs(swUp)})`);
      });
      // Reads on a new mount: the run's own writes, then objects no client has had.
      await ctx.mounter.with(c, async (m) => {
        const lr = await readLarge(path.join(m.mp, base, 'large.bin'), largeBytes, pattern);
        const sr = await readSmall(path.join(m.mp, base, 'small'), smallCount, tag);
        const lrb = await readLarge(path.join(m.mp, 'seed', 'large.bin'), largeBytes, pattern);
        const srb = await readSmall(path.join(m.mp, 'seed', 'small'), smallCount, 'seed');
        record(ctx, c, 'large-read', largeBytes, lr);
        record(ctx, c, 'small-read', smallCount, sr);
        record(ctx, c, 'large-read-bucket', largeBytes, lrb);
        record(ctx, c, 'small-read-bucket', smallCount, srb);
        note.push(`large read ${fmtMs(lr)} ms (bucket ${fmtMs(lrb)}), small read ${fmtMs(sr)} ms (bucket ${fmtMs(srb)})`);
      });
      // The append, on a new mount, to a large object this client has never had.
      await ctx.mounter.with(c, async (m) => {
        const key = `seed/append/${c}-run${r}.bin`;
        const t0 = performance.now();
        const fh = await open(path.join(m.mp, key), 'a');
        try {
          await fh.write(APPENDED);
        } catch (err) {
          await fh.close().catch(() => undefined);
          throw err;
        }
        await fh.close();
        const ap = performance.now() - t0;
        const apUp = await untilObjectSize(s3, key, appendBytes + Buffer.byteLength(APPENDED), t0);
        record(ctx, c, 'append', appendBytes, ap);
        record(ctx, c, 'append-uploaded', appendBytes, apUp);
        note.push(`append ${fmtMs(ap)} ms (uploaded ${fmtMs(apUp)})`);
      });
      log(`[run ${r} ${c}] ${note.join('; ')}`);
    }
  }
}

async function findCase(ctx: Ctx, n: number, dirs: number): Promise<void> {
  for (let r = 1; r <= ctx.runs; r++) {
    for (const c of rotated(ctx.configs, r)) {
      await ctx.mounter.with(c, async (m) => {
        const t0 = performance.now();
        const res = await execa('find', [path.join(m.mp, 'tree')], { reject: false, maxBuffer: 256 * MiB });
        const ms = performance.now() - t0;
        const lines = res.stdout.split('\n').filter(Boolean).length;
        const want = n + dirs + 1; // the objects, their directories and tree itself
        if (res.exitCode !== 0 || lines !== want) throw new Error(`${c}: find printed ${lines} lines of ${want}, exit ${res.exitCode}: ${res.stderr.slice(0, 300)}`);
        record(ctx, c, 'find', n, ms);
        log(`[run ${r} ${c}] find over ${n} objects: ${fmtMs(ms)} ms`);
      });
    }
  }
}

/**
 * git clone onto a fresh mount, then until every file of the clone is in the bucket. A clone whose
 * files do not all get there is a failure of the case, recorded, not thrown; the plugin then
 * refuses the Unmount (uploads pending), and the mount is left to the final cleanup.
 */
async function gitCase(ctx: Ctx, repo: string, files: number): Promise<void> {
  for (let r = 1; r <= ctx.runs; r++) {
    for (const c of rotated(ctx.configs, r)) {
      const m = await ctx.mounter.mount(c);
      let failure: Failure | undefined;
      try {
        const rel = `git/${c}-run${r}`;
        await mkdir(path.join(m.mp, 'git'), { recursive: true });
        const dest = path.join(m.mp, rel);
        const t0 = performance.now();
        const res = await execa('git', ['clone', '-q', '--no-hardlinks', `file://${repo}`, dest], {
          reject: false,
          all: true,
          env: { GIT_CONFIG_NOSYSTEM: '1', HOME: path.dirname(repo) },
        });
        const ms = performance.now() - t0;
        if (res.exitCode !== 0) throw new Error(`${c}: git clone failed (exit ${res.exitCode}): ${String(res.all).slice(-500)}`);
        // What the clone holds, seen through the mount, must reach the bucket, each file with its size.
        const local = await filesBelow(dest);
        const worktree = [...local.keys()].filter((f) => !f.startsWith('.git/')).length;
        if (worktree !== files) throw new Error(`${c}: the clone has ${worktree} files outside .git, the repository ${files}`);
        record(ctx, c, 'git-clone', files, ms);
        const want = new Map([...local].map(([f, size]) => [`${rel}/${f}`, size]));
        try {
          const up = await untilAllObjects(ctx.s3, `${rel}/`, want, t0);
          record(ctx, c, 'git-clone-uploaded', files, up);
          log(`[run ${r} ${c}] git clone of ${files} files (${local.size} with .git): ${fmtMs(ms)} ms, uploaded ${fmtMs(up)} ms`);
        } catch (err) {
          if (!(err instanceof NotUploaded)) throw err;
          failure = { config: c, case: 'git-clone-uploaded', n: files, run: r, error: err.message };
          ctx.failures.push(failure);
          log(`[run ${r} ${c}] git clone of ${files} files (${local.size} with .git): ${fmtMs(ms)} ms, NOT UPLOADED: ${err.message}`);
        }
      } catch (err) {
        await m.stop().catch((e: Error) => log(`${c}: unmount after a failure: ${e.message}`));
        throw err;
      }
      try {
        await m.stop();
      } catch (err) {
        if (!failure) throw err;
        failure.error += `; then Unmount: ${(err as Error).message}`;
        log(`[run ${r} ${c}] Unmount refused: ${(err as Error).message}; the mount is left to the final cleanup`);
        m.abandon();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tables and targets

/** The medians; a case that failed in any run of a configuration has none (its failures say why). */
function results(samples: Samples, failures: Failure[], configs: ConfigName[]): Result[] {
  const out: Result[] = [];
  for (const def of CASES) {
    for (const c of configs) {
      for (const [k, values] of samples) {
        const [config, kase, n] = k.split(' ');
        if (config !== c || kase !== def.case) continue;
        if (failures.some((f) => f.config === c && f.case === kase && f.n === Number(n))) continue;
        const sorted = [...values].sort((a, b) => a - b);
        out.push({
          config: c,
          case: def.case,
          n: Number(n),
          unit: def.group === 'memory' ? 'MiB' : 'ms',
          value: median(values),
          min: sorted[0]!,
          max: sorted[sorted.length - 1]!,
          samples: values,
        });
      }
    }
  }
  return out;
}

/** The rows of a group: each (case, n) measured, in CASES' order then by n. */
function rowsOf(res: Array<{ case: string; n: number }>, group: string): Array<{ case: string; n: number; label: string }> {
  const rows: Array<{ case: string; n: number; label: string }> = [];
  const ns = [...new Set(res.map((r) => r.n))].sort((a, b) => a - b);
  const defs = CASES.filter((d) => d.group === group);
  // The listing's rows go by N first (cold and warm of one N together), the others by case.
  const pairs = group === 'listing' || group === 'memory' ? ns.flatMap((n) => defs.map((d) => [d, n] as const)) : defs.flatMap((d) => ns.map((n) => [d, n] as const));
  for (const [d, n] of pairs) if (res.some((r) => r.case === d.case && r.n === n)) rows.push({ case: d.case, n, label: d.label(n) });
  return rows;
}

function table(res: Result[], failures: Failure[], configs: ConfigName[], group: string, runs: number): string {
  const find = (c: ConfigName, kase: string, n: number) => res.find((r) => r.config === c && r.case === kase && r.n === n);
  const failed = (c: ConfigName, kase: string, n: number) => failures.filter((f) => f.config === c && f.case === kase && f.n === n).length;
  const ratios: Array<[ConfigName, ConfigName]> = [
    ...configs.filter((c) => c !== ANCHOR && configs.includes(ANCHOR)).map((c) => [c, ANCHOR] as [ConfigName, ConfigName]),
    ...(configs.includes('ossnas-rclone') && configs.includes('ossnas-s3fs') ? [['ossnas-rclone', 'ossnas-s3fs'] as [ConfigName, ConfigName]] : []),
  ];
  const unit = group === 'memory' ? 'MiB' : 'ms';
  const header = ['', ...configs.map((c) => `${c} ${unit}`), ...ratios.map(([a, b]) => `${a} / ${b}`), ...(runs > 1 ? ['noise'] : [])];
  const body = rowsOf([...res, ...failures], group).map((row) => {
    const v = (c: ConfigName) => find(c, row.case, row.n);
    // The noise: the widest (max - min) / median of any configuration's runs.
    const measured = configs.filter((c) => v(c));
    const noise = measured.length ? Math.max(...measured.map((c) => (v(c)!.max - v(c)!.min) / v(c)!.value)) : NaN;
    return [
      row.label,
      ...configs.map((c) =>
        v(c) ? (unit === 'MiB' ? v(c)!.value.toFixed(1) : fmtMs(v(c)!.value)) : failed(c, row.case, row.n) ? `failed ${failed(c, row.case, row.n)}/${runs}` : '-',
      ),
      ...ratios.map(([a, b]) => (v(a) && v(b) ? (v(a)!.value / v(b)!.value).toFixed(2) : '-')),
      ...(runs > 1 ? [Number.isFinite(noise) ? `${(noise * 100).toFixed(0)}%` : '-'] : []),
    ];
  });
  return textTable(header, body);
}

function targets(res: Result[], runs: number): string[] {
  const find = (c: ConfigName, kase: string, n?: number) => res.filter((r) => r.config === c && r.case === kase && (n === undefined || r.n === n));
  const lines: string[] = [];
  const rclone = find('ossnas-rclone', 'list-cold', 2000)[0];
  const raw = find('s3fs-raw', 'list-cold', 2000)[0];
  const what = `cold listing of 2 000 objects through ossnas-rclone <= ${TARGET_COLD_LIST_RATIO}x s3fs-raw`;
  if (rclone && raw) {
    const ratio = rclone.value / raw.value;
    lines.push(`target: ${what}: ${ratio.toFixed(2)}x: ${ratio <= TARGET_COLD_LIST_RATIO ? 'met' : 'MISSED'}`);
  } else lines.push(`target: ${what}: not measured (needs --sizes with 2000 and both configurations)`);
  const dataWhat = `no data-path case of ossnas-s3fs slower than s3fs-raw / ${TARGET_DATA_RATIO} (time ratio <= ${(1 / TARGET_DATA_RATIO).toFixed(3)})`;
  const dataCases = CASES.filter((d) => d.group === 'data').map((d) => d.case);
  const pairs = dataCases.flatMap((k) => find('ossnas-s3fs', k).map((o) => [o, find('s3fs-raw', k, o.n)[0]] as const)).filter(([, b]) => b);
  if (pairs.length === 0) lines.push(`target: ${dataWhat}: not measured (needs both configurations)`);
  else {
    const misses = pairs.filter(([o, b]) => o.value > b!.value / TARGET_DATA_RATIO);
    const label = (k: string, n: number) => CASES.find((d) => d.case === k)!.label(n);
    const worst = Math.max(...pairs.map(([o, b]) => o.value / b!.value));
    lines.push(
      `target: ${dataWhat}: ` +
        (misses.length === 0
          ? `met on all ${pairs.length} (worst ${worst.toFixed(2)})`
          : `MISSED on ${misses.length} of ${pairs.length}: ${misses.map(([o, b]) => `${label(o.case, o.n)} ${(o.value / b!.value).toFixed(2)}`).join('; ')}`) +
        (runs < 3 ? ` (${runs} run(s): no verdict on a noisy machine)` : ''),
    );
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------

function parseConfigs(list: string): ConfigName[] {
  const names = list.split(',').map((s) => s.trim()).filter(Boolean);
  for (const c of names) if (!CONFIGS.includes(c as ConfigName)) throw new Error(`--configs: unknown configuration '${c}' (${CONFIGS.join(', ')})`);
  if (names.length === 0) throw new Error('--configs names none');
  return [...new Set(names)] as ConfigName[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      configs: { type: 'string', default: CONFIGS.join(',') },
      runs: { type: 'string' },
      sizes: { type: 'string' },
      'large-mib': { type: 'string' },
      'small-count': { type: 'string' },
      tree: { type: 'string' },
      'git-files': { type: 'string' },
      'append-mib': { type: 'string' },
      'upload-deadline': { type: 'string' },
      out: { type: 'string', default: path.join('.cache', 'bench-clients.json') },
    },
  });
  const int = (name: string, text: string | undefined, dflt: number, quick: number) => {
    const v = text === undefined ? (values.quick ? quick : dflt) : Number(text);
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} takes a positive integer`);
    return v;
  };
  const runs = int('runs', values.runs, 3, 1);
  const sizes = (values.sizes ?? (values.quick ? '100' : '100,2000,20000')).split(',').map((s) => int('sizes', s, 0, 0));
  const largeBytes = int('large-mib', values['large-mib'], 64, 8) * MiB;
  const appendBytes = int('append-mib', values['append-mib'], 8, 8) * MiB;
  const smallCount = int('small-count', values['small-count'], 200, 20);
  const treeN = int('tree', values.tree, 10_000, 200);
  const gitFiles = int('git-files', values['git-files'], 200, 50);
  limits.uploadDeadlineMs = int('upload-deadline', values['upload-deadline'], 60, 20) * 1000;
  const configs = parseConfigs(values.configs);
  requireRoot('bench/clients.ts');
  await checkBuild();
  for (const cmd of ['s3fs', 'rclone', 'git', 'find']) {
    if (!(await execa('sh', ['-c', `command -v ${cmd}`], { reject: false })).stdout.trim()) throw new Error(`${cmd} is not installed (Debian: apt-get install -y ${cmd === 'find' ? 'findutils' : cmd})`);
  }

  const started = new Date();
  const loadBefore = os.loadavg();
  const cleanup = new Cleanup();
  process.once('SIGHUP', () => process.kill(process.pid, 'SIGTERM')); // a closed terminal: the same cleanup
  const samples: Samples = new Map();
  const failures: Failure[] = [];
  let plugin: PluginProcess | undefined;
  const seconds = (t0: number) => ((performance.now() - t0) / 1000).toFixed(1);
  try {
    const s3 = await startS3([BUCKET]);
    cleanup.add('S3 server', () => s3.stop()); // last: the clients go first, they may still upload
    const work = await tempDir('ossnas-bench-clients-');
    cleanup.add('temporary directory', () => work.cleanup());
    plugin = await startBenchPlugin(cleanup, { name: PROFILE, keyId: KEY_ID, secret: KEY_SECRET });
    const client = new BenchClient(plugin.socket);
    const mounter = new Mounter(s3, client, cleanup);
    const volumes = configs.filter((c) => c !== 's3fs-raw');
    cleanup.add('volumes', async () => {
      mounter.stopping = true;
      // After every mount's own step (registered later, run earlier): the volumes go, then the socket.
      for (const c of volumes) await client.call('VolumeDriver.Remove', { Name: volumeName(c) }).catch(() => undefined);
      client.close();
    });
    for (const c of volumes) {
      const opts: Record<string, string> = { type: 'oss', bucket: BUCKET, url: s3.url, credentials: PROFILE };
      if (c === 'ossnas-rclone') opts.client = 'rclone';
      await client.call('VolumeDriver.Create', { Name: volumeName(c), Opts: opts });
    }
    const ctx: Ctx = { s3, mounter, configs, runs, samples, failures };
    log(
      `clients benchmark: ${configs.join(', ')}; ${runs} run(s); ls -l of ${sizes.join(', ')}; large ${largeBytes / MiB} MiB, append to ${appendBytes / MiB} MiB, ` +
        `${smallCount} x 4 KiB; find over ${treeN}; git clone of ${gitFiles} files`,
    );

    try {
      for (const n of sizes) {
        const t0 = performance.now();
        await putObjects(s3, n, BUCKET);
        log(`${n} objects put in ${seconds(t0)} s`);
        await listingCase(ctx, n);
      }
      // One random megabyte, stamped with each chunk's number: incompressible enough for anything
      // between us and s3rver's disk.
      const pattern = randomBytes(CHUNK);
      let t0 = performance.now();
      const dataSizes: DataSizes = { largeBytes, smallCount, appendBytes };
      await putDataSeeds(s3, configs, runs, dataSizes, pattern);
      log(`data seeds put in ${seconds(t0)} s`);
      await dataCases(ctx, dataSizes, pattern);
      t0 = performance.now();
      const dirs = await putTree(s3, treeN);
      log(`${treeN} objects in ${dirs} directories put in ${seconds(t0)} s`);
      await findCase(ctx, treeN, dirs);
      const repo = await makeRepo(work.dir, gitFiles);
      await gitCase(ctx, repo, gitFiles);
    } catch (err) {
      logPluginTail(plugin);
      throw err;
    }

    // A volume whose mount was left behind (a failure above) is still in use: the cleanup's turn.
    for (const c of [...volumes]) {
      await client.call('VolumeDriver.Remove', { Name: volumeName(c) }).then(
        () => volumes.splice(volumes.indexOf(c), 1),
        (err: Error) => log(`Remove ${volumeName(c)}: ${err.message}`),
      );
    }

    const res = results(samples, failures, configs);
    const loadAfter = os.loadavg();
    const [s3fsV, rcloneV, gitV] = await Promise.all([clientVersion('s3fs'), clientVersion('rclone'), execa('git', ['--version']).then((r) => r.stdout.replace('git version ', ''))]);
    const s3rverV = (JSON.parse(await readFile(path.join(REPO_ROOT, 'node_modules', 's3rver', 'package.json'), 'utf8')) as { version: string }).version;
    const meta = {
      ...runMeta(started),
      versions: { s3fs: s3fsV, rclone: rcloneV, git: gitV, s3rver: s3rverV, node: process.version },
      configs,
      sizes,
      largeBytes,
      appendBytes,
      smallCount,
      tree: treeN,
      gitFiles,
      uploadDeadlineMs: limits.uploadDeadlineMs,
      loadavg: { before: loadBefore.map((l) => +l.toFixed(2)), after: loadAfter.map((l) => +l.toFixed(2)) },
      seconds: Math.round((Date.now() - started.getTime()) / 1000),
    };
    const header = [
      `OSS clients through an ossnas volume, ${meta.date}, ossnas ${meta.revision}; ${meta.cpus} x ${meta.cpuModel}; kernel ${meta.kernel}`,
      `  s3fs ${s3fsV}, rclone ${rcloneV}, git ${gitV}; s3rver ${s3rverV} as a local process (node ${process.version})`,
      `  s3fs-raw: raw s3fs with ossnas's options; ossnas-s3fs: an ossnas volume (default client); ossnas-rclone: an ossnas volume, client=rclone`,
      `  median of ${runs} run(s), each on a fresh mount, configurations taking turns; a ratio is of the medians` + (runs > 1 ? "; noise: the widest (max-min)/median of a configuration's runs" : ''),
      `  load average before ${meta.loadavg.before.join(' ')}, after ${meta.loadavg.after.join(' ')}; ${meta.seconds} s`,
    ];
    const section = (title: string, group: string) => `${title}\n\n${table(res, failures, configs, group, runs)}\n`;
    process.stdout.write(
      [
        header.join('\n'),
        '',
        section('Listing (ms)', 'listing'),
        section('Data path (ms)', 'data'),
        section('Metadata (ms)', 'metadata'),
        section('Memory: the FUSE client after the listings (RSS, MiB)', 'memory'),
        ...(failures.length ? ['Failures (no number for these cases):', ...failures.map((f) => `  ${f.config} run ${f.run} ${f.case}: ${f.error}`), ''] : []),
        targets(res, runs).join('\n'),
        '',
      ].join('\n'),
    );
    await writeJsonReport(values.out, { meta, runs, results: res, failures });
  } finally {
    await cleanup.run();
  }
}

runBench(main);
