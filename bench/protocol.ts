// Protocol benchmark: the same client, the way dockerd talks, against ossnas (dist/main.js),
// rclone's Docker plugin (the anchor) and a bare node:http server (the floor), each on a private
// unix socket in a temporary directory, for each N. Prints a table per N and writes JSON.
//
//   npm run bench -- --n 100,1000,10000     (the default N)
//   npm run bench -- --quick                (N=100 only, well under a minute)
//   options: --reads 2000 (calls per Get/Path phase)  --servers ossnas,ossnas-keys,rclone,floor
//            --out .cache/bench-protocol.json
// Needs `npm run build` first (ossnas runs from dist/) and rclone (apt-get install -y rclone).
// No root needed and no Docker: nothing is ever mounted (no Mount call is made).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { checkBuild, runMeta } from './build.js';
import { BenchClient, CONCURRENCY, phase, shuffled, type Phase } from './client.js';
import { dirBytes, mountsBelow, type Launcher } from './process.js';
import { floor } from './servers/floor.js';
import { ossnas, ossnasKeys, REPO_ROOT } from './servers/ossnas.js';
import { rclone } from './servers/rclone.js';
import { formatScaling, formatTable, type ServerResult } from './table.js';

const LAUNCHERS: Record<string, Launcher> = { ossnas, 'ossnas-keys': ossnasKeys, rclone, floor };
const CAPABILITIES_CALLS = 1000;
/** Calls before any measurement, so that each server is measured warm, as a long-running plugin is. */
const WARMUP_CALLS = 2000;
const WARMUP_VOLUMES = 100;
/**
 * Get and Path each, at concurrency 16, before they are measured. Most of the JIT gain comes in
 * the first 5000; ossnas's Get kept getting cheaper up to about 20 000 calls (server CPU per Get
 * 160-200 us over its first 10 000 calls, 70-85 us after 20 000), which would make a run long.
 */
const WARMUP_READS = 5000;

const log = (msg: string) => process.stderr.write(`${msg}\n`);
const loadavg = () => os.loadavg().map((l) => Math.round(l * 100) / 100);

/** List is repeated fewer times as it grows: 200 at N=100, 100 at 1000, 10 at 10 000. */
const listRepeats = (n: number) => Math.min(200, Math.max(10, Math.round(100_000 / n)));

async function timed(client: BenchClient, method: string, args?: unknown): Promise<number> {
  return (await client.call(method, args)).ms;
}

/**
 * After each start: Capabilities, and Create + Remove of volumes outside the measured names. A
 * JIT runtime is several times slower for its first few thousand calls (seen with ossnas: Get
 * 2400 ops/s at concurrency 16 over the first 2000 calls, 12 000 after 8000), which would
 * otherwise be measured as ossnas.
 */
async function warmUp(client: BenchClient, launcher: Launcher): Promise<void> {
  await phase(WARMUP_CALLS, CONCURRENCY, () => timed(client, 'VolumeDriver.Capabilities'));
  for (let i = 0; i < WARMUP_VOLUMES; i++) {
    await client.call('VolumeDriver.Create', { Name: `warmup-${i}`, Opts: launcher.createOpts });
    await client.call('VolumeDriver.Remove', { Name: `warmup-${i}` });
  }
}

