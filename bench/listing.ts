// Listing a directory of many objects through each FUSE client, mounted on its own (no plugin):
// `ls -l` of N objects, cold (the client's first look at the directory, on a fresh mount) and warm
// (the same listing again), and the client's resident memory after. Issue 19's anchor: s3fs sends
// a HEAD per object for `ls -l`, rclone builds it from the listing; its target is a cold listing
// of 2 000 objects in <= 0.3x s3fs's time.
//
//   node --import tsx bench/listing.ts              N = 100, 2 000 and 20 000
//   node --import tsx bench/listing.ts --quick      N = 100
//   options: --sizes 100,2000  --clients s3fs,rclone  --runs 3  --out .cache/bench-listing.json
// Needs root, Debian's s3fs and rclone. The S3 server is s3rver in a child process of its own; the
// objects (100 bytes each, one directory per N) are put there by `rclone copy`.
//
// Each run of a client and an N is a fresh mount; its cold and warm times are the medians of
// --runs. s3fs gets the options ossnas gives its own client; rclone `--vfs-cache-mode writes`
// (bench/raw-clients.ts) and `--use-server-modtime` (no HEAD per object for the modification time).
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { tempDir } from '../test/helpers/env.js';
import { startS3, type S3Server } from '../test/helpers/s3.js';
import { runMeta } from './build.js';
import { percentile } from './client.js';
import { Cleanup, fmtMs, log, memoryKb, requireRoot, runBench, textTable, writeJsonReport } from './fuse-host.js';
import { clientVersion, mountRaw, parseClients, rcloneEnv, rcloneRemote, type RawClientName } from './raw-clients.js';

export const BUCKET = 'listing';
const OBJECT_BYTES = 100;
/** The target of issue 19: a cold listing of 2 000 objects, over s3fs's. */
const TARGET_COLD_RATIO = 0.3;

interface Measurement {
  client: RawClientName;
  n: number;
  coldMs: number;
  warmMs: number;
  /** The client's resident memory after the listings, MiB */
  rssMiB: number;
}

export const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 0.5);

/** Copies the local directory `src` (recursively) to `bucketPath` (`bucket/prefix`) with `rclone copy`, 16 transfers at a time. */
export async function copyToBucket(s3: S3Server, src: string, bucketPath: string): Promise<void> {
  const t = await tempDir('ossnas-bench-rclone-home-');
  try {
    const [remote, ...flags] = rcloneRemote(s3, bucketPath);
    const r = await execa('rclone', ['copy', src, remote!, ...flags, '--transfers', '16', '--checkers', '16'], { reject: false, all: true, extendEnv: false, env: rcloneEnv(t.dir) });
    if (r.exitCode !== 0) throw new Error(`rclone copy of ${src} to ${bucketPath} failed: ${String(r.all).slice(-500)}`);
  } finally {
    await t.cleanup();
  }
}

/** N objects of 100 bytes under ls<N>/ in the bucket, put by rclone from a local directory. */
export async function putObjects(s3: S3Server, n: number, bucket = BUCKET): Promise<void> {
  const t = await tempDir('ossnas-bench-listing-src-');
  try {
    const src = path.join(t.dir, 'src');
    await mkdir(src);
    const body = 'x'.repeat(OBJECT_BYTES - 1) + '\n';
    for (let i = 0; i < n; i += 500) {
      await Promise.all(Array.from({ length: Math.min(500, n - i) }, (_, j) => writeFile(path.join(src, `f${String(i + j).padStart(6, '0')}`), body)));
    }
    await copyToBucket(s3, src, `${bucket}/ls${n}`);
  } finally {
    await t.cleanup();
  }
}

