// The managed plugin killed with SIGKILL while containers use its volumes, under the real
// dockerd: dockerd restarts it, and nothing may be lost. Kernel mounts (disk) keep serving the
// running containers; so do FUSE mounts (OSS), because their clients were moved out of the
// plugin's cgroup and the restarted plugin adopts them; every volume stays listed; reference
// counts stay right. Needs root and dockerd.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CONTAINER_LABEL,
  docker,
  dockerResult,
  fuseClientPid,
  isMountpoint,
  isRunning,
  leftPluginCgroup,
  pluginPid,
  TEST_IMAGE,
  volumeStatus,
  volumesOf,
  waitFor,
  type InstalledPlugin,
} from '../helpers/docker.js';
import { setUpPlugin, type E2eSetup } from '../helpers/e2e-setup.js';
import { rootSkipReason } from '../helpers/env.js';
import type { S3Server } from '../helpers/s3.js';

const PLUGIN = 'ossnas-restart-e2e';
const RUN = randomBytes(3).toString('hex');
const BUCKET = 'restart-bucket';
const OSS = `ossnas-rs-oss-${RUN}`;
const DISK = `ossnas-rs-disk-${RUN}`;
const mountArg = (vol: string) => `type=volume,src=${vol},dst=/data,volume-driver=${PLUGIN}`;
/** Appends a line 5 times a second and counts the appends that failed. */
const WRITER = 'while :; do date >> /data/ticks || echo x >> /tmp/failed; sleep 0.2; done';

