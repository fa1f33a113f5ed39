// One FUSE client per bucket (OSSNAS_SHARE_CLIENTS=true) against a client per volume: the memory
// that N mounted volumes of one bucket cost, and the Mount latency of a bucket's second and later
// volumes (a bind mount, not a client start). Issue 18: "200 mounted volumes on one bucket use
// <= 0.2x the memory of 200 clients".
//
//   node --import tsx bench/shared-clients.ts              N=200
//   node --import tsx bench/shared-clients.ts --quick      N=20, well under a minute
//   options: --n 200  --out .cache/bench-shared-clients.json
// Needs root, `npm run build` first (the plugin runs from dist/ as a plain host process) and
// Debian's s3fs. The S3 server is s3rver in a child process of its own.
//
// Each mode runs on a plugin of its own: N volumes of one bucket, each its own path (/v/I), are
// created, then mounted one after another (each Mount timed in the client: the first alone, the
// others as "later"), a 4 KiB file is written and read back through each, and then the memory
// of every s3fs serving them is read: PSS (each shared page counted once over the processes that
// share it: the fair sum for N copies of one program) and RSS, from /proc/PID/smaps_rollup.
// The separate mode runs first: its files make the paths exist for the shared one, as the paths
// of volumes in use hold data (a missing path is created through the shared client, which costs
// S3 requests that a client of its own does not make).
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { finishPlugin, startPluginInTempDir, writeProfile, type PluginProcess } from '../test/helpers/plugin-process.js';
import { startS3, type S3Server } from '../test/helpers/s3.js';
import { checkBuild, runMeta } from './build.js';
import { BenchClient, percentile } from './client.js';
import { Cleanup, fmtMs, forceCleanBelow, log, logPluginTail, memoryKb, mountId, requireRoot, runBench, s3fsClientsBelow, sleep, textTable, writeJsonReport } from './fuse-host.js';

const BUCKET = 'bench';
const FILE_BYTES = 4096;
const UNMOUNT_CONCURRENCY = 8;
/** Target of issue 18: shared clients' memory over separate clients'. */
const TARGET_RATIO = 0.2;

type Mode = 'separate' | 'shared';

interface ModeResult {
  mode: Mode;
  n: number;
  clients: number;
  /** Sum over the clients, MiB */
  pssMiB: number;
  rssMiB: number;
  /** The plugin process itself, MiB */
  pluginRssMiB: number;
  firstMountMs: number;
  laterMount: { p50: number; p99: number };
  /** Every Mount, one after another */
  allMountedMs: number;
}

