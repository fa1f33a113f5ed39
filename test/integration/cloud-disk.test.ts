// Cloud disk volumes (type=disk diskId=...) through the real program as two plain host processes,
// one per simulated ECS instance, against the local control plane (helpers/ecs-cloud): real loop
// devices stand in for attached disks, and mkfs, mount and the data are real. Needs root.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { readMounts } from '../../src/host/mountinfo.js';
import { EcsCloud, type SimInstance } from '../helpers/ecs-cloud.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { holdMount, holdVolume } from '../helpers/holder.js';
import { finishPlugin, startPlugin, writeProfile, type PluginProcess } from '../helpers/plugin-process.js';

const ID = (n: number) => String(n).padStart(64, 'c');
const MOUNT_TIMEOUT_S = 8;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('cloud disk volumes: attached on demand, following the volume between instances', { skip: rootSkipReason(), timeout: 600_000 }, () => {
  let cloud: EcsCloud;
  let a: SimInstance;
  let b: SimInstance;
  let hostA: PluginProcess;
  let hostB: PluginProcess;
  let cleanup: () => Promise<void>;

  const env = (i: SimInstance, extra: Record<string, string> = {}) => ({
    OSSNAS_METADATA_URL: i.metadataUrl,
    OSSNAS_ECS_ENDPOINT: cloud.endpoint,
    OSSNAS_DEVICE_BY_ID_DIR: i.byIdDir,
    OSSNAS_MOUNT_TIMEOUT: String(MOUNT_TIMEOUT_S),
    ...extra,
  });
  const call = (host: PluginProcess, m: string, args: unknown) => host.client.call(`VolumeDriver.${m}`, args);
  const status = async (host: PluginProcess, name: string) =>
    ((await call(host, 'Get', { Name: name })).json.Volume as { Status: Record<string, unknown> }).Status;
  const mountAt = async (p: string) => (await readMounts()).find((m) => m.mountPoint === p);

  /** A control plane of its own whose attaches take `attachMs`, and a host on it, for `fn`; both gone afterwards. */
  async function onOwnCloud(name: string, attachMs: number, fn: (cloud: EcsCloud, host: PluginProcess) => Promise<void>): Promise<void> {
    const own = await EcsCloud.start({ dir: path.join(hostA.dir, `${name}-cloud`), attachMs });
    const i = await own.addInstance(`i-${name}`.padEnd(22, '0'));
    const host = await startPlugin(path.join(hostA.dir, `${name}-host`), { ...env(i), OSSNAS_ECS_ENDPOINT: own.endpoint });
    try {
      await fn(own, host);
    } finally {
      await finishPlugin(host);
      await own.close();
    }
  }

  before(async () => {
    const t = await tempDir('ossnas-cloud-');
    cleanup = t.cleanup;
    cloud = await EcsCloud.start({ dir: path.join(t.dir, 'cloud'), accessKeys: { LTAIprofilekey00001: 'profile-secret-0123456789' } });
    a = await cloud.addInstance('i-hosta0000000000001');
    // Credentials that expire during the suite: refreshed before expiry, never used after it.
    b = await cloud.addInstance('i-hostb0000000000002', { credentialTtlMs: 9000, naming: 'nvme' });
    hostA = await startPlugin(path.join(t.dir, 'a'), env(a));
    hostB = await startPlugin(path.join(t.dir, 'b'), env(b));
  });
  after(async () => {
    await finishPlugin(hostA);
    await finishPlugin(hostB);
    await cloud?.close();
    await cleanup?.();
  });

  it('refuses bad options and a disk the region does not have, naming them', async () => {
    const bad: Array<[Record<string, string>, RegExp]> = [
      [{ type: 'disk', diskId: 'vol-123' }, /invalid option 'diskId': expected an ECS disk ID/],
      [{ type: 'disk', diskId: 'd-abcdef123456', size: '1G' }, /give one of size, device or diskId, not size and diskId/],
      [{ type: 'disk', size: '1G', forceDetach: 'true' }, /invalid option 'forceDetach': only a cloud disk \(diskId=\) takes it/],
      [{ type: 'disk', diskId: 'd-abcdef123456', detach: 'maybe' }, /invalid option 'detach': expected true or false/],
      [{ type: 'disk', diskId: 'd-nosuchdisk0000000000' }, /disk d-nosuchdisk0000000000 does not exist in region cn-hangzhou/],
    ];
    for (const [opts, re] of bad) {
      const r = await call(hostA, 'Create', { Name: 'bad', Opts: opts });
      assert.equal(r.status, 500, JSON.stringify(opts));
      assert.match(String(r.json.Err), re);
    }
    assert.deepEqual((await call(hostA, 'List', {})).json.Volumes, []);
  });

  it('attaches at Mount, formats once, detaches at the last Unmount; the data follows to the other instance', async () => {
    const disk = await cloud.addDisk({ sizeMiB: 64 });
    for (const host of [hostA, hostB]) {
      assert.deepEqual((await call(host, 'Create', { Name: 'db', Opts: { type: 'disk', diskId: disk.diskId } })).json, { Err: '' });
    }
    let r = await call(hostA, 'Mount', { Name: 'db', ID: ID(1) });
    assert.equal(r.status, 200, r.text);
    const mpA = String(r.json.Mountpoint);
    assert.equal(cloud.disk(disk.diskId).status, 'In_use');
    assert.equal(cloud.disk(disk.diskId).instanceId, a.id);
    const dev = cloud.disk(disk.diskId).device;
    assert.deepEqual([(await mountAt(mpA))?.source, (await mountAt(mpA))?.fsType], [dev, 'ext4']);
    let st = await status(hostA, 'db');
    assert.deepEqual([st.diskId, st.instanceId, st.device, st.attachState, st.detach], [disk.diskId, a.id, dev, 'In_use', true]);
    await writeFile(path.join(mpA, 'rows.txt'), 'written on A\n');

    // A second reference on the same host shares the attachment.
    assert.equal((await call(hostA, 'Mount', { Name: 'db', ID: ID(2) })).status, 200);
    await call(hostA, 'Unmount', { Name: 'db', ID: ID(2) });
    assert.equal(cloud.disk(disk.diskId).instanceId, a.id, 'still attached while a reference is left');

    // While A holds it, B is refused, naming A; nothing is attached to B.
    r = await call(hostB, 'Mount', { Name: 'db', ID: ID(3) });
    assert.equal(r.status, 500);
    assert.match(String(r.json.Err), new RegExp(`disk ${disk.diskId} is attached to instance ${a.id}, not to this one \\(${b.id}\\)`));
    assert.match(String(r.json.Err), /forceDetach=true/);
    assert.equal(cloud.disk(disk.diskId).instanceId, a.id);

    await call(hostA, 'Unmount', { Name: 'db', ID: ID(1) });
    assert.equal(await mountAt(mpA), undefined);
    assert.equal(cloud.disk(disk.diskId).status, 'Available', 'the last Unmount waits until the disk can be attached elsewhere');
    st = await status(hostA, 'db');
    assert.deepEqual([st.attachState, st.instanceId, st.mounted], ['Available', '', false]);

    r = await call(hostB, 'Mount', { Name: 'db', ID: ID(4) });
    assert.equal(r.status, 200, r.text);
    const mpB = String(r.json.Mountpoint);
    assert.equal(cloud.disk(disk.diskId).instanceId, b.id);
    assert.equal(await readFile(path.join(mpB, 'rows.txt'), 'utf8'), 'written on A\n', 'the data followed, not reformatted');
    await call(hostB, 'Unmount', { Name: 'db', ID: ID(4) });
    assert.equal(cloud.disk(disk.diskId).status, 'Available');

    // Remove forgets the volume, never the disk.
    for (const host of [hostA, hostB]) assert.deepEqual((await call(host, 'Remove', { Name: 'db' })).json, { Err: '' });
    assert.equal(cloud.disk(disk.diskId).status, 'Available');
  });

  it('a disk whose filesystem a container still holds after the last Unmount stays attached until it goes', async () => {
    const disk = await cloud.addDisk({ sizeMiB: 32 });
    await call(hostA, 'Create', { Name: 'kept', Opts: { type: 'disk', diskId: disk.diskId } });
    // A "container" that binds the volume and outlives its reference (Mount, bind, Unmount).
    const holder = await holdVolume(hostA.client, 'kept', path.join(hostA.dir, 'holder-kept'));
    try {
      assert.deepEqual([cloud.disk(disk.diskId).status, cloud.disk(disk.diskId).instanceId], ['In_use', a.id], 'not pulled from under it');
      const st = await status(hostA, 'kept');
      assert.match(String(st.note), /still mounted on this host \(PID \d+: .*holder-kept\); detached once nothing holds it/);
      assert.deepEqual([st.refs, st.mounted], [0, false]);
    } finally {
      await holder.release();
    }
    await waitFor('the disk to be detached once nothing holds it', () => (cloud.disk(disk.diskId).status === 'Available' ? true : undefined), 60_000);
  });

  it('takes a disk from another instance only with forceDetach, and only at a Mount', async () => {
    const disk = await cloud.addDisk({ sizeMiB: 32 });
    await cloud.attachTo(disk.diskId, b.id);
    await call(hostA, 'Create', { Name: 'held', Opts: { type: 'disk', diskId: disk.diskId } });
    let r = await call(hostA, 'Mount', { Name: 'held', ID: ID(5) });
    assert.match(String(r.json.Err), new RegExp(`attached to instance ${b.id}`));
    assert.equal(cloud.disk(disk.diskId).instanceId, b.id);
    assert.deepEqual((await call(hostA, 'Remove', { Name: 'held' })).json, { Err: '' });

    await call(hostA, 'Create', { Name: 'forced', Opts: { type: 'disk', diskId: disk.diskId, forceDetach: 'true', detach: 'false' } });
    r = await call(hostA, 'Mount', { Name: 'forced', ID: ID(6) });
    assert.equal(r.status, 200, r.text);
    assert.equal(cloud.disk(disk.diskId).instanceId, a.id);
    assert.ok(cloud.requests.some((q) => q.action === 'DetachDisk' && q.params.InstanceId === b.id && q.code === 'OK'));
    assert.match(hostA.output(), /forceDetach: detaching the disk from the instance that holds it/);

    // detach=false: the disk stays attached here after the last Unmount.
    await call(hostA, 'Unmount', { Name: 'forced', ID: ID(6) });
    assert.deepEqual([cloud.disk(disk.diskId).status, cloud.disk(disk.diskId).instanceId], ['In_use', a.id]);
    assert.equal((await status(hostA, 'forced')).attachState, 'In_use');
    // ...and the next Mount uses the attachment it finds.
    const attaches = cloud.requests.filter((q) => q.action === 'AttachDisk').length;
    assert.equal((await call(hostA, 'Mount', { Name: 'forced', ID: ID(7) })).status, 200);
    assert.equal(cloud.requests.filter((q) => q.action === 'AttachDisk').length, attaches);
    await call(hostA, 'Unmount', { Name: 'forced', ID: ID(7) });
  });

  it("uses a credentials profile when the volume names one, and says when the API refuses it", async () => {
    await writeProfile(hostA.credentialsDir, 'ecs-ops', 'LTAIprofilekey00001', 'profile-secret-0123456789');
    await writeProfile(hostA.credentialsDir, 'ecs-wrong', 'LTAIprofilekey00001', 'not-the-secret-000000000');
    const disk = await cloud.addDisk({ sizeMiB: 32 });
    await call(hostA, 'Create', { Name: 'prof', Opts: { type: 'disk', diskId: disk.diskId, ecsCredentials: 'ecs-ops' } });
    assert.equal((await call(hostA, 'Mount', { Name: 'prof', ID: ID(8) })).status, 200);
    await call(hostA, 'Unmount', { Name: 'prof', ID: ID(8) });
    const used = cloud.requests.filter((q) => q.params.DiskId === disk.diskId || String(q.params.DiskIds ?? '').includes(disk.diskId));
    assert.ok(used.length >= 4 && used.every((q) => q.accessKeyId === 'LTAIprofilekey00001' && q.code === 'OK'));

    const other = await cloud.addDisk({ sizeMiB: 32 });
    // Create cannot check the disk with keys the API refuses: it records the volume, and the Mount says why.
    await call(hostA, 'Create', { Name: 'wrong', Opts: { type: 'disk', diskId: other.diskId, ecsCredentials: 'ecs-wrong' } });
    const r = await call(hostA, 'Mount', { Name: 'wrong', ID: ID(9) });
    assert.match(String(r.json.Err), /ECS DescribeDisks was refused: SignatureDoesNotMatch \(HTTP 400\)/);
    assert.doesNotMatch(String(r.json.Err) + hostA.output(), /not-the-secret|profile-secret/);
    assert.equal(cloud.disk(other.diskId).status, 'Available');
  });

  it("refreshes the RAM role's credentials before they expire", async () => {
    // B's role credentials live 9 s: three rounds of Mount and Unmount spread over 20 s.
    const disk = await cloud.addDisk({ sizeMiB: 32 });
    await call(hostB, 'Create', { Name: 'role', Opts: { type: 'disk', diskId: disk.diskId } });
    const before = b.credentialsIssued;
    for (let round = 0; round < 3; round++) {
      const r = await call(hostB, 'Mount', { Name: 'role', ID: ID(10 + round) });
      assert.equal(r.status, 200, r.text);
      await call(hostB, 'Unmount', { Name: 'role', ID: ID(10 + round) });
      await new Promise((res) => setTimeout(res, 7000));
    }
    const mine = cloud.requests.filter((q) => q.params.InstanceId === b.id || String(q.params.DiskIds ?? '').includes(disk.diskId));
    const keys = new Set(mine.map((q) => q.accessKeyId));
    assert.ok(b.credentialsIssued - before >= 2, `new credentials were fetched (${b.credentialsIssued - before})`);
    assert.ok(keys.size >= 2, `calls used ${keys.size} STS key(s)`);
    assert.deepEqual(mine.filter((q) => q.code !== 'OK').map((q) => `${q.action} ${q.code}`), [], 'no call used expired credentials');
  });

  it('fails a Mount within its deadline, naming the step, when the control plane hangs or is down', async () => {
    const disk = await cloud.addDisk({ sizeMiB: 32 });
    await call(hostA, 'Create', { Name: 'cp', Opts: { type: 'disk', diskId: disk.diskId } });
    for (const [mode, re] of [
      ['hang', /looking up disk .* \(DescribeDisks\): ECS DescribeDisks did not answer within \d+ ms/],
      // The SDK's kept-alive connection may be reset rather than refused.
      ['down', /ECS DescribeDisks failed: the API at .* cannot be reached \((ECONNREFUSED|ECONNRESET)\)/],
    ] as const) {
      cloud.faults.mode = mode;
      const t0 = Date.now();
      const r = await call(hostA, 'Mount', { Name: 'cp', ID: ID(20) });
      const ms = Date.now() - t0;
      cloud.faults.mode = 'up';
      assert.equal(r.status, 500);
      assert.match(String(r.json.Err), re);
      // A functional bound, not a speed one: Docker gives up at 30 s, and the deadline is 8 s.
      assert.ok(ms < MOUNT_TIMEOUT_S * 1000 + 5000, `answered after ${ms} ms`);
      assert.equal(cloud.disk(disk.diskId).status, 'Available');
    }
  });

  it('an AttachDisk whose answer comes too late still attached the disk: the Mount undoes it', async () => {
    const disk = await cloud.addDisk({ sizeMiB: 32 });
    await call(hostA, 'Create', { Name: 'lost', Opts: { type: 'disk', diskId: disk.diskId } });
    cloud.faults.delayOnly = 'AttachDisk';
    cloud.faults.delayMs = 20_000;
    try {
      const r = await call(hostA, 'Mount', { Name: 'lost', ID: ID(24) });
      assert.match(String(r.json.Err), /attaching disk .* \(AttachDisk\): ECS AttachDisk did not answer within \d+ ms/);
    } finally {
      cloud.faults.delayMs = 0;
      cloud.faults.delayOnly = undefined;
    }
    assert.ok(cloud.requests.some((q) => q.action === 'AttachDisk' && q.params.DiskId === disk.diskId && q.code === 'OK'), 'ECS did attach it');
    await waitFor('the disk to be detached again', () => (cloud.disk(disk.diskId).status === 'Available' ? true : undefined), 30_000);
    assert.ok(!cloud.disk(disk.diskId).instanceId);
  });

  it('lookups throttled by ECS while a Mount waits for the attach: it waits on, and mounts', async () => {
    await onOwnCloud('throttled', 3000, async (slow, host) => {
      const disk = await slow.addDisk({ sizeMiB: 32 });
      await call(host, 'Create', { Name: 'busy', Opts: { type: 'disk', diskId: disk.diskId } });
      const mounting = call(host, 'Mount', { Name: 'busy', ID: ID(23) });
      await waitFor('AttachDisk', () => (slow.requests.some((q) => q.action === 'AttachDisk' && q.code === 'OK') ? true : undefined), 20_000);
      slow.faults.mode = 'throttle';
      await waitFor('a throttled lookup', () => (slow.requests.some((q) => q.code === 'Throttling.User') ? true : undefined), 20_000);
      await new Promise((r) => setTimeout(r, 1000));
      slow.faults.mode = 'up';
      const r = await mounting;
      assert.equal(r.status, 200, r.text);
      assert.ok(slow.requests.filter((q) => q.code === 'Throttling.User').length >= 1);
      await call(host, 'Unmount', { Name: 'busy', ID: ID(23) });
      assert.equal(slow.disk(disk.diskId).status, 'Available');
    });
  });

  it('a disk left attaching when the Mount gave up is detached once ECS finishes, never left behind', async () => {
    await onOwnCloud('slow', 12_000, async (slow, host) => {
      const disk = await slow.addDisk({ sizeMiB: 32 });
      await call(host, 'Create', { Name: 'late', Opts: { type: 'disk', diskId: disk.diskId } });
      const r = await call(host, 'Mount', { Name: 'late', ID: ID(21) });
      assert.match(String(r.json.Err), /timed out after 8 s \(OSSNAS_MOUNT_TIMEOUT\) waiting for disk .* to be attached here: it is Attaching/);
      // The attach completes after the Mount gave up; the plugin detaches it by itself.
      await waitFor('the disk to be attached, then detached again', () =>
        slow.requests.some((q) => q.action === 'DetachDisk' && q.code === 'OK') && slow.disk(disk.diskId).status === 'Available' ? true : undefined,
      );
      assert.ok(!slow.disk(disk.diskId).instanceId, 'attached nowhere');
      assert.match(host.output(), /cloud disk left attached for now; detached later/);
    });
  });

  it('after kill -9, a held, mounted disk is adopted as it is: no attach, no detach, and Status says where it is', async () => {
    const disk = await cloud.addDisk({ sizeMiB: 32 });
    await call(hostA, 'Create', { Name: 'adopted', Opts: { type: 'disk', diskId: disk.diskId } });
    const r = await call(hostA, 'Mount', { Name: 'adopted', ID: ID(31) });
    assert.equal(r.status, 200, r.text);
    const holder = await holdMount(String(r.json.Mountpoint), path.join(hostA.dir, 'holder-adopted'));
    try {
      hostA.child.kill('SIGKILL');
      const before = cloud.requests.length;
      hostA = await hostA.restart();
      const st = await waitFor('the restore to look the disk up', async () => {
        const s = await status(hostA, 'adopted');
        return s.attachState ? s : undefined;
      });
      assert.deepEqual([st.refs, st.mounted, st.health, st.attachState, st.instanceId, st.device], [1, true, 'ok', 'In_use', a.id, cloud.disk(disk.diskId).device]);
      assert.deepEqual(cloud.requests.slice(before).filter((q) => q.params.DiskId === disk.diskId).map((q) => q.action), [], 'no AttachDisk or DetachDisk');
      assert.deepEqual((await call(hostA, 'Unmount', { Name: 'adopted', ID: ID(31) })).json, { Err: '' });
    } finally {
      await holder.release();
    }
    await waitFor('the disk to be detached once its holder is gone', () => (cloud.disk(disk.diskId).status === 'Available' ? true : undefined), 60_000);
  });

  it('after a restart, a held volume whose disk went to another instance is reported, never taken back, even with forceDetach', async () => {
    const disk = await cloud.addDisk({ sizeMiB: 32 });
    await call(hostA, 'Create', { Name: 'moved', Opts: { type: 'disk', diskId: disk.diskId, forceDetach: 'true' } });
    const r = await call(hostA, 'Mount', { Name: 'moved', ID: ID(30) });
    assert.equal(r.status, 200, r.text);
    hostA.child.kill('SIGKILL');
    // While the plugin is down, its mount goes and the disk is attached to B (by hand, or by B).
    await execa('umount', [String(r.json.Mountpoint)]);
    await cloud.detachFrom(disk.diskId, a.id);
    await cloud.attachTo(disk.diskId, b.id);
    const before = cloud.requests.length;
    hostA = await hostA.restart();
    const st = await waitFor('the repair to report the disk elsewhere', async () => {
      const s = await status(hostA, 'moved');
      return /attached to instance/.test(String(s.lastError ?? '')) ? s : undefined;
    });
    assert.match(String(st.lastError), new RegExp(`disk ${disk.diskId} is attached to instance ${b.id}, not to this one \\(${a.id}\\)`));
    assert.doesNotMatch(String(st.lastError), /forceDetach/, 'a repair does not offer to force');
    assert.deepEqual([st.refs, st.health, st.attachState, st.instanceId], [1, 'error', 'In_use', b.id]);
    assert.deepEqual(cloud.requests.slice(before).filter((q) => q.action !== 'DescribeDisks').map((q) => q.action), [], 'nothing but lookups');
    assert.equal(cloud.disk(disk.diskId).instanceId, b.id);
    // Its container goes: the reference with it, and B keeps the disk.
    assert.deepEqual((await call(hostA, 'Unmount', { Name: 'moved', ID: ID(30) })).json, { Err: '' });
    assert.equal(cloud.disk(disk.diskId).instanceId, b.id);
    await cloud.detachFrom(disk.diskId, b.id);
  });

  it('kill -9 between AttachDisk and the mount: the restarted plugin detaches the disk', async () => {
    const disk = await cloud.addDisk({ sizeMiB: 32 });
    await call(hostA, 'Create', { Name: 'k9', Opts: { type: 'disk', diskId: disk.diskId } });
    const mounting = call(hostA, 'Mount', { Name: 'k9', ID: ID(22) }).catch(() => undefined);
    await waitFor('AttachDisk', () => (cloud.requests.some((q) => q.action === 'AttachDisk' && q.params.DiskId === disk.diskId) ? true : undefined), 20_000);
    hostA.child.kill('SIGKILL');
    await mounting;
    await waitFor('the simulated attach to finish', () => (cloud.disk(disk.diskId).status === 'In_use' ? true : undefined), 20_000);
    hostA = await hostA.restart();
    await waitFor('the restarted plugin to detach the orphaned disk, and see it detached', async () =>
      cloud.disk(disk.diskId).status === 'Available' && (await status(hostA, 'k9')).attachState === 'Available' ? true : undefined,
    );
    assert.ok(cloud.requests.some((q) => q.action === 'DetachDisk' && q.params.DiskId === disk.diskId && q.code === 'OK'));
    const st = await status(hostA, 'k9');
    assert.deepEqual([st.refs, st.mounted, st.attachState], [0, false, 'Available']);
    assert.deepEqual((await call(hostA, 'Remove', { Name: 'k9' })).json, { Err: '' });
  });
});
