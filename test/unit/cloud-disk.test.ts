// The parts of cloud disks that need no control plane: options, the device names udev gives ECS
// disks, finding a device by serial, and when the RAM role's credentials are renewed.
import assert from 'node:assert/strict';
import { mkdir, readdir, stat, symlink } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { byIdNames, findDeviceBySerial, serialOf } from '../../src/backends/disk/device-by-id.js';
import { fromSpec, toSpec } from '../../src/backends/disk/options.js';
import type { MetadataService, RoleCredentials } from '../../src/backends/cloud/metadata.js';
import { RamRoleCredentials } from '../../src/backends/cloud/ram-role.js';
import { tempDir } from '../helpers/env.js';

/** Some block device node of this machine, for links to point at. */
async function anyBlockDevice(): Promise<string | undefined> {
  for (const name of (await readdir('/dev')).filter((n) => /^(loop|vd|sd|nvme)\w*$/.test(n)).sort()) {
    if ((await stat(`/dev/${name}`).catch(() => undefined))?.isBlockDevice()) return `/dev/${name}`;
  }
  return undefined;
}

describe('cloud disk options', () => {
  it('diskId with its defaults, kept as given', () => {
    const spec = toSpec({ type: 'disk', diskId: 'd-bp1g6zv0ce8oghu7k2ef' });
    assert.deepEqual(spec.cloud, { diskId: 'd-bp1g6zv0ce8oghu7k2ef', detach: true, forceDetach: false });
    assert.equal(spec.fsType, 'ext4');
    const all = toSpec({ type: 'disk', diskId: 'd-bp1g6zv0ce8oghu7k2ef', detach: 'no', forceDetach: 'yes', ecsCredentials: 'ops', fsType: 'xfs' });
    assert.deepEqual(all.cloud, { diskId: 'd-bp1g6zv0ce8oghu7k2ef', detach: false, forceDetach: true, ecsCredentials: 'ops' });
    assert.deepEqual(toSpec(fromSpec(all)), all);
  });

  it('refuses what is not an ECS disk, and cloud-only keys on other disks', () => {
    for (const [opts, re] of [
      [{ diskId: 'D-BP1' }, /expected an ECS disk ID/],
      [{ diskId: 'd-abc/../x' }, /expected an ECS disk ID/],
      [{ diskId: 'd-bp1g6zv0ce8oghu7k2ef', device: '/dev/vdb' }, /give one of size, device or diskId, not device and diskId/],
      [{ device: '/dev/vdb', detach: 'false' }, /invalid option 'detach': only a cloud disk/],
      [{ diskId: 'd-bp1g6zv0ce8oghu7k2ef', ecsCredentials: '../x' }, /invalid option 'ecsCredentials'/],
      [{}, /diskId=d-\.\.\. \(an ECS cloud disk\)/],
    ] as const) {
      assert.throws(() => toSpec({ type: 'disk', ...opts }), re, JSON.stringify(opts));
    }
  });
});

describe('finding an ECS disk by serial', () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of cleanups) await c();
  });

  it('names: the guest sees at most 20 bytes of serial; a disk with no serial is known by its ID', () => {
    assert.deepEqual(byIdNames('bp1g6zv0ce8oghu7k2efXYZ'), [
      'virtio-bp1g6zv0ce8oghu7k2ef',
      'nvme-Alibaba_Cloud_Elastic_Block_Storage_bp1g6zv0ce8oghu7k2ef',
    ]);
    assert.equal(serialOf('d-bp1aaa', ''), 'bp1aaa');
    assert.equal(serialOf('d-bp1aaa', 'serial9'), 'serial9');
  });

  it('follows virtio, NVMe and other links to a block device, relative or absolute, and ignores what is not one', async (t) => {
    const dev = await anyBlockDevice();
    if (!dev) return t.skip('no block device node on this machine');
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const byId = path.join(dir, 'by-id');
    await mkdir(byId);
    const ns = { pid: undefined };
    assert.equal(await findDeviceBySerial(ns, byId, 'serial1'), undefined);
    await symlink(dev, path.join(byId, 'virtio-serial1'));
    assert.equal(await findDeviceBySerial(ns, byId, 'serial1'), dev);
    await symlink(path.relative(byId, dev), path.join(byId, 'nvme-Alibaba_Cloud_Elastic_Block_Storage_serial2'));
    assert.equal(await findDeviceBySerial(ns, byId, 'serial2'), dev);
    await symlink(dev, path.join(byId, 'scsi-0ALIBABA_serial3'));
    assert.equal(await findDeviceBySerial(ns, byId, 'serial3'), dev, 'any link whose name holds the serial, as a last resort');
    await symlink('/dev/null', path.join(byId, 'virtio-serial4'));
    assert.equal(await findDeviceBySerial(ns, byId, 'serial4'), undefined, 'not a block device');
    await symlink(path.join(byId, 'loop'), path.join(byId, 'loop'));
    assert.equal(await findDeviceBySerial(ns, byId, 'loop'), undefined, 'a link loop ends');
  });
});

describe("the RAM role's credentials", () => {
  /** A metadata service double that hands out triples living `lifeMs`, numbered, or fails. */
  function metadata(lifeMs: number) {
    let n = 0;
    const double = {
      fail: false,
      calls: 0,
      async roleCredentials(): Promise<RoleCredentials> {
        double.calls++;
        if (double.fail) throw new Error('metadata down');
        n++;
        const now = Date.now();
        return { accessKeyId: `STS.${n}`, accessKeySecret: `s${n}`, securityToken: `t${n}`, issued: now, expiration: now + lifeMs };
      },
    };
    return double;
  }

  it('kept until a third of their life is left, then renewed; shared by concurrent callers', async () => {
    const md = metadata(3000);
    const role = new RamRoleCredentials(md as unknown as MetadataService);
    const [a, b] = await Promise.all([role.fresh(1000), role.fresh(1000)]);
    assert.equal(md.calls, 1);
    assert.equal(a.accessKeyId, b.accessKeyId);
    assert.equal((await role.fresh(1000)).accessKeyId, 'STS.1');
    await new Promise((r) => setTimeout(r, 2100));
    assert.equal((await role.fresh(1000)).accessKeyId, 'STS.2', 'renewed ahead of expiry');
    assert.equal((await role.getCredentials()).providerName, RamRoleCredentials.providerName);
  });

  it('while the service is down, still-valid credentials are used; expired ones never', async () => {
    const md = metadata(60_000);
    const role = new RamRoleCredentials(md as unknown as MetadataService);
    await role.fresh(1000);
    md.fail = true;
    role.forget();
    await assert.rejects(role.fresh(1000), /metadata down/, 'forgotten: nothing to fall back on');
    // In the renewal window, the service down: the old ones are used while they are valid, then refused.
    const short = metadata(3000);
    const r2 = new RamRoleCredentials(short as unknown as MetadataService);
    await r2.fresh(1000);
    short.fail = true;
    // Renewed from 2 s on; still usable until 0.3 s before the end.
    await new Promise((r) => setTimeout(r, 2200));
    assert.equal((await r2.fresh(1000)).accessKeyId, 'STS.1');
    assert.equal(short.calls, 2, 'a renewal was tried');
    await new Promise((r) => setTimeout(r, 800));
    await assert.rejects(r2.fresh(1000), /metadata down/);
  });
});
