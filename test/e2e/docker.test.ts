// The real plugin (rootfs.build.sh -> docker plugin create) in the real dockerd, with containers
// writing and reading an S3 bucket (s3rver) through ossnas volumes. Needs root and a running
// dockerd; CI starts one before the tests.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readMounts } from '../../src/host/mountinfo.js';
import {
  CONTAINER_LABEL,
  docker,
  dockerdLogPath,
  dockerResult,
  ensureBusyboxImage,
  installPlugin,
  isMountpoint,
  median,
  processesWith,
  removePlugin,
  requireDocker,
  TEST_IMAGE,
  timings,
  volumeExists,
  waitFor,
  type InstalledPlugin,
} from '../helpers/docker.js';
import { freePort, rootSkipReason, tempDir } from '../helpers/env.js';
import { scrapeMetrics } from '../helpers/metrics.js';
import { startS3, type S3Server } from '../helpers/s3.js';

const PLUGIN = 'ossnas-e2e';
const BUCKET = 'e2e-bucket';
const PROFILE = 'e2e-profile';
const RUN = randomBytes(3).toString('hex');
const VOL = `ossnas-e2e-${RUN}-data`;
const INLINE_VOL = `ossnas-e2e-${RUN}-inline`;
// The S3 server checks signatures: the profile's key pair is its default S3RVER:S3RVER, and the
// inline volume's secret, easy to find wherever it leaks, comes with a key id of its own.
const INLINE_KEY_ID = 'OSSNASE2EINLINE';
const INLINE_SECRET = `ossnasE2eSecret${RUN}XyZ`;

type Status = Record<string, unknown>;

async function inspectVolume(name: string): Promise<{ Driver: string; Mountpoint: string; Status?: Status; Options?: Record<string, string> }> {
  const out = JSON.parse(await docker(['volume', 'inspect', name])) as unknown[];
  assert.equal(out.length, 1);
  return out[0] as never;
}

function mountArg(volume: string): string {
  return `type=volume,src=${volume},dst=/data,volume-driver=${PLUGIN}`;
}

/** `docker run --rm` of the test image, labelled for cleanup; returns the result (never throws). */
function run(args: string[], cmd: string, timeout = 120_000) {
  return dockerResult(['run', '--rm', '--label', `${CONTAINER_LABEL}=${PLUGIN}`, ...args, TEST_IMAGE, 'sh', '-c', cmd], { timeout });
}

async function runOk(args: string[], cmd: string): Promise<string> {
  const r = await run(args, cmd);
  assert.equal(r.exitCode, 0, `docker run ${args.join(' ')} sh -c '${cmd}' failed: ${r.stderr}`);
  return r.stdout;
}

