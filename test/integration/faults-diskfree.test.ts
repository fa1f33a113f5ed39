// A FUSE client's temporary files and the state filesystem they share (s3fs keeps each open
// file's data in its tmpdir, <state>/fuse/tmp): a container writing a file larger than the free
// space must not fill it, or every Create, Mount and Unmount would fail for want of room. The
// real program as a host process, real s3fs, a real 200 MiB tmpfs as the state filesystem.
// Needs root (tmpfs, FUSE).
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { readMounts } from '../../src/host/mountinfo.js';
import { fuseClientPid, waitFor } from '../helpers/docker.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { freeBytes, mountedAt, mountTmpfs, Undo, unmountAll } from '../helpers/faults.js';
import { startPlugin, writeProfile, type PluginProcess } from '../helpers/plugin-process.js';
import { startS3, type S3Server } from '../helpers/s3.js';

const MiB = 2 ** 20;
const KEEP_FREE_MB = 64;
/**
 * s3fs 1.90 goes below its ensure_diskfree by a constant 5 MiB, half its multipart_size (10 MiB):
 * measured 25.0, 59.0 and 95.0 MiB at least with 30, 64 and 100. Without ensure_diskfree the
 * write fills the filesystem to its last block.
 */
const SLACK = 6 * MiB;