async function runMode(mode: Mode, n: number, s3: S3Server, cleanup: Cleanup): Promise<ModeResult> {
  let plugin: PluginProcess | undefined;
  const names = Array.from({ length: n }, (_, i) => `${mode}-${i}`);
  const mounted: boolean[] = [];
  try {
    plugin = await startPluginInTempDir({ OSSNAS_SHARE_CLIENTS: String(mode === 'shared'), LOG_LEVEL: 'warn' });
    const dir = plugin.dir;
    const undo = async () => {
      const c = new BenchClient(plugin!.socket);
      for (let i = 0; i < names.length; i += UNMOUNT_CONCURRENCY) {
        await Promise.all(
          names.slice(i, i + UNMOUNT_CONCURRENCY).map((name, j) => (mounted[i + j] ? c.call('VolumeDriver.Unmount', { Name: name, ID: mountId(i + j) }) : undefined)),
        );
      }
      c.close();
      await finishPlugin(plugin);
      const left = await forceCleanBelow(dir);
      if (left.length) log(`cleanup (${mode}): ${left.slice(0, 5).join('; ')}`);
    };
    cleanup.add(`${mode} plugin`, undo);
    await writeProfile(plugin.credentialsDir, 'local', 'S3RVER', 'S3RVER');
    const client = new BenchClient(plugin.socket);
    const opts = { type: 'oss', bucket: BUCKET, url: s3.url, credentials: 'local' };
    for (const [i, name] of names.entries()) await client.call('VolumeDriver.Create', { Name: name, Opts: { ...opts, path: `/v/${i}` } });

    const times: number[] = [];
    const t0 = performance.now();
    for (const [i, name] of names.entries()) {
      const t = performance.now();
      const r = await client.call('VolumeDriver.Mount', { Name: name, ID: mountId(i) });
      times.push(performance.now() - t);
      if (r.json.Err) throw new Error(`Mount ${name}: ${String(r.json.Err)}`);
      mounted[i] = true;
    }
    const allMountedMs = performance.now() - t0;
    for (const name of names) {
      const file = path.join(plugin.mountRoot, name, 'data.bin');
      await writeFile(file, Buffer.alloc(FILE_BYTES, 7));
      if ((await readFile(file)).length !== FILE_BYTES) throw new Error(`${file} did not read back`);
    }
    await sleep(500); // uploads of the files finish
    const pids = await s3fsClientsBelow(dir);
    const mem = await Promise.all(pids.map(memoryKb));
    const pluginMem = await memoryKb(plugin.child.pid!);
    client.close();
    const later = times.slice(1).sort((a, b) => a - b);
    const result: ModeResult = {
      mode,
      n,
      clients: pids.length,
      pssMiB: mem.reduce((s, m) => s + m.pss, 0) / 1024,
      rssMiB: mem.reduce((s, m) => s + m.rss, 0) / 1024,
      pluginRssMiB: pluginMem.rss / 1024,
      firstMountMs: times[0]!,
      laterMount: { p50: percentile(later, 0.5), p99: percentile(later, 0.99) },
      allMountedMs,
    };
    log(`[${mode}] ${result.clients} clients, PSS ${result.pssMiB.toFixed(1)} MiB, RSS ${result.rssMiB.toFixed(1)} MiB; Mount: first ${fmtMs(result.firstMountMs)} ms, later p50 ${fmtMs(result.laterMount.p50)} ms`);
    return result;
  } catch (err) {
    logPluginTail(plugin);
    throw err;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { quick: { type: 'boolean', default: false }, n: { type: 'string' }, out: { type: 'string', default: '.cache/bench-shared-clients.json' } },
  });
  requireRoot('bench/shared-clients.ts');
  await checkBuild();
  const started = new Date();
  const n = Number(values.n ?? (values.quick ? 20 : 200));
  const cleanup = new Cleanup();
  try {
    const s3 = await startS3([BUCKET]);
    cleanup.add('S3 server', () => s3.stop());
    const separate = await runMode('separate', n, s3, cleanup);
    const shared = await runMode('shared', n, s3, cleanup);
    await cleanup.run(); // the plugins' volumes unmount before the report; nothing is left mounted

    const ratio = shared.pssMiB / separate.pssMiB;
    const latency = shared.laterMount.p50 / separate.laterMount.p50;
    const meta = { ...runMeta(started), node: process.version, n };
    const rows = [separate, shared].map((r) => [
      r.mode,
      String(r.clients),
      r.pssMiB.toFixed(1),
      r.rssMiB.toFixed(1),
      (r.pssMiB / r.n).toFixed(2),
      r.pluginRssMiB.toFixed(0),
      fmtMs(r.firstMountMs),
      fmtMs(r.laterMount.p50),
      fmtMs(r.laterMount.p99),
      (r.allMountedMs / 1000).toFixed(1),
    ]);
    process.stdout.write(
      [
        `Shared clients benchmark, ${meta.date}, ossnas ${meta.revision}; ${meta.cpus} x ${meta.cpuModel}; node ${meta.node}`,
        `  ${n} OSS volumes of one bucket, paths /v/I, mounted one after another; a ${FILE_BYTES}-byte file written and read back through each; then the memory of every s3fs`,
        '',
        textTable(
          ['mode', 'clients', 'PSS MiB', 'RSS MiB', 'PSS MiB/volume', 'plugin RSS MiB', 'first Mount ms', 'later Mount p50', 'p99', 'all mounted s'],
          rows,
        ),
        '',
        `clients' memory, shared over separate (PSS): ${ratio.toFixed(3)} (issue 18 target: <= ${TARGET_RATIO} at N = 200)`,
        `Mount of a bucket's later volumes, shared over separate (p50): ${latency.toFixed(2)}`,
        '',
      ].join('\n'),
    );
    await writeJsonReport(values.out, { meta, results: [separate, shared], ratios: { memory: ratio, laterMountP50: latency } });
  } finally {
    await cleanup.run();
  }
}

runBench(main);
