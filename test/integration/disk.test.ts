// Disk volumes (size=): an image file in the state directory, formatted once and loop-mounted,
// through the plugin's API with the program as a plain host process. Needs root (loop devices).
import assert from 'node:assert/strict';
import { access, readFile, stat, symlink, truncate, unlink, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readMounts } from '../../src/host/mountinfo.js';
import { rootSkipReason } from '../helpers/env.js';
import { finishPlugin, startPluginInTempDir, type PluginProcess } from '../helpers/plugin-process.js';

const ID = (n: number) => String(n).repeat(64).slice(0, 64);

describe('disk volumes on loop devices', { skip: rootSkipReason(), timeout: 180_000 }, () => {
  let plugin: PluginProcess;
  const call = (m: string, a: unknown) => plugin.client.call(`VolumeDriver.${m}`, a);
  const mountAt = async (p: string) => (await readMounts()).find((m) => m.mountPoint === p);
  const image = (name: string) => path.join(plugin.dir, 'state', 'disks', `${name}.img`);

  before(async () => {
    plugin = await startPluginInTempDir();
  });
  after(async () => {
    await finishPlugin(plugin);
  });

  it('formats a sparse 0600 image once, enforces its size, and keeps data across remounts', async () => {
    let r = await call('Create', { Name: 'd1', Opts: { type: 'disk', size: '64M' } });
    assert.deepEqual(r.json, { Err: '' });
    r = await call('Mount', { Name: 'd1', ID: ID(1) });
    assert.equal(r.status, 200, r.text);
    const mp = String(r.json.Mountpoint);
    const m = await mountAt(mp);
    assert.equal(m?.fsType, 'ext4');
    assert.match(m!.source, /^\/dev\/loop\d+$/);
    const img = await stat(image('d1'));
    assert.equal(img.mode & 0o777, 0o600);
    assert.equal(img.size, 64 * 2 ** 20);
    assert.ok(img.blocks * 512 < img.size, 'the image is sparse');

    await writeFile(path.join(mp, 'keep.txt'), 'kept');
    await assert.rejects(writeFile(path.join(mp, 'big.bin'), Buffer.alloc(80 * 2 ** 20)), /ENOSPC/);

    await call('Unmount', { Name: 'd1', ID: ID(1) });
    assert.equal(await mountAt(mp), undefined);
    r = await call('Mount', { Name: 'd1', ID: ID(2) });
    assert.equal(await readFile(path.join(mp, 'keep.txt'), 'utf8'), 'kept', 'never reformatted');
    const st = ((await call('Get', { Name: 'd1' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.deepEqual([st.type, st.size, st.fsType, st.mounted, st.refs], ['disk', '64M', 'ext4', true, 1]);
    // Size and use, read at Get: the write that hit ENOSPC left the filesystem full.
    const total = Number(st.totalBytes);
    assert.ok(total > 50 * 2 ** 20 && total <= 64 * 2 ** 20, `totalBytes ${st.totalBytes}`);
    assert.ok(Number(st.usedBytes) > 50 * 2 ** 20 && Number(st.usedBytes) <= total, `usedBytes ${st.usedBytes}`);
    assert.ok(Number(st.usedPercent) >= 90 && Number(st.usedPercent) <= 100, `usedPercent ${st.usedPercent}`);

    await access(image('d1'));
    await call('Unmount', { Name: 'd1', ID: ID(2) });
    assert.deepEqual((await call('Remove', { Name: 'd1' })).json, { Err: '' });
    await assert.rejects(access(image('d1')), /ENOENT/, 'Remove deletes the image of an unused volume');
  });

  it('mounts xfs and read-only volumes', async () => {
    await call('Create', { Name: 'x1', Opts: { type: 'disk', size: '320M', fsType: 'xfs', mkfsOptions: '-L ossnas' } });
    const mp = String((await call('Mount', { Name: 'x1', ID: ID(3) })).json.Mountpoint);
    assert.equal((await mountAt(mp))?.fsType, 'xfs');
    await writeFile(path.join(mp, 'a.txt'), 'a');
    await call('Unmount', { Name: 'x1', ID: ID(3) });

    await call('Create', { Name: 'r1', Opts: { type: 'disk', size: '32M', readonly: 'true' } });
    const ro = String((await call('Mount', { Name: 'r1', ID: ID(4) })).json.Mountpoint);
    await assert.rejects(writeFile(path.join(ro, 'no.txt'), 'x'), /EROFS/);
    await call('Unmount', { Name: 'r1', ID: ID(4) });
  });

  it('refuses bad options by name', async () => {
    const bad: Array<[Record<string, string>, RegExp]> = [
      [{ type: 'disk' }, /option 'size' is required|give size=10G/],
      [{ type: 'disk', size: 'lots' }, /invalid option 'size': expected a size such as 512M/],
      [{ type: 'disk', size: '1M' }, /ext4 needs at least 16M/],
      [{ type: 'disk', size: '100M', fsType: 'xfs' }, /xfs needs at least 300M/],
      [{ type: 'disk', size: '1G', fsType: 'btrfs' }, /invalid option 'fsType': expected 'ext4' or 'xfs'/],
      [{ type: 'disk', size: '1G', mkfsOptions: '-E discard' }, /invalid option 'mkfsOptions': '-E' is not allowed for ext4/],
      [{ type: 'disk', device: '/dev/../etc/passwd' }, /invalid option 'device': expected a device path/],
      [{ type: 'disk', device: 'sda' }, /invalid option 'device': expected a device path/],
      [{ type: 'disk', device: '/dev/loop0', size: '1G' }, /give one of size, device or diskId, not size and device/],
      [{ type: 'disk', device: '/dev/null' }, /device \/dev\/null is not a block device/],
      [{ type: 'disk', device: '/dev/ossnas-no-such-disk' }, /device \/dev\/ossnas-no-such-disk does not exist on the host/],
    ];
    for (const [opts, re] of bad) {
      const r = await call('Create', { Name: 'bad', Opts: opts });
      assert.equal(r.status, 500);
      assert.match(String(r.json.Err), re);
    }
  });

  it('uses an existing block device: formats it only when empty, never reformats, never wipes on Remove', async (t) => {
    const img = path.join(plugin.dir, 'dev.img');
    await writeFile(img, '');
    await truncate(img, 64 * 2 ** 20);
    const dev = (await execa('losetup', ['--find', '--show', img])).stdout.trim();
    t.after(() => execa('losetup', ['-d', dev], { reject: false }));

    let r = await call('Create', { Name: 'dev1', Opts: { type: 'disk', device: dev } });
    assert.deepEqual(r.json, { Err: '' });
    const mp = String((await call('Mount', { Name: 'dev1', ID: ID(7) })).json.Mountpoint);
    assert.deepEqual([(await mountAt(mp))?.source, (await mountAt(mp))?.fsType], [dev, 'ext4']);
    await writeFile(path.join(mp, 'on-device.txt'), 'dev data');
    await call('Unmount', { Name: 'dev1', ID: ID(7) });
    assert.deepEqual((await call('Remove', { Name: 'dev1' })).json, { Err: '' });

    // The same device again: the data is still there (not wiped, not reformatted).
    await call('Create', { Name: 'dev2', Opts: { type: 'disk', device: dev } });
    const mp2 = String((await call('Mount', { Name: 'dev2', ID: ID(8) })).json.Mountpoint);
    assert.equal(await readFile(path.join(mp2, 'on-device.txt'), 'utf8'), 'dev data');
    await call('Unmount', { Name: 'dev2', ID: ID(8) });
    // A device is one volume's at a time (see below): dev2 goes before dev3 may use it.
    assert.deepEqual((await call('Remove', { Name: 'dev2' })).json, { Err: '' });

    // Asked for xfs on an ext4 device: refused, naming both, and the data is untouched.
    assert.deepEqual((await call('Create', { Name: 'dev3', Opts: { type: 'disk', device: dev, fsType: 'xfs' } })).json, { Err: '' });
    r = await call('Mount', { Name: 'dev3', ID: ID(9) });
    assert.match(String(r.json.Err), new RegExp(`device ${dev} holds a ext4 filesystem, not xfs; it is never reformatted`));
    assert.equal((await execa('blkid', ['-p', '-o', 'value', '-s', 'TYPE', dev])).stdout, 'ext4', 'the filesystem is intact');
    // Loop device names are reused once detached: a volume left recorded on this one would claim the next test's.
    assert.deepEqual((await call('Remove', { Name: 'dev3' })).json, { Err: '' });
  });

  it('refuses a second volume on a device another volume uses, naming both, also when both Creates arrive at once; the first one works', async (t) => {
    const devs: string[] = [];
    for (const n of [1, 2]) {
      const img = path.join(plugin.dir, `shared-${n}.img`);
      await writeFile(img, '');
      await truncate(img, 32 * 2 ** 20);
      devs.push((await execa('losetup', ['--find', '--show', img])).stdout.trim());
    }
    t.after(async () => {
      for (const d of devs) await execa('losetup', ['-d', d], { reject: false });
    });
    const [one, two] = devs as [string, string];

    // One after the other: the second is refused, and says which device and which volume.
    assert.deepEqual((await call('Create', { Name: 'first', Opts: { type: 'disk', device: one } })).json, { Err: '' });
    let r = await call('Create', { Name: 'second', Opts: { type: 'disk', device: one } });
    assert.equal(r.status, 500);
    assert.equal(r.json.Err, `volume second: device ${one} is already used by volume first; two volumes on one device would format and mount it twice`);
    assert.match((await call('Get', { Name: 'second' })).text, /volume second not found/);
    // The same device spelled otherwise is the same device.
    r = await call('Create', { Name: 'second', Opts: { type: 'disk', device: one.replace('/dev/', '/dev//') } });
    assert.equal(r.json.Err, `volume second: device ${one} is already used by volume first; two volumes on one device would format and mount it twice`);
    // And by another name, as /dev/disk/by-id/... names it: the device number tells.
    const alias = `/dev/ossnas-test-alias-${process.pid}`;
    await symlink(path.basename(one), alias);
    t.after(() => unlink(alias).catch(() => undefined));
    r = await call('Create', { Name: 'second', Opts: { type: 'disk', device: alias } });
    assert.equal(r.json.Err, `volume second: device ${alias} is already used by volume first; two volumes on one device would format and mount it twice`);

    // Both at once: neither is recorded yet when the other is checked, and still only one wins.
    const names = ['race-a', 'race-b'];
    const replies = await Promise.all(names.map((Name) => call('Create', { Name, Opts: { type: 'disk', device: two } })));
    const won = names.filter((_, i) => replies[i]!.json.Err === '');
    assert.equal(won.length, 1, `exactly one Create wins: ${replies.map((x) => x.text).join(' | ')}`);
    const lost = names.find((n) => n !== won[0])!;
    assert.equal(replies[names.indexOf(lost)]!.json.Err, `volume ${lost}: device ${two} is already used by volume ${won[0]}; two volumes on one device would format and mount it twice`);
    assert.equal(((await call('List', {})).json.Volumes as Array<{ Name: string }>).filter((v) => names.includes(v.Name)).length, 1);

    // The volumes that won mount and keep data.
    for (const [name, dev] of [['first', one], [won[0]!, two]] as const) {
      r = await call('Mount', { Name: name, ID: ID(1) });
      assert.equal(r.status, 200, r.text);
      const mp = String(r.json.Mountpoint);
      assert.equal((await mountAt(mp))?.source, dev);
      await writeFile(path.join(mp, 'mine.txt'), name);
      assert.equal(await readFile(path.join(mp, 'mine.txt'), 'utf8'), name);
      assert.deepEqual((await call('Unmount', { Name: name, ID: ID(1) })).json, { Err: '' });
      assert.equal(await mountAt(mp), undefined);
      assert.deepEqual((await call('Remove', { Name: name })).json, { Err: '' });
    }
  });

  it('never formats a whole disk whose partitions hold the data (a partition table, no filesystem)', async (t) => {
    const img = path.join(plugin.dir, 'partitioned.img');
    const disk = Buffer.alloc(16 * 2 ** 20);
    // An MBR: one Linux partition (type 0x83) from sector 2048, and the boot signature.
    disk.writeUInt8(0x83, 446 + 4);
    disk.writeUInt32LE(2048, 446 + 8);
    disk.writeUInt32LE(8192, 446 + 12);
    disk.writeUInt16LE(0xaa55, 510);
    await writeFile(img, disk);
    const dev = (await execa('losetup', ['--find', '--show', img])).stdout.trim();
    t.after(() => execa('losetup', ['-d', dev], { reject: false }));

    await call('Create', { Name: 'parted', Opts: { type: 'disk', device: dev } });
    const r = await call('Mount', { Name: 'parted', ID: ID(10) });
    assert.match(String(r.json.Err), new RegExp(`device ${dev} holds a dos partition table; it is never formatted`));
    assert.equal((await execa('blkid', ['-p', '-o', 'value', '-s', 'PTTYPE', dev])).stdout, 'dos', 'the partition table is intact');
    assert.deepEqual((await call('Remove', { Name: 'parted' })).json, { Err: '' });
  });

  it('a disk mount is a kernel mount: it outlives the plugin process', async () => {
    await call('Create', { Name: 'k1', Opts: { type: 'disk', size: '32M' } });
    const mp = String((await call('Mount', { Name: 'k1', ID: ID(5) })).json.Mountpoint);
    await writeFile(path.join(mp, 'k.txt'), 'k');
    plugin = await plugin.restart();
    assert.equal(await readFile(path.join(mp, 'k.txt'), 'utf8'), 'k');
    const r = await call('Mount', { Name: 'k1', ID: ID(6) });
    assert.equal(r.status, 200);
    assert.equal((await readMounts()).filter((m) => m.mountPoint === mp).length, 1, 'the healthy mount was reused');
    await call('Unmount', { Name: 'k1', ID: ID(5) });
    await call('Unmount', { Name: 'k1', ID: ID(6) });
    assert.equal(await mountAt(mp), undefined);
  });
});
