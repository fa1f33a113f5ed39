// Mount + Unmount of an already-created OSS volume with real s3fs, against s3fs itself: what the
// plugin adds on top of the FUSE client (issue 6: "the plugin's own share ≤ 5 ms").
//
//   node --import tsx bench/mount-cycle.ts              N=10 000 volumes in state, 30 cycles
//   node --import tsx bench/mount-cycle.ts --quick      N=100, 10 cycles, well under a minute
//   options: --n 10000  --cycles 30  --warmup 5  --out .cache/bench-mount-cycle.json
//            --node-options='...'  (NODE_OPTIONS for the plugin, e.g. --node-options='--import HOOK.mjs'; --cpu-prof is refused in NODE_OPTIONS)
// Needs root, `npm run build` first (the plugin runs from dist/ as a plain host process) and
// Debian's s3fs. The S3 server is s3rver in a child process of its own (bench/fuse-host.ts).
//
// Each cycle is a Mount then an Unmount of one volume (a different one each cycle) with a new
// mount ID, timed in the client; interleaved with it, a raw cycle: s3fs spawned by this script
// with the argv the plugin gave its own client (read from /proc), timed from spawn until the
// mount is in /proc/self/mountinfo and statfs answers, then `umount` until the client exited.
// The plugin's share is median(plugin Mount+Unmount) - median(raw mount+unmount).
import { spawn, execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, statfs, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { findMount } from '../src/host/mountinfo.js';
import { finishPlugin, startPluginInTempDir, writeProfile, type PluginProcess } from '../test/helpers/plugin-process.js';
import { checkBuild, runMeta } from './build.js';
import { BenchClient, percentile, phase, shuffled } from './client.js';
import { startS3, type S3Server } from '../test/helpers/s3.js';
import { Cleanup, clientArgv, fmtMs, forceCleanBelow, log, logPluginTail, mountId, requireRoot, runBench, sleep, textTable, writeJsonReport } from './fuse-host.js';

const BUCKET = 'bench';
const FUSE_SUPER_MAGIC = 0x65735546;
/** The PATH the plugin gives its FUSE clients (src/backends/oss/index.ts). */
const CLIENT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const execFileP = promisify(execFile);
const loadavg = () => os.loadavg().map((l) => Math.round(l * 100) / 100);

interface Cycle {
  volume: string;
  mountMs: number;
  unmountMs: number;
  /** Raw cycles: how long the spawn() call itself took (fork + exec from this Node process). */
  spawnMs?: number;
}

interface Stats {
  p50: number;
  p99: number;
  min: number;
  max: number;
}

function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: percentile(s, 0.5), p99: percentile(s, 0.99), min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN };
}

async function isFuseMountedAt(target: string): Promise<boolean> {
  return (await findMount(target))?.fsType.startsWith('fuse') ?? false;
}

/** One Mount + Unmount through the plugin, each timed in the client. */
async function pluginCycle(client: BenchClient, plugin: PluginProcess, volume: string, id: string): Promise<Cycle> {
  const m = await client.call('VolumeDriver.Mount', { Name: volume, ID: id });
  const mp = String(m.json.Mountpoint);
  if (mp !== path.join(plugin.mountRoot, volume) || !(await isFuseMountedAt(mp))) throw new Error(`Mount of ${volume}: nothing mounted at ${mp}`);
  const u = await client.call('VolumeDriver.Unmount', { Name: volume, ID: id });
  if (await findMount(mp)) throw new Error(`Unmount of ${volume}: still mounted`);
  return { volume, mountMs: m.ms, unmountMs: u.ms };
}

/**
 * The same client, started by us with the plugin's argv: spawn until the mount is listed and
 * statfs answers from FUSE (polled every millisecond), then umount until the client exited.
 */
