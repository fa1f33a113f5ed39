// Real s3fs and real rclone mount, each against a real S3 server (s3rver, behind a front that
// checks signatures as S3 does), through the plugin's API, with the program running as a plain
// host process: the same cases for each client (the volume option `client`). Needs root (FUSE
// mounts).
import assert from 'node:assert/strict';
import { open, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { OSS_CLIENTS } from '../../src/backends/oss/options.js';
import { ALLOWED_OTHER_OPTS, type OssClientName } from '../../src/backends/oss/other-opts.js';
import { RCLONE_ALLOWED } from '../../src/backends/oss/rclone-opts.js';
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

/** What differs between the clients, for the cases that say it. */
const BY_CLIENT = {
  s3fs: {
    /** s3fs's volumes name no client: they are the default, as every volume made before the option. */
    opts: {} as Record<string, string>,
    /** OSSNAS_MOUNT_TIMEOUT, seconds */
    mountTimeout: 6,
    fsType: 'fuse.s3fs',
    fileMode: 0o750, // s3fs applies the umask to 0777 for files too
    cacheOpt: '-o stat_cache_expire=30',
    cacheArgv: /-o stat_cache_expire=30/,
    quickFailOpts: '-o retries=1 -o connect_timeout=2',
    missingBucket: /volume missing: mounting bucket nosuchbucket .* failed: s3fs .*bucket or key not found/,
    blackholed: /volume flaky: mounting bucket bucket-one at .* failed: s3fs did not finish mounting within \d s/,
  },
  rclone: {
    opts: { client: 'rclone' } as Record<string, string>,
    // Its check of the bucket opens two connections, each held SLOW_MS by the slow proxy.
    mountTimeout: 10,
    fsType: 'fuse.rclone',
    fileMode: 0o640, // rclone's files are 0666 less the umask
    cacheOpt: '-o dir_cache_time=30s',
    cacheArgv: /--dir-cache-time=30s/,
    quickFailOpts: '-o retries=1 -o contimeout=2s',
    missingBucket: /volume missing: mounting bucket nosuchbucket .* failed: rclone could not reach bucket nosuchbucket: .*directory not found \(the bucket does not exist/,
    blackholed: /volume flaky: mounting bucket bucket-one at .* failed: rclone could not reach bucket bucket-one: .*timed out/,
  },
} satisfies Record<OssClientName, unknown>;

for (const client of OSS_CLIENTS) describe(`OSS volumes with ${client} against a local S3 server`, { skip: rootSkipReason(), timeout: 240_000 }, () => {
  let s3: S3Server;
  let plugin: PluginProcess;
  const call = (m: string, a: unknown) => plugin.client.call(`VolumeDriver.${m}`, a);
  const c = BY_CLIENT[client];
  /** A Create's options for this client. */
  const oss = (o: Record<string, string>): Record<string, string> => ({ type: 'oss', ...c.opts, ...o });
  /**
   * The object's content once the client has uploaded it: s3fs uploads at close, so it is there
   * at once; rclone uploads after close, so it is waited for.
   */
  const uploaded = async (bucket: string, key: string) => {
    if (client === 'rclone') await waitUntil(async () => (await s3.getObject(bucket, key)) !== undefined);
    return s3.getObject(bucket, key);
  };

  before(async () => {
    s3 = await startS3(['bucket-one', 'bucket-two'], { keys: serverKeys(TOKEN_BEFORE) });
    plugin = await startPluginInTempDir({ OSSNAS_MOUNT_TIMEOUT: String(c.mountTimeout) });
    await writeProfile(plugin.credentialsDir, 'local', AK_ID, SECRET);
  });
  after(async () => {
    await finishPlugin(plugin);
    await s3?.stop();
  });

  it('create, mount, write, read the object back from the server, unmount, remove (data kept)', async () => {
    let r = await call('Create', { Name: 'data', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local' }) });
    assert.deepEqual(r.json, { Err: '' });
    r = await call('Mount', { Name: 'data', ID: ID(1) });
    assert.equal(r.status, 200, r.text);
    const mp = String(r.json.Mountpoint);
    assert.equal(mp, path.join(plugin.mountRoot, 'data'));
    assert.equal((await fuseMountAt(mp))?.fsType, c.fsType);

    await writeFile(path.join(mp, 'hello.txt'), 'hello from ossnas\n');
    assert.equal(await uploaded('bucket-one', 'hello.txt'), 'hello from ossnas\n');

    // The passwd file is gone once the mount is ready, and no argv carries the secret.
    assert.deepEqual(await readdir(path.join(plugin.runDir, 'oss', 'data')).catch(() => []), []);
    // It was never on a disk: the run directory is a tmpfs (the plugin mounted one, as it was not).
    assert.equal(await isMemoryBacked(plugin.runDir), true, 'the keys were handed over on a disk');
    assert.deepEqual(await processesWith(SECRET), [], 'a process argv holds the secret');

    const st = (await call('Get', { Name: 'data' })).json.Volume as { Status: Record<string, unknown> };
    assert.deepEqual(
      [st.Status.type, st.Status.bucket, st.Status.mounted, st.Status.refs, st.Status.health, st.Status.credentials, st.Status.client],
      ['oss', 'bucket-one', true, 1, 'ok', 'profile local', client],
    );

    // Written just before the last Unmount: uploaded by the time the Unmount is answered.
    await writeFile(path.join(mp, 'last.txt'), 'written last\n');
    r = await call('Unmount', { Name: 'data', ID: ID(1) });
    assert.deepEqual(r.json, { Err: '' });
    assert.equal(await fuseMountAt(mp), undefined);
    assert.equal(await s3.getObject('bucket-one', 'last.txt'), 'written last\n', 'a write not uploaded when the Unmount was answered');
    r = await call('Remove', { Name: 'data' });
    assert.deepEqual(r.json, { Err: '' });
    assert.deepEqual(await s3.keys('bucket-one'), ['hello.txt', 'last.txt'], 'Remove must never delete backend data');
    assert.ok(!plugin.output().includes(SECRET), 'the log holds the secret');
    // Here rclone's cache is on the state filesystem, which it could fill: the operator is told, once.
    const sharedCacheWarnings = plugin.output().match(/write caches are on the state filesystem/g)?.length ?? 0;
    assert.equal(sharedCacheWarnings, client === 'rclone' ? 1 : 0);
  });

  it('shares one mount between mount IDs; the first Unmount leaves it for the other', async () => {
    await call('Create', { Name: 'shared', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local' }) });
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
      Opts: oss({
        bucket: 'bucket-two', url: s3.url, credentials: 'local', path: '/team/a',
        uid: '1234', gid: '2345', umask: '027', otherOpts: c.cacheOpt,
      }),
    });
    const mp = String((await call('Mount', { Name: 'sub', ID: ID(4) })).json.Mountpoint);
    await writeFile(path.join(mp, 'f.txt'), 'x');
    assert.equal(await uploaded('bucket-two', 'team/a/f.txt'), 'x');
    assert.deepEqual(await s3.keys('bucket-two'), ['team/a/f.txt']);
    const st = await stat(path.join(mp, 'f.txt'));
    assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [1234, 2345, c.fileMode]);
    const m = await fuseMountAt(mp);
    assert.match(m!.options + ' ' + (await readMountOptions(mp)), /allow_other/);
    assert.match(await s3fsCommandLine(mp), c.cacheArgv);
    await call('Unmount', { Name: 'sub', ID: ID(4) });

    await call('Create', { Name: 'ro', Opts: oss({ bucket: 'bucket-two', url: s3.url, credentials: 'local', path: '/team/a', readonly: 'true' }) });
    const ro = String((await call('Mount', { Name: 'ro', ID: ID(5) })).json.Mountpoint);
    assert.equal(await readFile(path.join(ro, 'f.txt'), 'utf8'), 'x');
    await assert.rejects(writeFile(path.join(ro, 'nope.txt'), 'x'), /EROFS|read-only/);
    await call('Unmount', { Name: 'ro', ID: ID(5) });
    // The whole bucket: team/ and team/a/ are no objects, only prefixes of the listing.
    await call('Create', { Name: 'root', Opts: oss({ bucket: 'bucket-two', url: s3.url, credentials: 'local', readonly: 'true' }) });
    const root = String((await call('Mount', { Name: 'root', ID: ID(6) })).json.Mountpoint);
    assert.equal(await readFile(path.join(root, 'team/a/f.txt'), 'utf8'), 'x');
    await call('Unmount', { Name: 'root', ID: ID(6) });
  });

  it('inline credentials work and never show in Status, errors or logs', async () => {
    const opts = oss({ bucket: 'nosuchbucket', url: s3.url, akId: AK_ID, akSecret: SECRET });
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

  it(`a bucket that does not exist fails with ${client}'s own words and leaves nothing mounted`, async () => {
    await call('Create', { Name: 'missing', Opts: oss({ bucket: 'nosuchbucket', url: s3.url, credentials: 'local' }) });
    const r = await call('Mount', { Name: 'missing', ID: ID(8) });
    assert.equal(r.status, 500);
    assert.match(String(r.json.Err), c.missingBucket);
    assert.equal(await fuseMountAt(path.join(plugin.mountRoot, 'missing')), undefined);
    assert.equal(await s3fsCommandLine(path.join(plugin.mountRoot, 'missing')), '');
    const st = ((await call('Get', { Name: 'missing' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.deepEqual([st.refs, st.mounted, st.health], [0, false, 'error']);
    assert.match(String(st.lastError), client === 's3fs' ? /bucket or key not found/ : /directory not found/);
    // Docker's Unmount after a failed Mount is harmless.
    assert.deepEqual((await call('Unmount', { Name: 'missing', ID: ID(8) })).json, { Err: '' });
  });

  it('an endpoint where nothing listens fails at once, saying so, and leaves nothing mounted', async () => {
    await call('Create', { Name: 'dead', Opts: oss({ bucket: 'bucket-one', url: 'http://127.0.0.1:9', credentials: 'local', otherOpts: c.quickFailOpts }) });
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
    await call('Create', { Name: 'crash', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local' }) });
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
    assert.match(plugin.output(), new RegExp(`"volume":"crash","reason":"mount lost: ${client} was killed by SIGKILL`));
    const st = ((await call('Get', { Name: 'crash' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.deepEqual([st.health, st.mounted, st.refs], ['ok', true, 1]);
    const r = await call('Mount', { Name: 'crash', ID: ID(2) });
    assert.equal(r.status, 200, r.text);
    assert.equal((await readMounts()).filter((m) => m.mountPoint === mp).length, 1, 'shared, not mounted twice');
    await call('Unmount', { Name: 'crash', ID: ID(1) });
    await call('Unmount', { Name: 'crash', ID: ID(2) });
    assert.equal(await fuseMountAt(mp), undefined);
  });

  // git's lock files, editors' atomic saves: written, closed, renamed at once. rclone 1.60 lost
  // such files for good when its upload started at the close (vfs_write_back=0s).
  it('files written and renamed at once (lock file to name) all reach the bucket by the Unmount', async (t) => {
    await call('Create', { Name: 'renames', Opts: oss({ bucket: 'bucket-two', url: s3.url, credentials: 'local', path: '/renames' }) });
    const mp = String((await call('Mount', { Name: 'renames', ID: ID(1) })).json.Mountpoint);
    const N = 20;
    const body = (i: number) => `saved atomically ${i}\n`.repeat(200);
    for (let i = 0; i < N; i++) {
      await writeFile(path.join(mp, `f${i}.lock`), body(i));
      await rename(path.join(mp, `f${i}.lock`), path.join(mp, `f${i}`));
    }
    assert.deepEqual((await call('Unmount', { Name: 'renames', ID: ID(1) })).json, { Err: '' });
    const missing: string[] = [];
    for (let i = 0; i < N; i++) if ((await s3.getObject('bucket-two', `renames/f${i}`)) !== body(i)) missing.push(`f${i}`);
    assert.deepEqual(missing, [], 'renamed files not in the bucket when the Unmount was answered');
    const strays = (await s3.keys('bucket-two')).filter((k) => k.startsWith('renames/') && k.endsWith('.lock'));
    if (strays.length) t.diagnostic(`lock files left as objects too: ${strays.join(' ')}`);
    assert.deepEqual((await call('Remove', { Name: 'renames' })).json, { Err: '' });
  });

  // s3fs uploads at close, so a kill after it loses nothing (the first case). rclone uploads later,
  // from its cache on the plugin's state: the client that replaces a killed one finds the file there.
  it('kill -9 of the client with a write not uploaded yet: the client that replaces it uploads the write', { skip: client === 's3fs' && 's3fs uploads at close' }, async () => {
    const body = 'waiting in the write cache\n';
    await call('Create', { Name: 'reupload', Opts: oss({ bucket: 'bucket-two', url: s3.url, credentials: 'local', otherOpts: '-o vfs_write_back=5s' }) });
    const mp = String((await call('Mount', { Name: 'reupload', ID: ID(1) })).json.Mountpoint);
    await writeFile(path.join(mp, 'pending.txt'), body);
    const firstPid = (await fuseClientPid(mp))!;
    process.kill(firstPid, 'SIGKILL');
    assert.equal(await s3.getObject('bucket-two', 'pending.txt'), undefined, 'uploaded before the kill: this run shows nothing');
    await waitUntil(async () => (await s3.getObject('bucket-two', 'pending.txt')) === body, 30_000);
    const pid = await fuseClientPid(mp);
    assert.ok(pid !== undefined && pid !== firstPid, `the upload came from a new client (pid ${pid}, killed ${firstPid})`);
    assert.equal(await readFile(path.join(mp, 'pending.txt'), 'utf8'), body);
    await call('Unmount', { Name: 'reupload', ID: ID(1) });
    assert.deepEqual((await call('Remove', { Name: 'reupload' })).json, { Err: '' });
  });

  // rclone exits at unmount with its uploads not done, so the Unmount waits for them, within its
  // deadline. A server that does not answer: the Unmount fails, naming what is left, and keeps the
  // mount, which uploads once the server is back; a Remove then releases what no container holds.
  it('a frozen server at Unmount: the Unmount fails naming the writes not uploaded, the mount stays, and they are uploaded once the server answers', { skip: client === 's3fs' && 's3fs uploads at close' }, async (t) => {
    await call('Create', { Name: 'frozen', Opts: oss({ bucket: 'bucket-two', url: s3.url, credentials: 'local', otherOpts: '-o timeout=1s -o contimeout=1s' }) });
    const mp = String((await call('Mount', { Name: 'frozen', ID: ID(1) })).json.Mountpoint);
    // Opened while the server answers (rclone asks it at open), closed once it froze: the upload starts at close.
    const file = await open(path.join(mp, 'frozen.txt'), 'w');
    await file.write('written while the server froze\n');
    process.kill(s3.pid, 'SIGSTOP');
    const thaw = () => process.kill(s3.pid, 'SIGCONT');
    t.after(thaw);
    await file.close();
    const r = await call('Unmount', { Name: 'frozen', ID: ID(1) });
    const pendingWhileFrozen = await fuseMountAt(mp);
    thaw();
    t.diagnostic(`Unmount while the server froze: ${r.text}`);
    assert.equal(r.json.Err, 'volume frozen: 1 written file is not uploaded yet (the endpoint did not take it in time); the mount is kept and uploads it when it can, and docker volume rm releases it then');
    assert.ok(pendingWhileFrozen, 'the mount stays');
    const st = ((await call('Get', { Name: 'frozen' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.deepEqual([st.mounted, st.refs], [true, 1]);

    const t0 = Date.now();
    await waitUntil(async () => (await s3.getObject('bucket-two', 'frozen.txt')) === 'written while the server froze\n', 60_000);
    t.diagnostic(`uploaded ${Date.now() - t0} ms after the server thawed`);
    // Docker does not send that Unmount again: the reference no container holds goes with Remove.
    assert.deepEqual((await call('Remove', { Name: 'frozen' })).json, { Err: '' });
    assert.equal(await fuseMountAt(mp), undefined);
  });

  it('a backend that is down or blackholed: Mount fails before its deadline, Get and List stay instant, and it works once back', async (t) => {
    const proxy = await startSwitchProxy(s3.port);
    t.after(() => proxy.close());
    const url = `http://127.0.0.1:${proxy.port}`;
    await call('Create', { Name: 'flaky', Opts: oss({ bucket: 'bucket-one', url, credentials: 'local' }) });

    await proxy.setMode('blackhole');
    const t0 = Date.now();
    let mountSettled = false;
    const pending = call('Mount', { Name: 'flaky', ID: ID(1) }).finally(() => (mountSettled = true));
    const slowest: number[] = [];
    while (Date.now() - t0 < 3000 && !mountSettled) {
      const c0 = performance.now();
      await call('Get', { Name: 'flaky' });
      await call('List', {});
      await call('Path', { Name: 'flaky' });
      slowest.push(performance.now() - c0);
      await new Promise((r) => setTimeout(r, 100));
    }
    // Answered, round after round, while the Mount was still waiting on the backend (its
    // deadline is OSSNAS_MOUNT_TIMEOUT, less 3-4 s to stop and undo): an order, which load cannot blur;
    // the time bound is only a loose one.
    const answeredWhileMounting = slowest.length >= 5;
    let r = await pending;
    const took = Date.now() - t0;
    t.diagnostic(`blackholed: Mount failed after ${took} ms; Get+List+Path meanwhile took at most ${Math.max(...slowest).toFixed(1)} ms`);
    assert.match(String(r.json.Err), c.blackholed);
    // One deadline for the whole call (OSSNAS_MOUNT_TIMEOUT), stopping the client and undoing
    // its mount included; the slack is for a loaded machine's timers only.
    assert.ok(took < c.mountTimeout * 1000 + 2000, `Mount took ${took} ms`);
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
    await call('Create', { Name: 'outside', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local' }) });
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
    await call('Create', { Name: 'stale', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local' }) });
    const mp = String((await call('Mount', { Name: 'stale', ID: ID(1) })).json.Mountpoint);
    // A container holds it (its own namespace, a bind of the mount): without one, a start
    // rightly releases the reference instead of restoring the mount.
    const holder = await holdMount(mp, path.join(plugin.dir, 'container-stale'));
    t.after(() => holder.release());
    await plugin.stop();
    process.kill(s3fsPid(await s3fsCommandLineWithPid(mp)), 'SIGKILL');
    await waitUntil(async () => (await s3fsCommandLine(mp)) === '');
    assert.ok(await fuseMountAt(mp), 'the dead mount stays in the table');
    plugin = await startPlugin(plugin.dir, { OSSNAS_MOUNT_TIMEOUT: String(c.mountTimeout) });
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

  it(`every otherOpts option on ${client}'s allow-list mounts with the ${client} we ship; an option of the other client is refused at Create`, async () => {
    // A value each option accepts; an option added to a list without one fails here.
    const examples: Record<string, string | null> = client === 's3fs' ? {
      connect_timeout: '5', readwrite_timeout: '30', retries: '2', multipart_size: '10', multipart_copy_size: '10',
      singlepart_copy_limit: '10', parallel_count: '2', multireq_max: '2', max_dirty_data: '50', max_stat_cache_size: '100',
      stat_cache_expire: '60', stat_cache_interval_expire: '60', ensure_diskfree: '10', list_object_max_keys: '1000',
      mp_umask: '022', dbglevel: 'info', endpoint: 'us-east-1', storage_class: 'STANDARD', default_acl: 'private',
      ssl_verify_hostname: '0', public_bucket: '1', nomultipart: null, enable_noobj_cache: null, use_path_request_style: null,
      sigv2: null, sigv4: null, listobjectsv2: null, complement_stat: null, notsup_compat_dir: null, nocopyapi: null,
      norenameapi: null, noxmlns: null, nonempty: null, kernel_cache: null, enable_content_md5: null, use_xattr: null,
      no_check_certificate: null, curldbg: null,
    } : {
      vfs_cache_mode: 'full', vfs_write_back: '2s', vfs_cache_max_size: '1G', vfs_cache_max_age: '30m',
      vfs_cache_poll_interval: '30s', vfs_read_ahead: '16M', buffer_size: '8M', max_read_ahead: '256Ki',
      vfs_read_chunk_size: '32M', vfs_read_chunk_size_limit: 'off', dir_cache_time: '1m30s', attr_timeout: '500ms',
      use_server_modtime: 'false', no_modtime: null, transfers: '2', checkers: '4', s3_chunk_size: '8M',
      s3_upload_cutoff: '100M', s3_upload_concurrency: '2', s3_storage_class: 'STANDARD', s3_acl: 'private',
      s3_disable_checksum: null, low_level_retries: '3', retries: '2', contimeout: '5s', timeout: '1m', log_level: 'INFO',
      public_bucket: '1',
    };
    const ossfsOnly = ['readdir_optimize'];
    const allowed = client === 's3fs' ? ALLOWED_OTHER_OPTS : Object.keys(RCLONE_ALLOWED);
    assert.deepEqual([...allowed].sort(), [...Object.keys(examples), ...(client === 's3fs' ? ossfsOnly : [])].sort());
    // s3fs's sigv2 and sigv4 included: the server checks either signature against the profile's key.
    const failed: string[] = [];
    for (const [name, value] of Object.entries(examples)) {
      const otherOpts = `-o ${value === null ? name : `${name}=${value}`}`;
      const r = await call('Create', { Name: 'opts', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local', otherOpts }) });
      assert.equal(r.status, 200, `${otherOpts}: ${r.text}`);
      const m = await call('Mount', { Name: 'opts', ID: ID(1) });
      if (m.status !== 200) failed.push(`${otherOpts}: ${String(m.json.Err)}`);
      else assert.deepEqual((await call('Unmount', { Name: 'opts', ID: ID(1) })).json, { Err: '' });
      assert.deepEqual((await call('Remove', { Name: 'opts' })).json, { Err: '' });
    }
    assert.deepEqual(failed, [], `options the shipped ${client} refuses`);
    if (client === 's3fs') {
      const r = await call('Create', { Name: 'opts', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local', otherOpts: '-o readdir_optimize' }) });
      assert.equal(r.status, 500);
      assert.match(String(r.json.Err), /'readdir_optimize' is an option of ossfs, and this plugin mounts with s3fs/);
    }
    // Each client's options are its own: the other's are refused, naming the client.
    const other = client === 's3fs' ? '-o dir_cache_time=30s' : '-o stat_cache_expire=30';
    const r = await call('Create', { Name: 'opts', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local', otherOpts: other }) });
    assert.equal(r.status, 500);
    assert.match(String(r.json.Err), new RegExp(`invalid option 'otherOpts': '${other.slice(3).split('=')[0]}' is not allowed for ${client}`));
  });

  it('state survives a plugin restart: volumes and references are still there', async (t) => {
    await call('Create', { Name: 'durable', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local' }) });
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
    await call('Create', { Name: 'adopted', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local' }) });
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
    assert.match(plugin.output(), new RegExp(`"volume":"adopted","reason":"mount lost: ${client} exited`));
    assert.deepEqual((await call('Unmount', { Name: 'adopted', ID: ID(1) })).json, { Err: '' });
    assert.equal(await fuseMountAt(mp), undefined);
  });

  it('a rotated profile (a new STS token) is used by the next mount, with no Create again', async () => {
    await writeProfile(plugin.credentialsDir, 'rotating', STS_ID, STS_SECRET, TOKEN_BEFORE);
    await call('Create', { Name: 'rotating', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'rotating' }) });
    const mp = String((await call('Mount', { Name: 'rotating', ID: ID(1) })).json.Mountpoint);
    const environOfClient = async () => readFile(`/proc/${await fuseClientPid(mp)}/environ`, 'latin1');
    // s3fs takes a token only from its environment (readable by root alone); rclone from its
    // config file, removed once the mount is ready.
    if (client === 's3fs') assert.match(await environOfClient(), new RegExp(`AWSSESSIONTOKEN=${TOKEN_BEFORE}`));
    else assert.ok(!(await environOfClient()).includes(TOKEN_BEFORE));
    await writeFile(path.join(mp, 'rotating.txt'), 'before');
    assert.equal(await uploaded('bucket-one', 'rotating.txt'), 'before');
    await call('Unmount', { Name: 'rotating', ID: ID(1) });

    // Rotated at the server too: from now on the old token is refused there.
    await s3.setKeys(serverKeys(TOKEN_AFTER));
    await writeProfile(plugin.credentialsDir, 'rotating', STS_ID, STS_SECRET, TOKEN_AFTER);
    assert.equal((await call('Mount', { Name: 'rotating', ID: ID(2) })).status, 200);
    if (client === 's3fs') assert.match(await environOfClient(), new RegExp(`AWSSESSIONTOKEN=${TOKEN_AFTER}`));
    // The server refuses the old token: a write that reaches it was signed with the new one.
    await writeFile(path.join(mp, 'rotating.txt'), 'after');
    await waitUntil(async () => (await s3.getObject('bucket-one', 'rotating.txt')) === 'after');
    await call('Unmount', { Name: 'rotating', ID: ID(2) });
    assert.deepEqual((await call('Remove', { Name: 'rotating' })).json, { Err: '' });
  });

  it('references no container holds are released by Remove; a mount held in another namespace is not', async (t) => {
    await call('Create', { Name: 'drift', Opts: oss({ bucket: 'bucket-one', url: s3.url, credentials: 'local' }) });
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
    await call('Create', { Name: 'inflight', Opts: oss({ bucket: 'bucket-one', url: `http://127.0.0.1:${proxy.port}`, credentials: 'local' }) });
    await proxy.setMode('slow'); // the client's check of the bucket takes SLOW_MS
    const mp = path.join(plugin.mountRoot, 'inflight');
    const answer = call('Mount', { Name: 'inflight', ID: ID(1) });
    // s3fs checks the bucket itself; for rclone the plugin checks it first, with `rclone lsjson`.
    await waitUntil(async () => (client === 's3fs' ? (await fuseClientPid(mp)) !== undefined : (await processesWith('lsjson')).length > 0));
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

    plugin = await startPlugin(plugin.dir, { OSSNAS_MOUNT_TIMEOUT: String(c.mountTimeout) });
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
