// Kernel-mount volumes in the real plugin under dockerd: disk (loop) mounts made in the host's mount
// namespace through nsenter, so they survive the plugin process, and NAS on this NFS-less kernel.
// Needs root and dockerd.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { after, before, describe, it } from 'node:test';
import {
  CONTAINER_LABEL,
  docker,
  dockerResult,
  isMountpoint,
  TEST_IMAGE,
  volumeStatus,
  type InstalledPlugin,
} from '../helpers/docker.js';
import { setUpPlugin, type E2eSetup } from '../helpers/e2e-setup.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';

const PLUGIN = 'ossnas-disk-e2e';
const RUN = randomBytes(3).toString('hex');
const VOL = `ossnas-disk-${RUN}`;
const mountArg = `type=volume,src=${VOL},dst=/data,volume-driver=${PLUGIN}`;

async function run(cmd: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return dockerResult(['run', '--rm', '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg, TEST_IMAGE, 'sh', '-c', cmd]);
}

const status = () => volumeStatus(VOL);

describe('disk volumes in the managed plugin', { skip: rootSkipReason(), timeout: 600_000 }, () => {
  let setup: E2eSetup | undefined;
  let plugin: InstalledPlugin | undefined;
  const holder = `ossnas-disk-${RUN}-holder`;

  before(async () => {
    setup = await setUpPlugin(PLUGIN);
    ({ plugin } = setup);
  });
  after(async () => {
    await dockerResult(['rm', '-f', holder]);
    await setup?.cleanup();
  });

  it('a container writes, another reads, and the size limit holds', async () => {
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=disk', '-o', 'size=64M', VOL]);
    let r = await run('echo disk-data > /data/d.txt');
    assert.equal(r.exitCode, 0, r.stderr);
    r = await run('cat /data/d.txt');
    assert.equal(r.stdout.trim(), 'disk-data');
    r = await run('dd if=/dev/zero of=/data/big bs=1M count=100');
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr + r.stdout, /No space left/);
    await run('rm -f /data/big');
    const st = await status();
    assert.deepEqual([st.type, st.size, st.fsType, st.refs, st.mounted], ['disk', '64M', 'ext4', 0, false]);
    assert.equal(st.totalBytes, undefined, 'size and use only while mounted');
  });

  it('the data survives docker plugin disable -f and enable while a container keeps using it', async (t) => {
    await docker(['run', '-d', '--name', holder, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg, TEST_IMAGE, 'sh', '-c', 'sleep 600']);
    assert.ok(await isMountpoint(`${plugin!.propagatedMount}/${VOL}`), 'the kernel mount is on the host path');
    // Status of a mounted disk volume: health, and the filesystem's size and use, read when asked.
    const MiB = 2 ** 20;
    const before = await status();
    t.diagnostic(`Status while mounted: ${JSON.stringify(before)}`);
    assert.deepEqual([before.mounted, before.refs, before.health], [true, 1, 'ok']);
    const [total, used, pct] = [before.totalBytes, before.usedBytes, before.usedPercent] as number[];
    assert.ok(total! > 48 * MiB && total! <= 64 * MiB, `totalBytes ${total} is not about the 64M size (less ext4's inode tables and journal)`);
    assert.ok(used! > 0 && used! < 16 * MiB, `usedBytes ${used}`);
    assert.ok(Number.isInteger(pct) && pct! >= 1 && pct! < 30, `usedPercent ${pct}`);
    await docker(['exec', holder, 'sh', '-c', 'dd if=/dev/zero of=/data/grow bs=1M count=8 && sync']);
    const grown = await status();
    t.diagnostic(`after writing 8 MiB: usedBytes ${used} -> ${String(grown.usedBytes)}, usedPercent ${pct} -> ${String(grown.usedPercent)}`);
    assert.equal(grown.totalBytes, total);
    assert.ok((grown.usedBytes as number) - used! >= 8 * MiB, `usedBytes ${used} -> ${String(grown.usedBytes)} after writing 8 MiB`);
    assert.ok((grown.usedPercent as number) >= pct! + 12, `usedPercent ${pct} -> ${String(grown.usedPercent)} after writing 8 MiB of 64M`);
    await docker(['exec', holder, 'rm', '/data/grow']);
    await docker(['plugin', 'disable', '-f', PLUGIN]);
    // The running container keeps reading and writing its kernel mount.
    await docker(['exec', holder, 'sh', '-c', 'echo while-disabled >> /data/d.txt']);
    assert.equal(await docker(['exec', holder, 'cat', '/data/d.txt']), 'disk-data\nwhile-disabled');
    await docker(['plugin', 'enable', '--timeout', '60', PLUGIN]);
    // A new container sees the same data (the loop device the holder still uses is reused).
    const r = await run('cat /data/d.txt && echo after-enable >> /data/d.txt');
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'disk-data\nwhile-disabled');
    assert.equal(await docker(['exec', holder, 'tail', '-n', '1', '/data/d.txt']), 'after-enable');
    await docker(['stop', '-t', '1', holder]);
    await docker(['rm', holder]);
    const r2 = await run('cat /data/d.txt');
    assert.equal(r2.stdout.trim(), 'disk-data\nwhile-disabled\nafter-enable');
  });

  it('an existing block device on the host: formatted when empty, written by one container, read by the next', async (t) => {
    const dir = await tempDir('ossnas-disk-dev-');
    t.after(dir.cleanup);
    const img = path.join(dir.dir, 'dev.img');
    await writeFile(img, '');
    await truncate(img, 64 * 2 ** 20);
    const dev = (await execa('losetup', ['--find', '--show', img])).stdout.trim();
    t.after(() => execa('losetup', ['-d', dev], { reject: false }));
    const vol = `${VOL}-dev`;
    const arg = `type=volume,src=${vol},dst=/data,volume-driver=${PLUGIN}`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=disk', '-o', `device=${dev}`, vol]);
    let r = await dockerResult(['run', '--rm', '--mount', arg, TEST_IMAGE, 'sh', '-c', 'echo on-device > /data/x.txt']);
    assert.equal(r.exitCode, 0, r.stderr);
    r = await dockerResult(['run', '--rm', '--mount', arg, TEST_IMAGE, 'cat', '/data/x.txt']);
    assert.equal(r.stdout.trim(), 'on-device');
    assert.equal((await execa('blkid', ['-p', '-o', 'value', '-s', 'TYPE', dev])).stdout.trim(), 'ext4');
    await docker(['volume', 'rm', vol]);
    const bad = await dockerResult(['volume', 'create', '-d', PLUGIN, '-o', 'type=disk', '-o', 'device=/dev/null', `${VOL}-bad`]);
    assert.notEqual(bad.exitCode, 0);
    assert.match(bad.stderr, /device \/dev\/null is not a block device/);
  });

  it('a NAS volume on a host kernel without NFS: docker run fails with the plugin\'s own message, nothing mounted', async (t) => {
    if (/\tnfs4?$/m.test(await readFile('/proc/filesystems', 'utf8'))) return t.skip('this kernel has NFS; the guest tests cover it');
    const vol = `${VOL}-nas`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=nas', '-o', 'server=127.0.0.1', '-o', 'path=/export', vol]);
    const r = await dockerResult(['run', '--rm', '--mount', `type=volume,src=${vol},dst=/data,volume-driver=${PLUGIN}`, TEST_IMAGE, 'true']);
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /the host kernel \(.+\) has no NFS support: 'nfs' is not in \/proc\/filesystems/);
    assert.equal(await isMountpoint(path.join(plugin!.propagatedMount, vol)), false);
    await docker(['volume', 'rm', vol]);
  });
});
