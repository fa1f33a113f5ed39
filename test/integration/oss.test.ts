// Real s3fs against a real S3 server (s3rver, behind a front that checks signatures as S3 does),
// through the plugin's API, with the program running as a plain host process. Needs root (FUSE
// mounts).
import assert from 'node:assert/strict';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { ALLOWED_OTHER_OPTS } from '../../src/backends/oss/other-opts.js';
import { readMounts } from '../../src/host/mountinfo.js';
import { isMemoryBacked } from '../../src/host/tmpfs.js';
import { fuseClientPid, processesWith } from '../helpers/docker.js';
import { rootSkipReason } from '../helpers/env.js';
import { holdMount } from '../helpers/holder.js';
import { finishPlugin, startPlugin, startPluginInTempDir, writeProfile, type PluginProcess } from '../helpers/plugin-process.js';
import { startS3, type KeySet, type S3Server } from '../helpers/s3.js';
import { SLOW_MS, startSwitchProxy } from '../helpers/switch-proxy.js';

// The server knows these keys and no other: a mount with a wrong secret would fail.
const AK_ID = 'OSSINTEGRATIONKEY';
const SECRET = 'Integration-Secret-7f3a9';
const STS_ID = 'OSSINTEGRATIONSTS';
const STS_SECRET = 'Integration-Sts-Secret-2c41';
const TOKEN_BEFORE = 'token-before-rotation-1234';
const TOKEN_AFTER = 'token-after-rotation-5678';
const serverKeys = (stsToken: string): KeySet => ({ [AK_ID]: SECRET, [STS_ID]: { secret: STS_SECRET, token: stsToken } });
const ID = (n: number) => String(n).repeat(64).slice(0, 64);

async function fuseMountAt(target: string) {
  return (await readMounts()).find((m) => m.mountPoint === target);
}