/** Everything for one server and one N, on a fresh directory that is deleted afterwards. */
async function runServer(launcher: Launcher, n: number, reads: number): Promise<ServerResult> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `ossnas-bench-${launcher.name}-`));
  const tag = `[${launcher.name} N=${n}]`;
  const before = loadavg();
  let server = await launcher.start(dir);
  let client = new BenchClient(server.socket);
  try {
    const emptyListenMs = server.listenMs;
    await client.call('Plugin.Activate');
    await warmUp(client, launcher);

    const names = Array.from({ length: n }, (_, i) => `bench-${String(i).padStart(6, '0')}`);
    const createAll = () => phase(n, 1, (i) => timed(client, 'VolumeDriver.Create', { Name: names[i], Opts: launcher.createOpts }));
    const create = await createAll();
    log(`${tag} create: ${create.opsPerSec.toFixed(1)} ops/s, p99 ${create.p99Ms.toFixed(2)} ms`);

    const order = shuffled(names);
    const byName = (method: string) => (i: number) => timed(client, method, { Name: order[i % n] });
    await phase(WARMUP_READS, CONCURRENCY, byName('VolumeDriver.Get'));
    await phase(WARMUP_READS, CONCURRENCY, byName('VolumeDriver.Path'));
    const getSeq = await phase(reads, 1, byName('VolumeDriver.Get'));
    const getC16 = await phase(reads, CONCURRENCY, byName('VolumeDriver.Get'));
    const pathSeq = await phase(reads, 1, byName('VolumeDriver.Path'));
    const pathC16 = await phase(reads, CONCURRENCY, byName('VolumeDriver.Path'));
    log(`${tag} get/path: ${getSeq.p50Ms.toFixed(3)} / ${pathSeq.p50Ms.toFixed(3)} ms p50`);

    const listed = await client.call('VolumeDriver.List');
    const count = (listed.json.Volumes as unknown[] | undefined)?.length;
    if (count !== n) throw new Error(`${tag} List returned ${count} volumes after ${n} creates`);
    const list = { ...(await phase(listRepeats(n), 1, () => timed(client, 'VolumeDriver.List'))), bytes: listed.bytes };
    const capabilities = await phase(CAPABILITIES_CALLS, 1, () => timed(client, 'VolumeDriver.Capabilities'));

    const peakRssBytes = await server.peakRss();
    const stateBytes = await dirBytes(launcher.stateDir(dir));
    log(`${tag} peak RSS ${(peakRssBytes / 2 ** 20).toFixed(1)} MiB, state ${stateBytes} B`);

    // Restart on the same directory: time to a listening socket, then to a List answered.
    client.close();
    await server.stop();
    server = await launcher.start(dir);
    client = new BenchClient(server.socket);
    const first = await client.call('VolumeDriver.List');
    const restartReadyMs = performance.now() - server.spawnedAt;
    const restartVolumes = (first.json.Volumes as unknown[] | undefined)?.length ?? 0;
    log(`${tag} restart: listening ${server.listenMs.toFixed(1)} ms, List answered ${restartReadyMs.toFixed(1)} ms (${restartVolumes} volumes)`);
    if (!launcher.persistent) await createAll(); // the floor forgot them: recreated, not measured
    await warmUp(client, launcher);

    const remove: Phase = await phase(n, 1, (i) => timed(client, 'VolumeDriver.Remove', { Name: names[i] }));
    const left = (await client.call('VolumeDriver.List')).json.Volumes as unknown[];
    if (left.length !== 0) throw new Error(`${tag} ${left.length} volumes left after removing all`);
    log(`${tag} remove: ${remove.opsPerSec.toFixed(1)} ops/s`);

    return {
      server: launcher.name,
      n,
      create,
      getSeq,
      getC16,
      pathSeq,
      pathC16,
      list,
      capabilities,
      remove,
      peakRssBytes,
      stateBytes,
      emptyListenMs,
      restartListenMs: server.listenMs,
      restartReadyMs,
      restartVolumes,
      loadavg: { before, after: loadavg() },
    };
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${launcher.name} output (last lines):\n${server.output()}`);
  } finally {
    client.close();
    await server.stop();
    const mounted = await mountsBelow(dir);
    if (mounted.length > 0) log(`${tag} left in place, something is mounted below it: ${mounted.join(' ')}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: '100,1000,10000' },
      quick: { type: 'boolean', default: false },
      reads: { type: 'string', default: '2000' },
      servers: { type: 'string', default: 'ossnas,ossnas-keys,rclone,floor' },
      out: { type: 'string', default: path.join('.cache', 'bench-protocol.json') },
    },
  });
  const ns = (values.quick ? '100' : values.n).split(',').map((s) => Number(s.trim()));
  const reads = Number(values.reads);
  if (ns.some((n) => !Number.isInteger(n) || n < 1) || !Number.isInteger(reads) || reads < 1) {
    throw new Error('--n takes positive integers separated by commas, --reads a positive integer');
  }
  const launchers = values.servers.split(',').map((s) => {
    const l = LAUNCHERS[s.trim()];
    if (!l) throw new Error(`unknown server '${s}'; known: ${Object.keys(LAUNCHERS).join(', ')}`);
    return l;
  });
  if (launchers.includes(ossnas) || launchers.includes(ossnasKeys)) await checkBuild();
  const versions = Object.fromEntries(await Promise.all(launchers.map(async (l) => [l.name, await l.version()] as const)));

  const started = new Date();
  const meta = {
    ...runMeta(started),
    versions,
    ns,
    readsPerPhase: reads,
    concurrency: CONCURRENCY,
    volumeOptions: Object.fromEntries(launchers.map((l) => [l.name, l.createOpts])),
  };
  log(`protocol benchmark: N=${ns.join(',')}, ${reads} calls per Get/Path phase, servers ${launchers.map((l) => l.name).join(', ')}`);

  const results: ServerResult[] = [];
  const tables: string[] = [];
  for (const n of ns) {
    const forN: ServerResult[] = [];
    for (const l of launchers) forN.push(await runServer(l, n, reads));
    results.push(...forN);
    tables.push(formatTable(n, forN));
  }

  const header = [
    `Protocol benchmark, ${meta.date}, ossnas ${meta.revision}; ${meta.cpus} x ${meta.cpuModel}`,
    ...Object.values(versions).map((v) => `  ${v}`),
    `  one client as dockerd talks (keep-alive, POST, JSON); ${reads} calls per Get/Path phase; ` +
      `volumes ${launchers.map((l) => `${l.name}: ${Object.entries(l.createOpts).map(([k, v]) => `${k}=${v}`).join(',')}`).join('; ')}`,
    '  durability of an acknowledged Create/Remove: ossnas fsyncs its state file and directory; rclone 1.60 rewrites',
    '  its state file in place without fsync; the floor keeps nothing (docs/development.md)',
    `  time ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s`,
  ];
  process.stdout.write(`${header.join('\n')}\n\n${tables.join('\n\n')}\n\n${formatScaling(results)}\n`);

  const out = path.resolve(REPO_ROOT, values.out);
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify({ meta, results }, null, 2) + '\n');
  log(`\nJSON: ${path.relative(REPO_ROOT, out) || out}`);
}

main().catch((err: unknown) => {
  console.error(`bench: ${(err as Error).message}`);
  process.exit(1);
});