async function rawCycle(args: string[], target: string, home: string): Promise<Cycle> {
  const t0 = performance.now();
  const child = spawn('s3fs', args, { env: { PATH: CLIENT_PATH, HOME: home }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const spawnMs = performance.now() - t0;
  let out = '';
  child.stdout.on('data', (c) => (out = (out + String(c)).slice(-4096)));
  child.stderr.on('data', (c) => (out = (out + String(c)).slice(-4096)));
  let done = false;
  const exited = new Promise<void>((r) => child.once('exit', () => ((done = true), r())));
  try {
    for (;;) {
      if (done) throw new Error(`raw s3fs exited before mounting: ${out.trim()}`);
      if (performance.now() - t0 > 20_000) throw new Error('raw s3fs did not mount within 20 s');
      if (await isFuseMountedAt(target)) {
        const st = await statfs(target).catch(() => undefined);
        if (st?.type === FUSE_SUPER_MAGIC) break;
      }
      await sleep(1);
    }
    const mountMs = performance.now() - t0;
    const t1 = performance.now();
    await execFileP('umount', [target]);
    await exited;
    return { volume: '(raw)', mountMs, unmountMs: performance.now() - t1, spawnMs };
  } catch (err) {
    if (!done) child.kill('SIGKILL');
    throw err;
  }
}

async function s3fsVersion(): Promise<string> {
  const { stdout } = await execFileP('s3fs', ['--version']).catch(() => ({ stdout: 'unknown' }));
  return stdout.split('\n')[0]!.trim();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: '10000' },
      cycles: { type: 'string', default: '30' },
      warmup: { type: 'string', default: '5' },
      quick: { type: 'boolean', default: false },
      out: { type: 'string', default: path.join('.cache', 'bench-mount-cycle.json') },
      'node-options': { type: 'string', default: '' },
    },
  });
  const n = Number(values.quick ? 100 : values.n);
  const cycles = Number(values.quick ? 10 : values.cycles);
  const warmup = Number(values.quick ? 3 : values.warmup);
  if (![n, cycles].every((x) => Number.isInteger(x) && x >= 1) || !Number.isInteger(warmup) || warmup < 1 || cycles + warmup > n) {
    throw new Error('--n, --cycles and --warmup take positive integers, with cycles + warmup <= n');
  }
  requireRoot('bench/mount-cycle.ts');
  await checkBuild();

  const started = new Date();
  const cleanup = new Cleanup();
  let s3: S3Server | undefined;
  let plugin: PluginProcess | undefined;
  let client: BenchClient | undefined;
  const rawDir = await mkdtemp(path.join(os.tmpdir(), 'ossnas-bench-raw-'));
  cleanup.add('raw directory', async () => {
    const left = await forceCleanBelow(rawDir);
    if (left.length) log(`cleanup: ${left.join('; ')}`);
    await rm(rawDir, { recursive: true, force: true });
  });
  try {
    const loadBefore = loadavg();
    s3 = await startS3([BUCKET]);
    cleanup.add('s3rver', () => s3!.stop());
    plugin = await startPluginInTempDir({ LOG_LEVEL: 'info', ...(values['node-options'] && { NODE_OPTIONS: values['node-options'] }) });
    cleanup.add('plugin', async () => {
      client?.close();
      await finishPlugin(plugin); // stops it, lazily unmounts what is left below its directory, deletes that
      const left = await forceCleanBelow(plugin!.dir); // and no client of those mounts may outlive them
      if (left.length) log(`cleanup: ${left.join('; ')}`);
    });
    await writeProfile(plugin.credentialsDir, 'local', 'S3RVER', 'S3RVER');
    client = new BenchClient(plugin.socket);
    await client.call('Plugin.Activate');

    const opts = { type: 'oss', bucket: BUCKET, url: s3.url, credentials: 'local' };
    const names = Array.from({ length: n }, (_, i) => `v${String(i).padStart(6, '0')}`);
    const c = client;
    const create = await phase(n, 1, async (i) => (await c.call('VolumeDriver.Create', { Name: names[i], Opts: opts })).ms);
    log(`created ${n} OSS volumes: ${create.opsPerSec.toFixed(0)} ops/s, p99 ${create.p99Ms.toFixed(2)} ms, ${(create.totalMs / 1000).toFixed(1)} s`);

    // Which volumes: a shuffled order, warm-up ones first (never measured).
    const order = shuffled(names);
    const rawTarget = path.join(rawDir, 'mnt');
    const rawPasswd = path.join(rawDir, 'passwd');
    await mkdir(rawTarget, { recursive: true });
    await writeFile(rawPasswd, 'S3RVER:S3RVER\n', { mode: 0o600 });

    // The first Mount also shows the client's argv; the warm-up cycles are not measured.
    const first = await client.call('VolumeDriver.Mount', { Name: order[0], ID: mountId(0, 1) });
    const argv = await clientArgv(String(first.json.Mountpoint), rawTarget, rawPasswd);
    await client.call('VolumeDriver.Unmount', { Name: order[0], ID: mountId(0, 1) });
    for (let i = 1; i < warmup; i++) {
      await pluginCycle(client, plugin, order[i]!, mountId(i, 1));
      await rawCycle(argv.raw, rawTarget, rawDir);
    }
    log(`plugin's client argv: s3fs ${argv.plugin.join(' ')} (environment: ${argv.envKeys.join(', ')})`);

    // Interleaved, alternating which goes first, so that drift in the machine's load hits both.
    const viaPlugin: Cycle[] = [];
    const raw: Cycle[] = [];
    for (let i = 0; i < cycles; i++) {
      const volume = order[warmup + i]!;
      const p = () => pluginCycle(client!, plugin!, volume, mountId(i, 2));
      const r = () => rawCycle(argv.raw, rawTarget, rawDir);
      if (i % 2 === 0) {
        viaPlugin.push(await p());
        raw.push(await r());
      } else {
        raw.push(await r());
        viaPlugin.push(await p());
      }
    }
    const loadAfter = loadavg();

    const sum = (c: Cycle) => c.mountMs + c.unmountMs;
    const s = {
      plugin: { mount: stats(viaPlugin.map((c) => c.mountMs)), unmount: stats(viaPlugin.map((c) => c.unmountMs)), cycle: stats(viaPlugin.map(sum)) },
      raw: { mount: stats(raw.map((c) => c.mountMs)), unmount: stats(raw.map((c) => c.unmountMs)), cycle: stats(raw.map(sum)) },
      pairedDiff: stats(viaPlugin.map((c, i) => sum(c) - sum(raw[i]!))),
      rawSpawn: stats(raw.map((c) => c.spawnMs ?? NaN)),
    };
    const share = s.plugin.cycle.p50 - s.raw.cycle.p50;
    const version = await s3fsVersion();
    const meta = {
      ...runMeta(started),
      node: process.version,
      s3fs: version,
      loadavg: { before: loadBefore, after: loadAfter },
      n,
      cycles,
      warmup,
      createOpsPerSec: create.opsPerSec,
      createTotalMs: create.totalMs,
      clientArgv: argv.plugin,
      rawArgv: argv.raw,
    };
    const row = (label: string, pick: (x: { mount: Stats; unmount: Stats; cycle: Stats }) => number) => [
      label,
      fmtMs(pick(s.plugin)),
      fmtMs(pick(s.raw)),
      fmtMs(pick(s.plugin) - pick(s.raw)),
    ];
    const table = textTable(
      [`N = ${n}, ${cycles} cycles`, 'via plugin', 'raw s3fs', 'difference'],
      [
        row('Mount p50 ms', (x) => x.mount.p50),
        row('Mount p99 ms', (x) => x.mount.p99),
        row('Unmount p50 ms', (x) => x.unmount.p50),
        row('Unmount p99 ms', (x) => x.unmount.p99),
        row('Mount+Unmount p50 ms', (x) => x.cycle.p50),
        row('Mount+Unmount p99 ms', (x) => x.cycle.p99),
        ['Paired difference p50 / max ms', '', '', `${fmtMs(s.pairedDiff.p50)} / ${fmtMs(s.pairedDiff.max)}`],
      ],
    );
    const header = [
      `Mount+Unmount benchmark, ${meta.date}, ossnas ${meta.revision}; ${meta.cpus} x ${meta.cpuModel}; node ${meta.node}`,
      `  ${version}; s3rver in a process of its own; load average ${loadBefore.join(' ')} before, ${loadAfter.join(' ')} after`,
      `  ${n} OSS volumes created through the API first: ${create.opsPerSec.toFixed(0)} ops/s (${(create.totalMs / 1000).toFixed(1)} s)`,
      `  raw: s3fs ${argv.raw.join(' ')}`,
      `  raw: the spawn() call alone (fork + exec from this Node process) p50 ${fmtMs(s.rawSpawn.p50)} ms`,
      `  p99 of ${cycles} samples${cycles < 100 ? ' is their maximum' : ''}`,
    ];
    const verdict = `plugin's share (median Mount+Unmount via plugin - median raw): ${fmtMs(share)} ms; issue 6 target <= 5 ms (rclone: ~40 ms per call at 10 000 volumes)`;
    process.stdout.write(`${header.join('\n')}\n\n${table}\n\n${verdict}\n`);

    await writeJsonReport(values.out, { meta, summary: { ...s, shareMs: share }, viaPlugin, raw });
  } catch (err) {
    logPluginTail(plugin);
    throw err;
  } finally {
    await cleanup.run();
  }
}

runBench(main);
