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
// mount ID, timed in the client; interleaved with it, a raw cycle: s3fs started by this script
// (through the plugin's spawn helper, as the plugin starts it, so that neither side forks a Node
// process) with the argv the plugin gave its own client (read from /proc), timed from spawn until the
// mount is in /proc/self/mountinfo and statfs answers, then `umount` until the client exited.
// The plugin's share is median(plugin Mount+Unmount) - median(raw mount+unmount).
//
// Then 16 at once (issue 18): 16 different volumes mounted by 16 concurrent Mounts, then unmounted
// the same way, against 16 raw s3fs started at once by this script. While they run, the plugin's
// own event-loop delay (monitorEventLoopDelay, read through its metrics listener: every read
// starts a new window) and the latency of a Capabilities call sent every 5 ms, which is what
// dockerd feels meanwhile; both also over a quiet window of the same length, for comparison.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, statfs, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { findMount } from '../src/host/mountinfo.js';
import { startProcess } from '../src/host/spawner.js';
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
  /** Raw cycles: from the request to the spawn helper until it said the client started. */
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

/** A raw s3fs mount made by this script, and how to undo it (umount, then the client's exit). */
interface RawMount {
  mountMs: number;
  spawnMs: number;
  unmount(): Promise<number>;
}

/**
 * The same client, started by us with the plugin's argv: spawn until the mount is listed and
 * statfs answers from FUSE (polled every millisecond).
 */
async function rawMount(args: string[], target: string, home: string): Promise<RawMount> {
  const t0 = performance.now();
  // Started as the plugin starts its own (src/host/spawner.ts's helper): neither side pays for a
  // fork of a Node process, which under load cost the raw side what it used to cost the plugin.
  let out = '';
  const child = await startProcess('s3fs', args, {
    env: { PATH: CLIENT_PATH, HOME: home },
    detached: true,
    onOutput: (_s, c) => (out = (out + c).slice(-4096)),
  });
  const spawnMs = performance.now() - t0;
  let done = false;
  const exited = child.exited.then(() => void (done = true));
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
  } catch (err) {
    if (!done) child.kill('SIGKILL');
    throw err;
  }
  const mountMs = performance.now() - t0;
  return {
    mountMs,
    spawnMs,
    async unmount() {
      const t1 = performance.now();
      await execFileP('umount', [target]);
      await exited;
      return performance.now() - t1;
    },
  };
}

/** A raw mount, then its umount until the client exited. */
async function rawCycle(args: string[], target: string, home: string): Promise<Cycle> {
  const r = await rawMount(args, target, home);
  return { volume: '(raw)', mountMs: r.mountMs, unmountMs: await r.unmount(), spawnMs: r.spawnMs };
}

async function s3fsVersion(): Promise<string> {
  const { stdout } = await execFileP('s3fs', ['--version']).catch(() => ({ stdout: 'unknown' }));
  return stdout.split('\n')[0]!.trim();
}

/** How many volumes are mounted at once in the concurrent phase (issue 18: "at 16 concurrent mounts"). */
const CONCURRENT = 16;
/** How often the probe calls Capabilities while the concurrent phase runs. */
const PROBE_EVERY_MS = 5;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

interface LoopDelay {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** The plugin's event-loop delay since the previous read (prom-client resets its histogram at each scrape). */
async function loopDelay(port: number): Promise<LoopDelay> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const get = (name: string) => {
    const m = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text);
    if (!m) throw new Error(`the plugin's metrics have no ${name}`);
    return Number(m[1]) * 1000;
  };
  return { p50Ms: get('nodejs_eventloop_lag_p50_seconds'), p99Ms: get('nodejs_eventloop_lag_p99_seconds'), maxMs: get('nodejs_eventloop_lag_max_seconds') };
}

/** Capabilities every PROBE_EVERY_MS on a connection of its own until `stop`, each call's latency. */
async function probeWhile(socket: string, stop: { now: boolean }): Promise<number[]> {
  const probe = new BenchClient(socket);
  const ms: number[] = [];
  try {
    while (!stop.now) {
      ms.push((await probe.call('VolumeDriver.Capabilities')).ms);
      await sleep(PROBE_EVERY_MS);
    }
  } finally {
    probe.close();
  }
  return ms;
}

interface Window {
  wallMs: number;
  loop: LoopDelay;
  probe: Stats;
}

interface Concurrent {
  count: number;
  /** Quiet: nothing but the probe, for as long as the plugin's Mounts took. */
  quiet: Window;
  mount: Window & { calls: Stats };
  unmount: Window & { calls: Stats };
  raw: { mountWallMs: number; unmountWallMs: number };
}

/** Runs `work` while probing, and reads the plugin's event-loop delay over exactly that window. */
async function observed<T>(plugin: PluginProcess, port: number, work: () => Promise<T>): Promise<{ result: T; window: Window }> {
  await loopDelay(port); // starts the window
  const stop = { now: false };
  const probing = probeWhile(plugin.socket, stop);
  const t0 = performance.now();
  const result = await work().finally(() => (stop.now = true));
  const wallMs = performance.now() - t0;
  const [loop, probe] = [await loopDelay(port), await probing];
  return { result, window: { wallMs, loop, probe: stats(probe) } };
}