describe('OSS volumes with s3fs against a local S3 server', { skip: rootSkipReason(), timeout: 180_000 }, () => {
  let s3: S3Server;
  let plugin: PluginProcess;
  const call = (m: string, a: unknown) => plugin.client.call(`VolumeDriver.${m}`, a);

  before(async () => {
    s3 = await startS3(['bucket-one', 'bucket-two'], { keys: serverKeys(TOKEN_BEFORE) });
    plugin = await startPluginInTempDir({ OSSNAS_MOUNT_TIMEOUT: '6' });
    await writeProfile(plugin.credentialsDir, 'local', AK_ID, SECRET);
  });
  after(async () => {
    await finishPlugin(plugin);
    await s3?.stop();
  });

  it('create, mount, write, read the object back from the server, unmount, remove (data kept)', async () => {
    let r = await call('Create', { Name: 'data', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'local' } });
    assert.deepEqual(r.json, { Err: '' });
    r = await call('Mount', { Name: 'data', ID: ID(1) });
    assert.equal(r.status, 200, r.text);
    const mp = String(r.json.Mountpoint);
    assert.equal(mp, path.join(plugin.mountRoot, 'data'));
    assert.equal((await fuseMountAt(mp))?.fsType, 'fuse.s3fs');
    assert.match((await fuseMountAt(mp))!.options + (await fuseMountAt(mp))!.source, /s3fs/);

    await writeFile(path.join(mp, 'hello.txt'), 'hello from ossnas\n');
    assert.equal(await s3.getObject('bucket-one', 'hello.txt'), 'hello from ossnas\n');

    // The passwd file is gone once the mount is ready, and no argv carries the secret.
    assert.deepEqual(await readdir(path.join(plugin.runDir, 'oss', 'data')).catch(() => []), []);
    // It was never on a disk: the run directory is a tmpfs (the plugin mounted one, as it was not).
    assert.equal(await isMemoryBacked(plugin.runDir), true, 'the keys were handed over on a disk');
    assert.deepEqual(await processesWith(SECRET), [], 'a process argv holds the secret');

    const st = (await call('Get', { Name: 'data' })).json.Volume as { Status: Record<string, unknown> };
    assert.deepEqual(
      [st.Status.type, st.Status.bucket, st.Status.mounted, st.Status.refs, st.Status.health, st.Status.credentials],
      ['oss', 'bucket-one', true, 1, 'ok', 'profile local'],
    );

    r = await call('Unmount', { Name: 'data', ID: ID(1) });
    assert.deepEqual(r.json, { Err: '' });
    assert.equal(await fuseMountAt(mp), undefined);
    r = await call('Remove', { Name: 'data' });
    assert.deepEqual(r.json, { Err: '' });
    assert.deepEqual(await s3.keys('bucket-one'), ['hello.txt'], 'Remove must never delete backend data');
    assert.ok(!plugin.output().includes(SECRET), 'the log holds the secret');
  });

  it('shares one mount between mount IDs; the first Unmount leaves it for the other', async () => {
    await call('Create', { Name: 'shared', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'local' } });
    const mp = String((await call('Mount', { Name: 'shared', ID: ID(2) })).json.Mountpoint);
    await call('Mount', { Name: 'shared', ID: ID(3) });
    const s3fsMounts = (await readMounts()).filter((m) => m.mountPoint === mp);
    assert.equal(s3fsMounts.length, 1, 'a second ID must not mount again');
    await call('Unmount', { Name: 'shared', ID: ID(2) });
    assert.ok(await fuseMountAt(mp));
    assert.equal(await readFile(path.join(mp, 'hello.txt'), 'utf8'), 'hello from ossnas\n');
    await call('Unmount', { Name: 'shared', ID: ID(3) });
    assert.equal(await fuseMountAt(mp), undefined);
    assert.deepEqual((await call('Remove', { Name: 'shared' })).json, { Err: '' });
  });

  it('honours path, uid, gid, umask, readonly and allow-listed otherOpts', async () => {
    await call('Create', {
      Name: 'sub',
      Opts: {
        type: 'oss', bucket: 'bucket-two', url: s3.url, credentials: 'local', path: '/team/a',
        uid: '1234', gid: '2345', umask: '027', otherOpts: '-o stat_cache_expire=30',
      },
    });
    const mp = String((await call('Mount', { Name: 'sub', ID: ID(4) })).json.Mountpoint);
    await writeFile(path.join(mp, 'f.txt'), 'x');
    assert.deepEqual(await s3.keys('bucket-two'), ['team/a/f.txt']);
    const st = await stat(path.join(mp, 'f.txt'));
    assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [1234, 2345, 0o750]);
    const m = await fuseMountAt(mp);
    assert.match(m!.options + ' ' + (await readMountOptions(mp)), /allow_other/);
    assert.match(await s3fsCommandLine(mp), /-o stat_cache_expire=30/);
    await call('Unmount', { Name: 'sub', ID: ID(4) });

    await call('Create', { Name: 'ro', Opts: { type: 'oss', bucket: 'bucket-two', url: s3.url, credentials: 'local', readonly: 'true' } });
    const ro = String((await call('Mount', { Name: 'ro', ID: ID(5) })).json.Mountpoint);
    assert.equal(await readFile(path.join(ro, 'team/a/f.txt'), 'utf8'), 'x');
    await assert.rejects(writeFile(path.join(ro, 'nope.txt'), 'x'), /EROFS|read-only/);
    await call('Unmount', { Name: 'ro', ID: ID(5) });
  });

  it('inline credentials work and never show in Status, errors or logs', async () => {
    const opts = { type: 'oss', bucket: 'nosuchbucket', url: s3.url, akId: AK_ID, akSecret: SECRET };
    await call('Create', { Name: 'inline', Opts: { ...opts, bucket: 'bucket-one' } });
    const ok = await call('Mount', { Name: 'inline', ID: ID(6) });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(await processesWith(SECRET), []);
    const st = await call('Get', { Name: 'inline' });
    assert.ok(!st.text.includes(SECRET) && !st.text.includes(AK_ID));
    assert.match(st.text, /"credentials":"inline"/);
    await call('Unmount', { Name: 'inline', ID: ID(6) });

    await call('Create', { Name: 'inline-bad', Opts: opts });
    const bad = await call('Mount', { Name: 'inline-bad', ID: ID(7) });
    assert.equal(bad.status, 500);
    assert.ok(!bad.text.includes(SECRET));
    assert.ok(!plugin.output().includes(SECRET));
  });

  it('a bucket that does not exist fails with s3fs\'s own words and leaves nothing mounted', async () => {
    await call('Create', { Name: 'missing', Opts: { type: 'oss', bucket: 'nosuchbucket', url: s3.url, credentials: 'local' } });
    const r = await call('Mount', { Name: 'missing', ID: ID(8) });
    assert.equal(r.status, 500);
    assert.match(String(r.json.Err), /volume missing: mounting bucket nosuchbucket .* failed: s3fs .*bucket or key not found/);
    assert.equal(await fuseMountAt(path.join(plugin.mountRoot, 'missing')), undefined);
    assert.equal(await s3fsCommandLine(path.join(plugin.mountRoot, 'missing')), '');
    const st = ((await call('Get', { Name: 'missing' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.deepEqual([st.refs, st.mounted, st.health], [0, false, 'error']);
    assert.match(String(st.lastError), /bucket or key not found/);
    // Docker's Unmount after a failed Mount is harmless.
    assert.deepEqual((await call('Unmount', { Name: 'missing', ID: ID(8) })).json, { Err: '' });
  });

  it('an endpoint where nothing listens fails at once, saying so, and leaves nothing mounted', async () => {
    await call('Create', { Name: 'dead', Opts: { type: 'oss', bucket: 'bucket-one', url: 'http://127.0.0.1:9', credentials: 'local', otherOpts: '-o retries=1 -o connect_timeout=2' } });
    const t0 = Date.now();
    const r = await call('Mount', { Name: 'dead', ID: ID(9) });
    const took = Date.now() - t0;
    assert.equal(r.status, 500);
    assert.ok(took < 1000, `took ${took} ms`);
    assert.match(String(r.json.Err), /volume dead: endpoint http:\/\/127\.0\.0\.1:9 is not reachable: 127\.0\.0\.1 port 9 refused the connection; check the url option/);
    assert.equal(await fuseMountAt(path.join(plugin.mountRoot, 'dead')), undefined);
    assert.equal(await s3fsCommandLine(path.join(plugin.mountRoot, 'dead')), '');
  });

  it('a dead FUSE client is noticed and repaired while containers hold the volume', async () => {
    await call('Create', { Name: 'crash', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'local' } });
    const mp = String((await call('Mount', { Name: 'crash', ID: ID(1) })).json.Mountpoint);
    const firstPid = s3fsPid(await s3fsCommandLineWithPid(mp));
    process.kill(firstPid, 'SIGKILL');
    // No new Mount: the plugin notices the exit and mounts the bucket again by itself.
    await waitUntil(async () => {
      const line = await s3fsCommandLineWithPid(mp);
      const st = ((await call('Get', { Name: 'crash' })).json.Volume as { Status: Record<string, unknown> }).Status;
      return line !== '' && s3fsPid(line) !== firstPid && st.health === 'ok';
    });
    assert.equal(await readFile(path.join(mp, 'hello.txt'), 'utf8'), 'hello from ossnas\n');
    assert.match(plugin.output(), /"volume":"crash","reason":"mount lost: s3fs was killed by SIGKILL/);
    const st = ((await call('Get', { Name: 'crash' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.deepEqual([st.health, st.mounted, st.refs], ['ok', true, 1]);
    const r = await call('Mount', { Name: 'crash', ID: ID(2) });
    assert.equal(r.status, 200, r.text);
    assert.equal((await readMounts()).filter((m) => m.mountPoint === mp).length, 1, 'shared, not mounted twice');
    await call('Unmount', { Name: 'crash', ID: ID(1) });
    await call('Unmount', { Name: 'crash', ID: ID(2) });
    assert.equal(await fuseMountAt(mp), undefined);
  });

  it('a backend that is down or blackholed: Mount fails before its deadline, Get and List stay instant, and it works once back', async (t) => {
    const proxy = await startSwitchProxy(s3.port);
    t.after(() => proxy.close());
    const url = `http://127.0.0.1:${proxy.port}`;
    await call('Create', { Name: 'flaky', Opts: { type: 'oss', bucket: 'bucket-one', url, credentials: 'local' } });

    await proxy.setMode('blackhole');
    const t0 = Date.now();
    let mountSettled = false;
    const pending = call('Mount', { Name: 'flaky', ID: ID(1) }).finally(() => (mountSettled = true));
    const slowest: number[] = [];
    while (Date.now() - t0 < 3000) {
      const c0 = performance.now();
      await call('Get', { Name: 'flaky' });
      await call('List', {});
      await call('Path', { Name: 'flaky' });
      slowest.push(performance.now() - c0);
      await new Promise((r) => setTimeout(r, 100));
    }
    // Answered while the Mount was still waiting on the backend (its deadline is 6 s): an order,
    // which load cannot blur; the time bound is only a loose one.
    const answeredWhileMounting = !mountSettled;
    let r = await pending;
    const took = Date.now() - t0;
    t.diagnostic(`blackholed: Mount failed after ${took} ms; Get+List+Path meanwhile took at most ${Math.max(...slowest).toFixed(1)} ms`);
    assert.match(String(r.json.Err), /volume flaky: mounting bucket bucket-one at .* failed: s3fs did not finish mounting within \d s/);
    // One deadline for the whole call (OSSNAS_MOUNT_TIMEOUT=6), stopping the client and undoing
    // its mount included; the slack is for a loaded machine's timers only.
    assert.ok(took < 6000 + 2000, `Mount took ${took} ms`);
    assert.ok(answeredWhileMounting, `Get/List/Path waited on the backend: ${Math.max(...slowest)} ms`);
    assert.ok(Math.max(...slowest) < 1000, `Get/List/Path took ${Math.max(...slowest)} ms`);
    assert.equal(await fuseMountAt(path.join(plugin.mountRoot, 'flaky')), undefined, 'nothing left mounted');

    await proxy.setMode('down');
    const t1 = Date.now();
    r = await call('Mount', { Name: 'flaky', ID: ID(1) });
    t.diagnostic(`down: Mount failed after ${Date.now() - t1} ms`);
    assert.match(String(r.json.Err), new RegExp(`volume flaky: endpoint ${url} is not reachable: 127\\.0\\.0\\.1 port ${proxy.port} refused the connection`));
    assert.ok(Date.now() - t1 < 1000, 'a server that is down fails at once');

    await proxy.setMode('forward');
    r = await call('Mount', { Name: 'flaky', ID: ID(1) });
    assert.equal(r.status, 200, r.text);
    assert.equal(await readFile(path.join(String(r.json.Mountpoint), 'hello.txt'), 'utf8'), 'hello from ossnas\n');
    await call('Unmount', { Name: 'flaky', ID: ID(1) });
  });

  it('a FUSE mount unmounted from outside is noticed and mounted again while held', async () => {
    await call('Create', { Name: 'outside', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'local' } });
    const mp = String((await call('Mount', { Name: 'outside', ID: ID(1) })).json.Mountpoint);
    const before = s3fsPid(await s3fsCommandLineWithPid(mp));
    await execa('umount', [mp]);
    await waitUntil(async () => {
      const line = await s3fsCommandLineWithPid(mp);
      const st = ((await call('Get', { Name: 'outside' })).json.Volume as { Status: Record<string, unknown> }).Status;
      return line !== '' && s3fsPid(line) !== before && st.health === 'ok';
    });
    assert.equal(await readFile(path.join(mp, 'hello.txt'), 'utf8'), 'hello from ossnas\n');
    await call('Unmount', { Name: 'outside', ID: ID(1) });
    assert.equal(await fuseMountAt(mp), undefined);
  });

  it('a mount that died while the plugin was down is restored at start, before any new Mount', async (t) => {
    await call('Create', { Name: 'stale', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'local' } });
    const mp = String((await call('Mount', { Name: 'stale', ID: ID(1) })).json.Mountpoint);
    // A container holds it (its own namespace, a bind of the mount): without one, a start
    // rightly releases the reference instead of restoring the mount.
    const holder = await holdMount(mp, path.join(plugin.dir, 'container-stale'));
    t.after(() => holder.release());
    await plugin.stop();
    process.kill(s3fsPid(await s3fsCommandLineWithPid(mp)), 'SIGKILL');
    await waitUntil(async () => (await s3fsCommandLine(mp)) === '');
    assert.ok(await fuseMountAt(mp), 'the dead mount stays in the table');
    plugin = await startPlugin(plugin.dir, { OSSNAS_MOUNT_TIMEOUT: '6' });
    await waitUntil(async () => /mounts of held volumes restored after start/.test(plugin.output()));
    assert.match(plugin.output(), /"adopted":0,"remounted":1,"failed":0/);
    assert.equal(await readFile(path.join(mp, 'hello.txt'), 'utf8'), 'hello from ossnas\n', 'serves with no new Mount');
    const r = await call('Mount', { Name: 'stale', ID: ID(2) });
    assert.equal(r.status, 200, r.text);
    assert.equal(await readFile(path.join(mp, 'hello.txt'), 'utf8'), 'hello from ossnas\n');
    assert.equal((await readMounts()).filter((m) => m.mountPoint === mp).length, 1);
    await call('Unmount', { Name: 'stale', ID: ID(1) });
    await call('Unmount', { Name: 'stale', ID: ID(2) });
    assert.equal(await fuseMountAt(mp), undefined);
  });

  it('every otherOpts option on the allow-list mounts with the s3fs we ship; an ossfs-only one is refused at Create', async () => {
    // A value each option accepts; an option added to the list without one fails here.
    const examples: Record<string, string | null> = {
      connect_timeout: '5', readwrite_timeout: '30', retries: '2', multipart_size: '10', multipart_copy_size: '10',
      singlepart_copy_limit: '10', parallel_count: '2', multireq_max: '2', max_dirty_data: '50', max_stat_cache_size: '100',
      stat_cache_expire: '60', stat_cache_interval_expire: '60', ensure_diskfree: '10', list_object_max_keys: '1000',
      mp_umask: '022', dbglevel: 'info', endpoint: 'us-east-1', storage_class: 'STANDARD', default_acl: 'private',
      ssl_verify_hostname: '0', public_bucket: '1', nomultipart: null, enable_noobj_cache: null, use_path_request_style: null,
      sigv2: null, sigv4: null, listobjectsv2: null, complement_stat: null, notsup_compat_dir: null, nocopyapi: null,
      norenameapi: null, noxmlns: null, nonempty: null, kernel_cache: null, enable_content_md5: null, use_xattr: null,
      no_check_certificate: null, curldbg: null,
    };
    const ossfsOnly = ['readdir_optimize'];
    assert.deepEqual([...ALLOWED_OTHER_OPTS].sort(), [...Object.keys(examples), ...ossfsOnly].sort());
    // sigv2 and sigv4 included: the server checks either signature against the profile's key.
    const failed: string[] = [];
    for (const [name, value] of Object.entries(examples)) {
      const otherOpts = `-o ${value === null ? name : `${name}=${value}`}`;
      const r = await call('Create', { Name: 'opts', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'local', otherOpts } });
      assert.equal(r.status, 200, `${otherOpts}: ${r.text}`);
      const m = await call('Mount', { Name: 'opts', ID: ID(1) });
      if (m.status !== 200) failed.push(`${otherOpts}: ${String(m.json.Err)}`);
      else assert.deepEqual((await call('Unmount', { Name: 'opts', ID: ID(1) })).json, { Err: '' });
      assert.deepEqual((await call('Remove', { Name: 'opts' })).json, { Err: '' });
    }
    assert.deepEqual(failed, [], 'options the shipped s3fs refuses');
    const r = await call('Create', { Name: 'opts', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'local', otherOpts: '-o readdir_optimize' } });
    assert.equal(r.status, 500);
    assert.match(String(r.json.Err), /'readdir_optimize' is an option of ossfs, and this plugin mounts with s3fs/);
  });

  it('state survives a plugin restart: volumes and references are still there', async (t) => {
    await call('Create', { Name: 'durable', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'local' } });
    const mp = String((await call('Mount', { Name: 'durable', ID: ID(1) })).json.Mountpoint);
    // A container holds it (its own namespace, a bind of the mount): without one, a start
    // rightly releases the reference instead of restoring the mount.
    const holder = await holdMount(mp, path.join(plugin.dir, 'container-durable'));
    t.after(() => holder.release());
    plugin = await plugin.restart();
    await waitUntil(async () => /"adopted":1,"remounted":0/.test(plugin.output()));
    const st = ((await call('Get', { Name: 'durable' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.equal(st.refs, 1);
    // In host-process mode the s3fs daemon outlives the plugin process, so the mount still serves.
    assert.equal(await readFile(path.join(plugin.mountRoot, 'durable', 'hello.txt'), 'utf8'), 'hello from ossnas\n');
    assert.deepEqual((await call('Unmount', { Name: 'durable', ID: ID(1) })).json, { Err: '' });
    assert.equal(await fuseMountAt(path.join(plugin.mountRoot, 'durable')), undefined);
  });

  it('an adopted client (one that outlived the plugin process) that dies is noticed and replaced', async (t) => {
    await call('Create', { Name: 'adopted', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'local' } });
    const mp = String((await call('Mount', { Name: 'adopted', ID: ID(1) })).json.Mountpoint);
    // A container holds it (its own namespace, a bind of the mount): without one, a start
    // rightly releases the reference instead of restoring the mount.
    const holder = await holdMount(mp, path.join(plugin.dir, 'container-adopted'));
    t.after(() => holder.release());
    plugin = await plugin.restart();
    await waitUntil(async () => /"adopted":1,"remounted":0/.test(plugin.output()));
    const first = s3fsPid(await s3fsCommandLineWithPid(mp));
    process.kill(first, 'SIGKILL');
    await waitUntil(async () => {
      const line = await s3fsCommandLineWithPid(mp);
      return line !== '' && s3fsPid(line) !== first && (await readFile(path.join(mp, 'hello.txt'), 'utf8').catch(() => '')) !== '';
    });
    assert.match(plugin.output(), /"volume":"adopted","reason":"mount lost: s3fs exited/);
    assert.deepEqual((await call('Unmount', { Name: 'adopted', ID: ID(1) })).json, { Err: '' });
    assert.equal(await fuseMountAt(mp), undefined);
  });

  it('a rotated profile (a new STS token) is used by the next mount, with no Create again', async () => {
    await writeProfile(plugin.credentialsDir, 'rotating', STS_ID, STS_SECRET, TOKEN_BEFORE);
    await call('Create', { Name: 'rotating', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'rotating' } });
    const mp = String((await call('Mount', { Name: 'rotating', ID: ID(1) })).json.Mountpoint);
    const environOfClient = async () => readFile(`/proc/${await fuseClientPid(mp)}/environ`, 'latin1');
    assert.match(await environOfClient(), new RegExp(`AWSSESSIONTOKEN=${TOKEN_BEFORE}`));
    await call('Unmount', { Name: 'rotating', ID: ID(1) });

    // Rotated at the server too: from now on the old token is refused there.
    await s3.setKeys(serverKeys(TOKEN_AFTER));
    await writeProfile(plugin.credentialsDir, 'rotating', STS_ID, STS_SECRET, TOKEN_AFTER);
    assert.equal((await call('Mount', { Name: 'rotating', ID: ID(2) })).status, 200);
    assert.match(await environOfClient(), new RegExp(`AWSSESSIONTOKEN=${TOKEN_AFTER}`));
    await call('Unmount', { Name: 'rotating', ID: ID(2) });
    assert.deepEqual((await call('Remove', { Name: 'rotating' })).json, { Err: '' });
  });

  it('references no container holds are released by Remove; a mount held in another namespace is not', async (t) => {
    await call('Create', { Name: 'drift', Opts: { type: 'oss', bucket: 'bucket-one', url: s3.url, credentials: 'local' } });
    const mp = String((await call('Mount', { Name: 'drift', ID: ID(1) })).json.Mountpoint);
    // A "container": its own mount namespace with a bind mount of the volume.
    const holderDir = path.join(plugin.dir, 'container-data');
    const holder = await holdMount(mp, holderDir);
    t.after(() => holder.release());
    let r = await call('Remove', { Name: 'drift' });
    assert.match(String(r.json.Err), new RegExp(`volume drift is in use \\(1 mount reference, mounted in 1 other mount namespace: PID \\d+: ${holderDir}\\)`));
    assert.ok(await fuseMountAt(mp), 'still mounted');

    // The container is gone but its Unmount never came (the plugin was down): Remove settles it.
    await holder.release();
    r = await call('Remove', { Name: 'drift' });
    assert.deepEqual(r.json, { Err: '' });
    assert.equal(await fuseMountAt(mp), undefined);
    assert.match(plugin.output(), /"volume":"drift","during":"Remove","staleIds":\["1+"\]/);
    assert.ok((await s3.keys('bucket-one')).includes('hello.txt'), 'the data stays');
  });

  it('SIGTERM while a Mount is in flight: the call is answered, recorded, the mount stays, and the next process adopts it', async (t) => {
    const proxy = await startSwitchProxy(s3.port);
    t.after(() => proxy.close());
    await call('Create', { Name: 'inflight', Opts: { type: 'oss', bucket: 'bucket-one', url: `http://127.0.0.1:${proxy.port}`, credentials: 'local' } });
    await proxy.setMode('slow'); // s3fs's check of the bucket takes SLOW_MS
    const mp = path.join(plugin.mountRoot, 'inflight');
    const answer = call('Mount', { Name: 'inflight', ID: ID(1) });
    await waitUntil(async () => (await fuseClientPid(mp)) !== undefined);
    const exited = new Promise<number | null>((r) => plugin.child.once('exit', (code) => r(code)));
    const t0 = Date.now();
    plugin.child.kill('SIGTERM');
    const r = await answer;
    const answeredMs = Date.now() - t0;
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.Mountpoint, mp);
    assert.equal(await exited, 0);
    const exitMs = Date.now() - t0;
    t.diagnostic(`Mount answered ${answeredMs} ms after SIGTERM; process exited after ${exitMs} ms`);
    assert.ok(answeredMs > 200 && answeredMs < SLOW_MS + 3000, `answered ${answeredMs} ms after SIGTERM`);
    assert.ok(exitMs < 10_000, 'exits within dockerd\'s 10 s');
    await proxy.setMode('forward');
    assert.equal(await readFile(path.join(mp, 'hello.txt'), 'utf8'), 'hello from ossnas\n', 'the mount stays after the stop');
    // A container holds it (its own namespace, a bind of the mount): without one, a start
    // rightly releases the reference instead of restoring the mount.
    const holder = await holdMount(mp, path.join(plugin.dir, 'container-inflight'));
    t.after(() => holder.release());

    plugin = await startPlugin(plugin.dir, { OSSNAS_MOUNT_TIMEOUT: '6' });
    await waitUntil(async () => /"adopted":1,"remounted":0/.test(plugin.output()));
    assert.equal(((await call('Get', { Name: 'inflight' })).json.Volume as { Status: Record<string, unknown> }).Status.refs, 1);
    assert.deepEqual((await call('Unmount', { Name: 'inflight', ID: ID(1) })).json, { Err: '' });
    assert.equal(await fuseMountAt(mp), undefined);
  });
});

async function readMountOptions(target: string): Promise<string> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').find((l) => l.split(' ')[4] === target) ?? '';
}

/** The argv of the s3fs process serving `target`, or '' if none runs. */
async function s3fsCommandLine(target: string): Promise<string> {
  return (await s3fsCommandLineWithPid(target)).replace(/^\d+: /, '');
}

/** 'PID: argv' of the s3fs process serving `target`, or '' if none runs. */
async function s3fsCommandLineWithPid(target: string): Promise<string> {
  const pid = await fuseClientPid(target);
  const argv = pid && (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => ''));
  return argv ? `${pid}: ${argv.split('\0').join(' ').trim()}` : '';
}

function s3fsPid(line: string): number {
  const pid = Number(line.split(':')[0]);
  assert.ok(pid > 0, `no s3fs process found (${line})`);
  return pid;
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