describe('ossnas managed plugin in dockerd', { skip: rootSkipReason(), timeout: 600_000 }, () => {
  let s3: S3Server;
  let plugin: InstalledPlugin | undefined;
  let logPath: string | undefined;
  let logStart = 0;
  let metricsPort = 0;
  let stateDir = '';
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    await requireDocker();
    await ensureBusyboxImage();
    logPath = await dockerdLogPath();
    if (logPath) logStart = (await stat(logPath)).size;

    s3 = await startS3([BUCKET], { keys: { S3RVER: 'S3RVER', [INLINE_KEY_ID]: INLINE_SECRET } });
    cleanups.push(() => s3.stop());
    const state = await tempDir('ossnas-e2e-state-');
    stateDir = state.dir;
    const creds = await tempDir('ossnas-e2e-creds-');
    cleanups.push(state.cleanup, creds.cleanup);
    await writeFile(path.join(creds.dir, PROFILE), 'akId=S3RVER\nakSecret=S3RVER\n', { mode: 0o600 });

    // Plugin-wide defaults, as an operator sets them so that compose files name only a bucket;
    // and metrics, which the plugin serves on the host's network.
    metricsPort = await freePort();
    const env = {
      LOG_LEVEL: 'debug',
      OSSNAS_DEFAULT_URL: s3.url,
      OSSNAS_DEFAULT_CREDENTIALS: PROFILE,
      OSSNAS_METRICS_ADDRESS: `127.0.0.1:${metricsPort}`,
    };
    plugin = await installPlugin(PLUGIN, { stateDir: state.dir, credentialsDir: creds.dir, env });
  });

  after(async () => {
    const errors: unknown[] = [];
    // The plugin first (it holds mounts of the S3 server and binds of the temp dirs).
    if (plugin) await plugin.cleanup().catch((e: unknown) => errors.push(e));
    else await installCleanupFallback().catch((e: unknown) => errors.push(e));
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => errors.push(e));
    if (errors.length) throw new AggregateError(errors, 'e2e cleanup failed');
  });

  it('creates an oss volume from a credentials profile', async () => {
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`,
      '-o', `credentials=${PROFILE}`, VOL]);
    const v = await inspectVolume(VOL);
    assert.match(v.Driver, new RegExp(`^${PLUGIN}(:latest)?$`));
    assert.equal(v.Mountpoint, `/mnt/volumes/${VOL}`);
    assert.equal(v.Status?.type, 'oss');
    assert.equal(v.Status?.bucket, BUCKET);
    assert.equal(v.Status?.url, s3.url);
    assert.equal(v.Status?.credentials, `profile ${PROFILE}`);
    assert.equal(v.Status?.mounted, false);
    assert.equal(v.Status?.refs, 0);
  });

  it('a compose-style volume names only its bucket: the plugin defaults give endpoint and profile, and no secret is in its options', async () => {
    const vol = `${VOL}-compose`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', 'path=/compose', vol]);
    try {
      const v = await inspectVolume(vol);
      assert.deepEqual(v.Options, { type: 'oss', bucket: BUCKET, path: '/compose' }, 'what Docker keeps and shows holds no secret');
      assert.deepEqual([v.Status?.url, v.Status?.credentials], [s3.url, `profile ${PROFILE}`]);
      assert.equal(await runOk(['--mount', mountArg(vol)], 'echo composed > /data/c.txt && cat /data/c.txt'), 'composed');
      assert.equal(await s3.getObject(BUCKET, 'compose/c.txt'), 'composed\n');
    } finally {
      await docker(['volume', 'rm', vol]);
    }
  });

  it('a container writes a file and it lands in the bucket', async () => {
    await runOk(['--mount', mountArg(VOL)], 'echo hello > /data/hello.txt');
    assert.equal(await s3.getObject(BUCKET, 'hello.txt'), 'hello\n');
  });

  it('a second container reads it back', async () => {
    assert.equal(await runOk(['--mount', mountArg(VOL)], 'cat /data/hello.txt'), 'hello');
  });

  it('two containers share the mount: the first to stop does not unmount it for the other', async (t) => {
    const a = `ossnas-e2e-${RUN}-a`;
    cleanups.push(() => dockerResult(['rm', '-f', a]));
    const idleSince = (await inspectVolume(VOL)).Status?.since;
    const t0 = Date.now();
    await docker(['run', '-d', '--name', a, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg(VOL), TEST_IMAGE,
      'sh', '-c', 'sleep 600']);
    try {
      let v = await inspectVolume(VOL);
      assert.equal(v.Status?.mounted, true);
      assert.equal(v.Status?.refs, 1);
      assert.equal(v.Status?.health, 'ok');
      // since: when health last changed, here when the mount started.
      const since = String(v.Status?.since);
      assert.equal(new Date(since).toISOString(), since, `since is not an ISO time: ${since}`);
      assert.ok(Date.parse(since) >= t0 && since !== idleSince, `since ${since} (idle since ${String(idleSince)}) is not when A's mount started`);

      await runOk(['--mount', mountArg(VOL)], 'echo from-b > /data/b.txt && ls /data');
      v = await inspectVolume(VOL);
      assert.equal(v.Status?.mounted, true, 'B exiting must not unmount what A still uses');
      assert.equal(v.Status?.refs, 1);
      assert.equal(v.Status?.since, since, 'health stayed ok, so since stays');
      assert.equal(await docker(['exec', a, 'cat', '/data/b.txt']), 'from-b');
      assert.equal(await docker(['exec', a, 'cat', '/data/hello.txt']), 'hello');
      assert.equal(await s3.getObject(BUCKET, 'b.txt'), 'from-b\n');

      // busybox sleep as PID 1 ignores SIGTERM: stop with a short grace, then SIGKILL.
      await docker(['stop', '-t', '1', a]);
      const status = await waitFor(
        'refs 0 and mounted false after A stopped',
        async () => {
          const s = (await inspectVolume(VOL)).Status;
          return s?.refs === 0 && s?.mounted === false ? s : undefined;
        },
        15_000,
      );
      t.diagnostic(`Status after both stopped: ${JSON.stringify(status)}`);
      assert.equal(status.health, 'idle');
      assert.ok(Date.parse(String(status.since)) > Date.parse(since), 'since moves when the mount ends');
      assert.equal(await isMountpoint(path.join(plugin!.propagatedMount, VOL)), false);
    } finally {
      await docker(['rm', '-f', a]);
    }
  });

  it('serves metrics on the host network, counting the calls of a docker run', async () => {
    const was = await scrapeMetrics(metricsPort);
    await runOk(['--mount', mountArg(VOL)], 'cat /data/hello.txt');
    const now = await scrapeMetrics(metricsPort);
    const delta = (key: string) => (now.get(key) ?? 0) - (was.get(key) ?? 0);
    assert.equal(delta('ossnas_calls_total{call="VolumeDriver.Mount",outcome="ok"}'), 1);
    assert.equal(delta('ossnas_calls_total{call="VolumeDriver.Unmount",outcome="ok"}'), 1);
    assert.equal(delta('ossnas_call_duration_seconds_count{call="VolumeDriver.Mount"}'), 1);
    assert.ok(delta('ossnas_call_duration_seconds_sum{call="VolumeDriver.Mount"}') > 0);
    assert.ok((now.get('ossnas_volumes{type="oss"}') ?? 0) >= 1);
    assert.equal(now.get('ossnas_volumes_mounted{type="oss"}') ?? 0, 0, 'unmounted once the container ended');
    assert.equal(now.get('ossnas_restore_volumes{result="failed"}'), 0);
    assert.ok((now.get('process_resident_memory_bytes') ?? 0) > 0);
  });

  it('inline credentials: the secret is not in Status, the plugin log, nor any command line', async (t) => {
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`,
      '-o', `akId=${INLINE_KEY_ID}`, '-o', `akSecret=${INLINE_SECRET}`, '-o', 'path=/inline', INLINE_VOL]);
    const v = await inspectVolume(INLINE_VOL);
    assert.equal(v.Status?.credentials, 'inline');
    assert.equal(v.Status?.path, '/inline');
    assert.ok(!JSON.stringify(v.Status).includes(INLINE_SECRET), `Status shows the secret: ${JSON.stringify(v.Status)}`);
    if (JSON.stringify(v.Options ?? {}).includes(INLINE_SECRET)) {
      t.diagnostic('as documented, Docker itself shows the inline akSecret under Options in docker volume inspect');
    }

    // While a container uses the volume (s3fs running), look at every process on the host.
    const c = `ossnas-e2e-${RUN}-inline`;
    cleanups.push(() => dockerResult(['rm', '-f', c]));
    await docker(['run', '-d', '--name', c, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg(INLINE_VOL), TEST_IMAGE,
      'sh', '-c', 'echo inline > /data/i.txt && sleep 600']);
    try {
      await waitFor('the inline volume to serve', async () => (await s3.getObject(BUCKET, 'inline/i.txt')) === 'inline\n');
      assert.equal((await inspectVolume(INLINE_VOL)).Status?.mounted, true);
      const s3fs = await processesWith(`/mnt/volumes/${INLINE_VOL}`);
      t.diagnostic(`s3fs process while mounted: ${s3fs.join(' | ') || '(none found)'}`);
      assert.ok(s3fs.length > 0, 'expected to see the s3fs process of the inline volume on the host');
      assert.deepEqual(await processesWith(INLINE_SECRET), [], 'a process command line contains the secret');
      const envHits = await processesWith(INLINE_SECRET, 'environ');
      if (envHits.length) t.diagnostic(`processes with the secret in their environment: ${envHits.join(' | ')}`);
      assert.deepEqual(envHits, [], 'a process environment contains the secret');
      // The passwd file handed to s3fs is gone once the mount is ready (seen through s3fs' root).
      const pid = s3fs[0]!.split(':')[0]!;
      const runDir = `/proc/${pid}/root/run/ossnas`;
      const files = await filesContaining(runDir, INLINE_SECRET);
      t.diagnostic(`files under the plugin's /run/ossnas holding the secret while mounted: ${files.length}`);
      assert.deepEqual(files, [], 'a file in the plugin still holds the secret after the mount');
      // And it never reached a disk: the plugin's /run is on its rootfs, so a tmpfs was mounted there.
      const runMount = (await readMounts(`/proc/${pid}/mountinfo`)).find((m) => m.mountPoint === '/run/ossnas');
      assert.equal(runMount?.fsType, 'tmpfs', `the plugin's /run/ossnas is not in memory: ${JSON.stringify(runMount)}`);
    } finally {
      await docker(['rm', '-f', c]);
    }
    await waitFor('the inline volume to be unmounted', async () => (await inspectVolume(INLINE_VOL)).Status?.mounted === false);

    // dockerd's log: the plugin's output is tagged plugin=<id>.
    if (!logPath) {
      assert.fail(
        "cannot find dockerd's log (dockerd's stdout is not a file): set OSSNAS_E2E_DOCKERD_LOG=FILE to the file dockerd logs to",
      );
    }
    const fh = await open(logPath, 'r');
    let log: string;
    try {
        const { size } = await fh.stat();
        const buf = Buffer.alloc(Math.max(0, size - logStart));
        await fh.read(buf, 0, buf.length, logStart);
        log = buf.toString('utf8');
    } finally {
      await fh.close();
    }
    const pluginLines = log.split('\n').filter((l) => l.includes(`plugin=${plugin!.id}`));
    t.diagnostic(`dockerd log ${logPath}: ${pluginLines.length} plugin lines since the test started`);
    assert.ok(pluginLines.some((l) => l.includes(INLINE_VOL)), 'expected plugin log lines about the inline volume (LOG_LEVEL=debug)');
    const leaked = pluginLines.filter((l) => l.includes(INLINE_SECRET));
    assert.deepEqual(leaked, [], 'plugin log lines contain the secret');
    const otherLeaks = log.split('\n').filter((l) => l.includes(INLINE_SECRET) && !l.includes(`plugin=${plugin!.id}`));
    if (otherLeaks.length) t.diagnostic(`dockerd's own lines with the secret (not the plugin's): ${otherLeaks.length}`);
  });

  it('docker volume rm removes the volume and never the objects in the bucket', async () => {
    const before = await s3.keys(BUCKET);
    for (const k of ['hello.txt', 'b.txt', 'inline/i.txt']) assert.ok(before.includes(k), `${k} missing before rm: ${before.join(', ')}`);
    await docker(['volume', 'rm', VOL]);
    await docker(['volume', 'rm', INLINE_VOL]);
    assert.equal(await volumeExists(PLUGIN, VOL), false);
    assert.equal(await volumeExists(PLUGIN, INLINE_VOL), false);
    assert.deepEqual(await s3.keys(BUCKET), before);
    assert.equal(await s3.getObject(BUCKET, 'hello.txt'), 'hello\n');
  });

  it('a bad option fails docker volume create with a clear message', async () => {
    const name = `ossnas-e2e-${RUN}-bad`;
    const r = await dockerResult(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`,
      '-o', `url=${s3.url}`, '-o', 'buckt=x', name]);
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /unknown option/i);
    assert.match(r.stderr, /buckt/);
    assert.equal(await volumeExists(PLUGIN, name), false, 'the volume must not exist');
  });

  it('a mount failure (no such bucket) fails docker run with s3fs\'s own text and leaves nothing mounted', async (t) => {
    const name = `ossnas-e2e-${RUN}-nobucket`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', 'bucket=no-such-bucket', '-o', `url=${s3.url}`,
      '-o', `credentials=${PROFILE}`, name]);
    const r = await run(['--mount', mountArg(name)], 'echo never > /data/x');
    t.diagnostic(`docker run: exit ${r.exitCode} after ${Math.round(r.ms)} ms: ${r.stderr}`);
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /bucket or key not found|NoSuchBucket|bucket.*(not exist|not found)/i);
    assert.equal(await isMountpoint(path.join(plugin!.propagatedMount, name)), false, 'a half-made mount was left behind');
    const s = (await inspectVolume(name)).Status;
    assert.equal(s?.mounted, false);
    assert.equal(s?.refs, 0);
    assert.equal(s?.health, 'error');
    assert.match(String(s?.lastError), /bucket or key not found|NoSuchBucket|bucket.*(not exist|not found)/i);
    assert.equal(new Date(String(s?.lastErrorAt)).toISOString(), s?.lastErrorAt, `lastErrorAt: ${String(s?.lastErrorAt)}`);
    assert.equal(s?.since, s?.lastErrorAt, 'health turned error with this failure');
    await docker(['volume', 'rm', name]);
  });

  // client=rclone in the same managed plugin: rclone from the rootfs, fusermount and /dev/fuse in
  // the plugin, keys in a config file of the plugin's tmpfs. Its write cache uploads after close(),
  // so what a container wrote is in the bucket once its Unmount is answered, not at close.
  it('client=rclone: a container writes, the object is in the bucket when docker run returns, and Status names the client', async () => {
    const vol = `${VOL}-rclone`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', 'path=/rclone', '-o', 'client=rclone', vol]);
    try {
      assert.equal((await inspectVolume(vol)).Status?.client, 'rclone');
      const big = 3 * 1024 * 1024; // more than one write, so an upload takes a moment
      await runOk(['--mount', mountArg(vol)], `echo by-rclone > /data/r.txt && head -c ${big} /dev/zero > /data/big.bin`);
      // No waiting: docker run returned after the Unmount, which waited for the uploads.
      assert.equal(await s3.getObject(BUCKET, 'rclone/r.txt'), 'by-rclone\n');
      assert.equal((await s3.getObject(BUCKET, 'rclone/big.bin'))?.length, big);
      assert.equal(await runOk(['--mount', mountArg(vol)], 'cat /data/r.txt && ls /data'), 'by-rclone\nbig.bin\nr.txt');
      const s = (await inspectVolume(vol)).Status;
      assert.deepEqual([s?.mounted, s?.refs, s?.health], [false, 0, 'idle']);
    } finally {
      await docker(['volume', 'rm', vol]);
    }
    assert.equal(await s3.getObject(BUCKET, 'rclone/r.txt'), 'by-rclone\n', 'docker volume rm deletes no object');
  });

  it('client=rclone with inline keys: the secret is in no command line, environment or file of the plugin while mounted', async (t) => {
    const vol = `${INLINE_VOL}-rclone`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`, '-o', 'client=rclone',
      '-o', `akId=${INLINE_KEY_ID}`, '-o', `akSecret=${INLINE_SECRET}`, '-o', 'path=/inline-rclone', vol]);
    const c = `ossnas-e2e-${RUN}-inline-rclone`;
    cleanups.push(() => dockerResult(['rm', '-f', c]));
    try {
      await docker(['run', '-d', '--name', c, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg(vol), TEST_IMAGE,
        'sh', '-c', 'echo inline > /data/i.txt && sleep 600']);
      await waitFor('the inline rclone volume to upload', async () => (await s3.getObject(BUCKET, 'inline-rclone/i.txt')) === 'inline\n');
      const rclone = (await processesWith(`/mnt/volumes/${vol}`)).filter((p) => p.includes('rclone'));
      t.diagnostic(`rclone process while mounted: ${rclone.join(' | ') || '(none found)'}`);
      assert.ok(rclone.length > 0, 'expected to see the rclone process of the volume on the host');
      assert.deepEqual(await processesWith(INLINE_SECRET), [], 'a process command line contains the secret');
      assert.deepEqual(await processesWith(INLINE_SECRET, 'environ'), [], 'a process environment contains the secret');
      const pluginRoot = `/proc/${rclone[0]!.split(':')[0]!}/root`;
      assert.deepEqual(await filesContaining(`${pluginRoot}/run/ossnas`, INLINE_SECRET), [], 'the config file given to rclone outlived the mount');
      // rclone's write cache is on the plugin's state, which survives a restart: no key in it. The
      // state's secrets/ holds the volume's inline keys, readable by root alone, by design.
      const inState = (await filesContaining(stateDir, INLINE_SECRET)).map((f) => path.relative(stateDir, f));
      assert.deepEqual(inState, [`secrets/${vol}.json`], 'a file in the plugin\'s state besides its own secrets file holds the secret');
    } finally {
      await docker(['rm', '-f', c]);
      await waitFor('the inline rclone volume to be unmounted', async () => (await inspectVolume(vol)).Status?.mounted === false);
      await docker(['volume', 'rm', vol]);
    }
  });

  it('client=rclone with no such bucket: docker run fails naming the bucket, nothing is mounted, and no bucket is created', async (t) => {
    const name = `ossnas-e2e-${RUN}-nobucket-rclone`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', 'bucket=no-such-bucket-rclone', '-o', 'client=rclone', name]);
    try {
      const r = await run(['--mount', mountArg(name)], 'echo never > /data/x');
      t.diagnostic(`docker run: exit ${r.exitCode} after ${Math.round(r.ms)} ms: ${r.stderr}`);
      assert.notEqual(r.exitCode, 0);
      assert.match(r.stderr, /no-such-bucket-rclone/);
      assert.match(r.stderr, /not found|does not exist|NoSuchBucket/i);
      assert.equal(await isMountpoint(path.join(plugin!.propagatedMount, name)), false, 'a half-made mount was left behind');
      assert.equal((await fetch(`${s3.url}/no-such-bucket-rclone`)).status, 404, 'the mount created the bucket');
      assert.equal((await inspectVolume(name)).Status?.health, 'error');
    } finally {
      await docker(['volume', 'rm', name]);
    }
  });

  it('measures docker run with and without an ossnas volume', async (t) => {
    const name = `ossnas-e2e-${RUN}-bench`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`,
      '-o', `credentials=${PROFILE}`, name]);
    const plain: number[] = [];
    const withVol: number[] = [];
    await runOk([], ':'); // warm-up
    for (let i = 0; i < 5; i++) {
      plain.push((await run([], ':')).ms);
      const r = await run(['--mount', mountArg(name)], ':');
      assert.equal(r.exitCode, 0, r.stderr);
      withVol.push(r.ms);
    }
    const fmt = (xs: number[]) => xs.map((x) => Math.round(x)).join(', ');
    t.diagnostic(`docker run --rm sh -c : with no volume: median ${Math.round(median(plain))} ms (${fmt(plain)})`);
    t.diagnostic(`docker run --rm sh -c : with an ossnas volume: median ${Math.round(median(withVol))} ms (${fmt(withVol)})`);
    t.diagnostic(`ossnas volume overhead (median): ${Math.round(median(withVol) - median(plain))} ms`);
    for (const [step, ms] of Object.entries(timings)) t.diagnostic(`${step}: ${(ms / 1000).toFixed(1)} s`);
    await docker(['volume', 'rm', name]);
  });
});

/** Files below DIR whose content includes NEEDLE. */
async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const hits: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (!e.isFile()) continue;
    const f = path.join(e.parentPath, e.name);
    if ((await readFile(f, 'latin1').catch(() => '')).includes(needle)) hits.push(f);
  }
  return hits;
}

/** When installPlugin failed halfway, its own cleanup ran; make sure nothing of ours stays. */
async function installCleanupFallback(): Promise<void> {
  const problems = await removePlugin(PLUGIN);
  if (problems.length) throw new Error(problems.join('; '));
}