async function concurrentPhase(o: { client: BenchClient; plugin: PluginProcess; volumes: string[]; rawArgs: string[]; rawDir: string; metricsPort: number }): Promise<Concurrent> {
  const { client, plugin, volumes, metricsPort } = o;
  const id = (i: number) => mountId(i, 3);
  const mount = await observed(plugin, metricsPort, () =>
    Promise.all(
      volumes.map(async (v, i) => {
        const m = await client.call('VolumeDriver.Mount', { Name: v, ID: id(i) });
        if (m.json.Err || !(await isFuseMountedAt(String(m.json.Mountpoint)))) throw new Error(`concurrent Mount of ${v}: ${JSON.stringify(m.json)}`);
        return m.ms;
      }),
    ),
  );
  const unmount = await observed(plugin, metricsPort, () =>
    Promise.all(
      volumes.map(async (v, i) => {
        const u = await client.call('VolumeDriver.Unmount', { Name: v, ID: id(i) });
        if (u.json.Err) throw new Error(`concurrent Unmount of ${v}: ${String(u.json.Err)}`);
        return u.ms;
      }),
    ),
  );
  const quiet = await observed(plugin, metricsPort, () => sleep(mount.window.wallMs));

  // The raw side: as many s3fs started at once by this script, each on its own mountpoint.
  const targets = volumes.map((_, i) => path.join(o.rawDir, `c${i}`));
  for (const t of targets) await mkdir(t, { recursive: true });
  const rawArgs = (t: string) => o.rawArgs.map((a) => (a === path.join(o.rawDir, 'mnt') ? t : a));
  const t0 = performance.now();
  const started = await Promise.all(targets.map((t) => rawMount(rawArgs(t), t, o.rawDir)));
  const mountWallMs = performance.now() - t0;
  const t1 = performance.now();
  await Promise.all(started.map((r) => r.unmount()));
  const unmountWallMs = performance.now() - t1;

  return {
    count: volumes.length,
    quiet: quiet.window,
    mount: { ...mount.window, calls: stats(mount.result) },
    unmount: { ...unmount.window, calls: stats(unmount.result) },
    raw: { mountWallMs, unmountWallMs },
  };
}

function formatConcurrent(c: Concurrent): string {
  const row = (label: string, w: Window) => [label, fmtMs(w.wallMs), fmtMs(w.loop.p99Ms), fmtMs(w.loop.maxMs), fmtMs(w.probe.p99), fmtMs(w.probe.max)];
  const table = textTable(
    [`${c.count} at once`, 'wall ms', 'loop delay p99', 'loop delay max', 'Capabilities p99', 'Capabilities max'],
    [row('quiet (probe only)', c.quiet), row(`${c.count} Mounts`, c.mount), row(`${c.count} Unmounts`, c.unmount)],
  );
  return [
    table,
    `${c.count} Mounts at once: all done in ${fmtMs(c.mount.wallMs)} ms (each call p50 ${fmtMs(c.mount.calls.p50)}, max ${fmtMs(c.mount.calls.max)}); ` +
      `${c.count} raw s3fs at once: ${fmtMs(c.raw.mountWallMs)} ms; ratio ${(c.mount.wallMs / c.raw.mountWallMs).toFixed(2)}`,
    `${c.count} Unmounts at once: ${fmtMs(c.unmount.wallMs)} ms; raw umounts at once (to the clients' exit): ${fmtMs(c.raw.unmountWallMs)} ms`,
    `event-loop delay p99 while ${c.count} clients mount: ${fmtMs(c.mount.loop.p99Ms)} ms (quiet: ${fmtMs(c.quiet.loop.p99Ms)} ms)`,
  ].join('\n');
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
  if (![n, cycles].every((x) => Number.isInteger(x) && x >= 1) || !Number.isInteger(warmup) || warmup < 1 || cycles + warmup + CONCURRENT > n) {
    throw new Error(`--n, --cycles and --warmup take positive integers, with cycles + warmup + ${CONCURRENT} <= n`);
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
    const metricsPort = await freePort();
    plugin = await startPluginInTempDir({
      LOG_LEVEL: 'info',
      OSSNAS_METRICS_ADDRESS: `127.0.0.1:${metricsPort}`,
      ...(values['node-options'] && { NODE_OPTIONS: values['node-options'] }),
    });
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
    const together = await concurrentPhase({
      client,
      plugin,
      volumes: order.slice(warmup + cycles, warmup + cycles + CONCURRENT),
      rawArgs: argv.raw,
      rawDir,
      metricsPort,
    });
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
      `  raw: s3fs started by the plugin's own spawn helper, as the plugin starts it (request to pid: p50 ${fmtMs(s.rawSpawn.p50)} ms)`,
      `  p99 of ${cycles} samples${cycles < 100 ? ' is their maximum' : ''}`,
    ];
    const verdict = `plugin's share (median Mount+Unmount via plugin - median raw): ${fmtMs(share)} ms; issue 6 target <= 5 ms (rclone: ~40 ms per call at 10 000 volumes)`;
    process.stdout.write(`${header.join('\n')}\n\n${table}\n\n${verdict}\n`);

    process.stdout.write(`\n${formatConcurrent(together)}\n`);

    await writeJsonReport(values.out, { meta, summary: { ...s, shareMs: share, concurrent: together }, viaPlugin, raw });
  } catch (err) {
    logPluginTail(plugin);
    throw err;
  } finally {
    await cleanup.run();
  }
}

runBench(main);