describe('the state filesystem and a FUSE client\'s temporary files', { skip: rootSkipReason(), timeout: 240_000 }, () => {
  const undo = new Undo();
  let dir: string;
  let stateDir: string;
  let s3: S3Server;
  let plugin: PluginProcess | undefined;

  before(async () => {
    const t = await tempDir();
    dir = t.dir;
    undo.add('the temporary directory', t.cleanup);
    stateDir = path.join(dir, 'state');
    await mountTmpfs(stateDir, '200m', undo);
    s3 = await startS3(['bucket'], { keys: { DISKFREEKEY: 'Diskfree-Secret-5a2e' } });
    undo.add('s3rver', () => s3.stop());
    // First, before the server and the directory go (a recursive delete would walk into a bucket): whatever a failed test left mounted.
    undo.add('mounts under the test directory', async () => {
      for (const m of (await readMounts()).reverse()) {
        if (m.mountPoint.startsWith(dir + '/') && m.mountPoint !== stateDir) await unmountAll(m.mountPoint);
      }
    });
  });
  after(async () => {
    await plugin?.stop();
    await undo.run();
  });

  it(`a 300 MB write through an OSS volume leaves OSSNAS_FUSE_DISKFREE (${KEEP_FREE_MB} MB) free on the state filesystem, and Creates keep working meanwhile`, async (t) => {
    plugin = await startPlugin(dir, { OSSNAS_FUSE_DISKFREE: String(KEEP_FREE_MB) });
    t.after(() => plugin?.stop());
    const call = (m: string, a: unknown) => plugin!.client.call(`VolumeDriver.${m}`, a);
    await writeProfile(plugin.credentialsDir, 'local', 'DISKFREEKEY', 'Diskfree-Secret-5a2e');
    assert.deepEqual((await call('Create', { Name: 'big', Opts: { type: 'oss', bucket: 'bucket', url: s3.url, credentials: 'local' } })).json, { Err: '' });
    const mp = path.join(plugin.mountRoot, 'big');
    assert.deepEqual((await call('Mount', { Name: 'big', ID: 'writer' })).json, { Mountpoint: mp, Err: '' });
    const freeBefore = await freeBytes(stateDir);

    // The container: a process of its own, never this one (its threads would wait on the mount).
    const writer = execa('dd', ['if=/dev/zero', `of=${mp}/big.bin`, 'bs=1M', 'count=300'], { reject: false, timeout: 180_000 });
    let writing = true;
    void writer.finally(() => (writing = false));
    // While it writes: the free space, as often as we can read it, and Creates one after another.
    let minFree = freeBefore;
    let samples = 0;
    const sampler = (async () => {
      while (writing) {
        minFree = Math.min(minFree, await freeBytes(stateDir));
        samples++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    const creates: string[] = [];
    const failedCreates: string[] = [];
    const creator = (async () => {
      while (writing) {
        const name = `during-${creates.length + failedCreates.length}`;
        const r = await call('Create', { Name: name, Opts: { type: 'nas', server: '10.0.0.1', path: `/${name}` } });
        if (r.json.Err === '') creates.push(name);
        else failedCreates.push(`${name}: ${r.text}`);
      }
    })();
    await Promise.all([sampler, creator]);
    const dd = await writer;
    t.diagnostic(
      `dd exit ${dd.exitCode} (${dd.stderr.split('\n').pop()}); state filesystem free: ${Math.round(freeBefore / MiB)} MiB before, ` +
        `${(minFree / MiB).toFixed(1)} MiB at least (${samples} samples); ${creates.length} Creates meanwhile`,
    );
    // The write did go through the state filesystem (else this proves nothing), and stopped short of the reserve.
    assert.ok(minFree < freeBefore - 50 * MiB, `the client's temporary file used the state filesystem (free ${minFree} of ${freeBefore})`);
    assert.ok(minFree >= KEEP_FREE_MB * MiB - SLACK, `free space fell to ${(minFree / MiB).toFixed(1)} MiB, below ${KEEP_FREE_MB} MiB`);
    assert.deepEqual(failedCreates, [], 'Creates while the write ran');
    assert.ok(creates.length >= 3, 'Creates ran while the write did');
    // s3fs 1.90 fails such a write with EIO (s3fs-fuse#1768) instead of uploading parts early:
    // whether it succeeded is s3fs's business; that the state filesystem stayed usable is ours.
    if (dd.exitCode !== 0) assert.match(dd.stderr, /Input\/output error|No space left on device/);

    // Everything still works: a change, the unmount, and the space comes back once the file is closed.
    assert.deepEqual((await call('Create', { Name: 'after', Opts: { type: 'nas', server: '10.0.0.1', path: '/after' } })).json, { Err: '' });
    for (const name of [...creates, 'after']) assert.deepEqual((await call('Remove', { Name: name })).json, { Err: '' });
    assert.deepEqual((await call('Unmount', { Name: 'big', ID: 'writer' })).json, { Err: '' });
    assert.equal(await mountedAt(mp), false);
    await waitFor('the s3fs of big to exit', async () => (await fuseClientPid(mp)) === undefined, 10_000, 100);
    assert.ok((await freeBytes(stateDir)) > freeBefore - 2 * MiB, 'the temporary file is gone');
  });

  // rclone 1.60 keeps no free space (no vfs_cache_min_free_space yet): its write cache goes on a
  // filesystem of its own, mounted at <state>/fuse/rclone (docs/operations.md). Here a 64 MiB
  // tmpfs; a 100 MB write fills it, and the state filesystem never notices.
  it('client=rclone with its write cache on a filesystem of its own: a write larger than it fails, Creates keep working, and the volume writes again once it is closed', async (t) => {
    await unmountAll(path.join(dir, 'volumes', 'big'));
    const cacheDir = path.join(stateDir, 'fuse', 'rclone');
    await mountTmpfs(cacheDir, '64m', undo);
    plugin = await startPlugin(dir, {});
    t.after(() => plugin?.stop());
    const call = (m: string, a: unknown) => plugin!.client.call(`VolumeDriver.${m}`, a);
    await writeProfile(plugin.credentialsDir, 'local', 'DISKFREEKEY', 'Diskfree-Secret-5a2e');
    const opts = { type: 'oss', bucket: 'bucket', url: s3.url, credentials: 'local', client: 'rclone', path: '/rclone' };
    assert.deepEqual((await call('Create', { Name: 'cached', Opts: opts })).json, { Err: '' });
    const mp = path.join(plugin.mountRoot, 'cached');
    assert.deepEqual((await call('Mount', { Name: 'cached', ID: 'writer' })).json, { Mountpoint: mp, Err: '' });
    await execa('sh', ['-c', `echo kept > ${mp}/small.txt`]);
    const stateFreeBefore = await freeBytes(stateDir);

    const writer = execa('dd', ['if=/dev/zero', `of=${mp}/big.bin`, 'bs=1M', 'count=100'], { reject: false, timeout: 120_000 });
    let writing = true;
    void writer.finally(() => (writing = false));
    const failedCreates: string[] = [];
    let creates = 0;
    let minStateFree = stateFreeBefore;
    while (writing) {
      minStateFree = Math.min(minStateFree, await freeBytes(stateDir));
      const r = await call('Create', { Name: `during-${creates}`, Opts: { type: 'nas', server: '10.0.0.1', path: `/d${creates}` } });
      if (r.json.Err === '') creates++;
      else failedCreates.push(r.text);
    }
    const dd = await writer;
    t.diagnostic(`dd exit ${dd.exitCode}: ${dd.stderr.split('\n').slice(-2).join(' / ')}; cache free ${await freeBytes(cacheDir)}; state free ${(stateFreeBefore / MiB).toFixed(1)} MiB before, ${(minStateFree / MiB).toFixed(1)} MiB at least; ${creates} Creates meanwhile`);
    assert.notEqual(dd.exitCode, 0, 'a write larger than the cache went through: this run shows nothing');
    assert.match(dd.stderr, /No space left on device|Input\/output error/);
    assert.deepEqual(failedCreates, []);
    assert.ok(minStateFree > stateFreeBefore - 2 * MiB, 'the write used the state filesystem');

    // Nothing acknowledged is lost, and the volume writes again once the big file is gone.
    // Uploaded 1 s after its close (rclone's write-back), whatever the full cache.
    await waitFor('small.txt in the bucket', async () => (await s3.getObject('bucket', 'rclone/small.txt')) === 'kept\n', 10_000, 100);
    assert.doesNotMatch(plugin.output(), /write caches are on the state filesystem/, 'warned of a cache that has a filesystem of its own');
    await execa('rm', ['-f', `${mp}/big.bin`]);
    await waitFor('the cache to have room again', async () => (await freeBytes(cacheDir)) > 32 * MiB, 30_000, 200);
    await execa('sh', ['-c', `echo after > ${mp}/after.txt`]);
    assert.deepEqual((await call('Unmount', { Name: 'cached', ID: 'writer' })).json, { Err: '' });
    assert.equal(await s3.getObject('bucket', 'rclone/after.txt'), 'after\n');
    for (let i = 0; i < creates; i++) assert.deepEqual((await call('Remove', { Name: `during-${i}` })).json, { Err: '' });
    assert.deepEqual((await call('Remove', { Name: 'cached' })).json, { Err: '' });
    await unmountAll(cacheDir);
  });

  it('with OSSNAS_FUSE_DISKFREE larger than the free space, Mount fails naming the setting, and leaves nothing mounted', async (t) => {
    await unmountAll(path.join(dir, 'volumes', 'big')); // left by the test before, if it failed
    plugin = await startPlugin(dir, { OSSNAS_FUSE_DISKFREE: '1000' });
    t.after(() => plugin?.stop());
    const call = (m: string, a: unknown) => plugin!.client.call(`VolumeDriver.${m}`, a);
    assert.deepEqual((await call('Create', { Name: 'greedy', Opts: { type: 'oss', bucket: 'bucket', url: s3.url, credentials: 'local' } })).json, { Err: '' });
    const r = await call('Mount', { Name: 'greedy', ID: 'too-much' });
    assert.equal(r.status, 500);
    assert.match(
      String(r.json.Err),
      new RegExp(`^volume greedy: mounting bucket bucket at .* failed: s3fs .*no enough disk space.* \\(the filesystem of ${stateDir} has less free space than the client must leave: OSSNAS_FUSE_DISKFREE=1000 MB, plus about 50 MB\\)$`, 's'),
    );
    const mp = path.join(plugin.mountRoot, 'greedy');
    assert.equal(await mountedAt(mp), false);
    assert.equal(await fuseClientPid(mp), undefined);
    const st = ((await call('Get', { Name: 'greedy' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.deepEqual([st.refs, st.mounted, st.health], [0, false, 'error']);
  });
});