describe('the plugin killed with SIGKILL while containers use its volumes', { skip: rootSkipReason(), timeout: 600_000 }, () => {
  let setup: E2eSetup | undefined;
  let plugin: InstalledPlugin | undefined;
  let s3: S3Server;
  const holders = { disk: `ossnas-rs-${RUN}-disk`, oss: `ossnas-rs-${RUN}-oss` };

  before(async () => {
    setup = await setUpPlugin(PLUGIN, { buckets: [BUCKET], env: { LOG_LEVEL: 'debug' } });
    ({ plugin } = setup);
    s3 = setup.s3!;
  });
  after(async () => {
    for (const c of Object.values(holders)) await dockerResult(['rm', '-f', c]);
    await setup?.cleanup();
  });

  it('keeps every volume, kernel mounts keep serving, new containers work on every volume, references stay right', async (t) => {
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`, '-o', 'credentials=local', OSS]);
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=disk', '-o', 'size=32M', DISK]);
    await docker(['run', '-d', '--name', holders.disk, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg(DISK), TEST_IMAGE,
      'sh', '-c', WRITER]);
    await docker(['run', '-d', '--name', holders.oss, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg(OSS), TEST_IMAGE,
      'sh', '-c', `echo before > /data/before.txt; ${WRITER}`]);
    await waitFor('both volumes mounted once', async () => {
      const [o, d] = [await volumeStatus(OSS), await volumeStatus(DISK)];
      return o.refs === 1 && d.refs === 1 && o.mounted === true && d.mounted === true && (await s3.getObject(BUCKET, 'before.txt')) === 'before\n';
    });

    const pid = await pluginPid(plugin!.id);
    assert.ok(pid, 'found the plugin process');
    const client = await fuseClientPid(`/mnt/volumes/${OSS}`);
    assert.ok(client, 'found the s3fs client');
    const clientCgroup = await readFile(`/proc/${client}/cgroup`, 'utf8');
    assert.ok(leftPluginCgroup(clientCgroup), `the client left the plugin cgroup (v1: in every hierarchy; v2: the unified one):\n${clientCgroup}`);
    const t0 = performance.now();
    process.kill(pid, 'SIGKILL');
    const newPid = await waitFor('dockerd to restart the plugin', async () => {
      const p = await pluginPid(plugin!.id);
      return p && p !== pid ? p : undefined;
    }, 30_000, 50);
    await waitFor('the plugin to answer', async () => (await dockerResult(['volume', 'inspect', OSS])).exitCode === 0, 30_000, 50);
    t.diagnostic(`plugin restarted by dockerd and answering after ${Math.round(performance.now() - t0)} ms (pid ${pid} -> ${newPid})`);

    // Every volume is still listed, with its options.
    const listed = await volumesOf(PLUGIN);
    assert.ok(listed.includes(OSS) && listed.includes(DISK), `listed: ${listed.join(' ')}`);

    // The OSS client outlived the plugin and the new process adopted it: the same s3fs, no new Mount.
    const adopted = await waitFor('the OSS volume to be adopted', async () => {
      const s = await volumeStatus(OSS);
      return s.mounted === true && s.health === 'ok' ? s : undefined;
    }, 30_000, 100);
    t.diagnostic(`OSS volume adopted ${Math.round(performance.now() - t0)} ms after the kill`);
    assert.equal(await fuseClientPid(`/mnt/volumes/${OSS}`), client, 'the same s3fs serves');
    assert.deepEqual([adopted.refs, (await volumeStatus(DISK)).refs], [1, 1], 'references survived the kill');

    // The running containers never noticed: no append failed, on the kernel mount or the FUSE one.
    for (const holder of [holders.disk, holders.oss]) {
      const ticks = async () => Number((await docker(['exec', holder, 'sh', '-c', 'wc -l < /data/ticks'])).trim());
      const n1 = await ticks();
      await new Promise((r) => setTimeout(r, 1000));
      assert.ok((await ticks()) > n1, `${holder} keeps writing`);
      assert.equal((await dockerResult(['exec', holder, 'cat', '/tmp/failed'])).exitCode, 1, `${holder}: no append failed`);
    }


    // New containers work on every volume, and see what was written before the kill.
    let r = await dockerResult(['run', '--rm', '--mount', mountArg(OSS), TEST_IMAGE, 'sh', '-c', 'cat /data/before.txt && echo after > /data/after.txt']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'before');
    assert.equal(await s3.getObject(BUCKET, 'after.txt'), 'after\n');
    r = await dockerResult(['run', '--rm', '--mount', mountArg(DISK), TEST_IMAGE, 'sh', '-c', 'test -s /data/ticks && echo ok']);
    assert.equal(r.stdout, 'ok', r.stderr);
    assert.deepEqual([(await volumeStatus(OSS)).refs, (await volumeStatus(DISK)).refs], [1, 1], 'the short-lived containers left no reference');

    // The last container to stop unmounts, exactly then.
    for (const [vol, holder] of [[OSS, holders.oss], [DISK, holders.disk]] as const) {
      await docker(['rm', '-f', holder]);
      await waitFor(`${vol} unmounted after its last container`, async () => {
        const s = await volumeStatus(vol);
        return s.refs === 0 && s.mounted === false;
      });
      assert.equal(await isMountpoint(path.join(plugin!.propagatedMount, vol)), false);
    }
    // The adopted client ends with its mount: nothing is left running outside the plugin.
    await waitFor('the adopted s3fs to exit', async () => !(await isRunning(client)));
    for (const vol of [OSS, DISK]) await docker(['volume', 'rm', vol]);
  });

  it('client=rclone: after SIGKILL the same rclone is adopted, the container writes on, and every write reaches the bucket', async (t) => {
    const vol = `${OSS}-rclone`;
    const holder = `${holders.oss}-rclone`;
    t.after(() => dockerResult(['rm', '-f', holder]));
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`, '-o', 'credentials=local',
      '-o', 'path=/rclone', '-o', 'client=rclone', vol]);
    await docker(['run', '-d', '--name', holder, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg(vol), TEST_IMAGE, 'sh', '-c', WRITER]);
    await waitFor('mounted', async () => (await volumeStatus(vol)).mounted === true);
    const client = await fuseClientPid(`/mnt/volumes/${vol}`);
    assert.ok(client, 'found the rclone client');
    assert.ok(leftPluginCgroup(await readFile(`/proc/${client}/cgroup`, 'utf8')), 'rclone left the plugin cgroup');

    const pid = await pluginPid(plugin!.id);
    process.kill(pid!, 'SIGKILL');
    await waitFor('the rclone volume to be adopted', async () => {
      const p = await pluginPid(plugin!.id);
      const s = p && p !== pid ? await volumeStatus(vol).catch(() => undefined) : undefined;
      return s?.mounted === true && s.health === 'ok' && s.refs === 1 ? s : undefined;
    }, 30_000, 100);
    assert.equal(await fuseClientPid(`/mnt/volumes/${vol}`), client, 'the same rclone serves');
    const ticks = async () => Number((await docker(['exec', holder, 'sh', '-c', 'wc -l < /data/ticks'])).trim());
    const n1 = await ticks();
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok((await ticks()) > n1, 'the container keeps writing');
    assert.equal((await dockerResult(['exec', holder, 'cat', '/tmp/failed'])).exitCode, 1, 'no append failed');

    // The Unmount of the adopted client waits for its uploads: every line is in the bucket once
    // the volume is unmounted.
    await docker(['stop', '-t', '1', holder]);
    const written = await docker(['run', '--rm', '--mount', mountArg(vol), TEST_IMAGE, 'wc', '-l', '/data/ticks']);
    await docker(['rm', '-f', holder]);
    await waitFor('unmounted after the last container', async () => (await volumeStatus(vol)).mounted === false);
    const lines = Number(written.trim().split(/\s+/)[0]);
    assert.ok(lines > 5, `lines written: ${written}`);
    assert.equal((await s3.getObject(BUCKET, 'rclone/ticks'))?.trim().split('\n').length, lines, 'every line written is in the bucket');
    await waitFor('the adopted rclone to exit', async () => !(await isRunning(client)));
    await docker(['volume', 'rm', vol]);
  });

  it('docker plugin disable -f and enable while a container writes to an OSS volume: it keeps writing, and nothing is left over', async (t) => {
    const vol = `${OSS}-de`;
    const holder = `${holders.oss}-de`;
    t.after(() => dockerResult(['rm', '-f', holder]));
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`, '-o', 'credentials=local', '-o', 'path=/de', vol]);
    await docker(['run', '-d', '--name', holder, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg(vol), TEST_IMAGE, 'sh', '-c', WRITER]);
    await waitFor('mounted', async () => (await volumeStatus(vol)).mounted === true);
    const client = await fuseClientPid(`/mnt/volumes/${vol}`);
    assert.ok(client, 'found the s3fs client');

    // Disabled: dockerd unmounts the propagated mount, but the container's own mount of the
    // same filesystem keeps the client serving it.
    await docker(['plugin', 'disable', '-f', PLUGIN]);
    const ticks = async () => Number((await docker(['exec', holder, 'sh', '-c', 'wc -l < /data/ticks'])).trim());
    const n1 = await ticks();
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok((await ticks()) > n1, 'the container keeps writing while the plugin is disabled');
    await docker(['plugin', 'enable', PLUGIN]);
    assert.equal((await dockerResult(['exec', holder, 'cat', '/tmp/failed'])).exitCode, 1, 'no append failed');

    // Enabled again: the volume is still held once, and a new container gets a working mount.
    await waitFor('the volume to serve again', async () => {
      const s = await volumeStatus(vol).catch(() => ({}) as Record<string, unknown>);
      return s.refs === 1 && s.mounted === true && s.health === 'ok';
    }, 30_000, 100);
    const r = await dockerResult(['run', '--rm', '--mount', mountArg(vol), TEST_IMAGE, 'sh', '-c', 'test -s /data/ticks && echo ok']);
    assert.equal(r.stdout, 'ok', r.stderr);

    // When the container stops, the volume is unmounted and every client of it ends.
    await docker(['rm', '-f', holder]);
    await waitFor('unmounted after the last container', async () => {
      const s = await volumeStatus(vol);
      return s.refs === 0 && s.mounted === false;
    });
    await waitFor('every s3fs of the volume to exit', async () => (await fuseClientPid(`/mnt/volumes/${vol}`)) === undefined);
    assert.equal(await isRunning(client), false, 'the first client ended too');
    await docker(['volume', 'rm', vol]);
  });
});