/** `ls -l` of the directory: wall time in ms; throws unless it lists every object. */
export async function listMs(dir: string, n: number): Promise<number> {
  const t0 = performance.now();
  const r = await execa('ls', ['-l', dir], { reject: false });
  const ms = performance.now() - t0;
  const entries = r.stdout.split('\n').filter((l) => l && !l.startsWith('total')).length;
  if (r.exitCode !== 0 || entries !== n) throw new Error(`ls -l ${dir}: exit ${r.exitCode}, ${entries} entries of ${n}: ${r.stderr.slice(0, 300)}`);
  return ms;
}

async function measure(client: RawClientName, s3: S3Server, n: number, runs: number, cleanup: Cleanup): Promise<Measurement> {
  const cold: number[] = [];
  const warm: number[] = [];
  let rss = 0;
  for (let r = 0; r < runs; r++) {
    const m = await mountRaw(client, s3, BUCKET, client === 'rclone' ? { extra: ['--use-server-modtime'] } : {});
    cleanup.add(`${client} client`, m.stop);
    try {
      const dir = path.join(m.mp, `ls${n}`);
      cold.push(await listMs(dir, n));
      warm.push(await listMs(dir, n));
      rss = Math.max(rss, (await memoryKb(m.pid)).rss / 1024);
    } finally {
      await m.stop();
    }
  }
  log(`${client} N=${n}: cold ${fmtMs(median(cold))} ms, warm ${fmtMs(median(warm))} ms`);
  return { client, n, coldMs: median(cold), warmMs: median(warm), rssMiB: rss };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      sizes: { type: 'string' },
      clients: { type: 'string', default: 's3fs,rclone' },
      runs: { type: 'string' },
      out: { type: 'string', default: '.cache/bench-listing.json' },
    },
  });
  requireRoot('listing');
  const sizes = (values.sizes ?? (values.quick ? '100' : '100,2000,20000')).split(',').map(Number);
  const runs = Number(values.runs ?? (values.quick ? 1 : 3));
  const clients = parseClients(values.clients);
  const started = new Date();
  const cleanup = new Cleanup();
  const results: Measurement[] = [];
  try {
    const s3 = await startS3([BUCKET]);
    cleanup.add('S3 server', () => s3.stop());
    for (const n of sizes) {
      const t0 = performance.now();
      await putObjects(s3, n);
      log(`${n} objects put in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      for (const c of clients) results.push(await measure(c, s3, n, runs, cleanup));
    }
  } finally {
    await cleanup.run();
  }
  const versions = await Promise.all(clients.map(async (c) => `${c} ${await clientVersion(c)}`));
  const s3fsOf = (n: number) => results.find((r) => r.client === 's3fs' && r.n === n);
  console.log(`\n\`ls -l\` of N objects, each client on its own (${versions.join(', ')}), median of ${runs} fresh mount(s)\n`);
  console.log(textTable(
    ['client', 'N', 'cold ms', 'warm ms', 'cold / s3fs', 'warm / s3fs', 'RSS MiB'],
    results.map((r) => {
      const base = s3fsOf(r.n);
      const ratio = (a: number, b: number | undefined) => (b ? (a / b).toFixed(2) : '-');
      return [r.client, String(r.n), fmtMs(r.coldMs), fmtMs(r.warmMs), ratio(r.coldMs, base?.coldMs), ratio(r.warmMs, base?.warmMs), r.rssMiB.toFixed(1)];
    }),
  ));
  const at2000 = results.find((r) => r.client === 'rclone' && r.n === 2000);
  if (at2000 && s3fsOf(2000)) {
    const ratio = at2000.coldMs / s3fsOf(2000)!.coldMs;
    console.log(`\ntarget (issue 19): cold listing of 2 000 objects <= ${TARGET_COLD_RATIO}x s3fs: rclone ${ratio.toFixed(2)}x ${ratio <= TARGET_COLD_RATIO ? 'met' : 'MISSED'} (raw clients; the plugin's own run comes with the client)`);
  }
  await writeJsonReport(values.out, { meta: runMeta(started), runs, results });
}

// Only when run as a script: bench/clients.ts imports the helpers above.
if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) runBench(main);
