// One FUSE client per bucket (OSSNAS_SHARE_CLIENTS=true): real s3fs against a real S3 server,
// through the plugin's API, with the program running as a plain host process. The shared
// client's mounts are found in the mount table and its processes in /proc; faults are made for
// real (kill -9 of the client, of the plugin, of both). Needs root (FUSE and bind mounts, unshare).
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { mkdir, readFile, stat, statfs, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { SHARED_DIR } from '../../src/backends/oss/shared-clients.js';
import { readMounts, type MountEntry } from '../../src/host/mountinfo.js';
import { rootSkipReason } from '../helpers/env.js';
import { sleep, stopProcess, Undo } from '../helpers/faults.js';
import { holdMount, type Holder } from '../helpers/holder.js';
import { finishPlugin, startPlugin, startPluginInTempDir, writeProfile, type PluginProcess } from '../helpers/plugin-process.js';
import { startS3, type S3Server } from '../helpers/s3.js';

const AK_ID = 'OSSSHAREDKEY';
const SECRET = 'Shared-Secret-91b0e';
const BUCKET = 'shared';
const ENV = { OSSNAS_SHARE_CLIENTS: 'true', OSSNAS_MOUNT_TIMEOUT: '10' };

async function mountAt(target: string): Promise<MountEntry | undefined> {
  return (await readMounts()).findLast((m) => m.mountPoint === target);
}

/** The s3fs processes that serve a shared mount of this plugin, by pid, with their shared mount's directory. */
async function sharedClients(plugin: PluginProcess): Promise<Array<{ pid: number; root: string }>> {
  const dir = path.join(plugin.mountRoot, SHARED_DIR) + '/';
  const found: Array<{ pid: number; root: string }> = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const argv = (await readFile(`/proc/${e}/cmdline`, 'latin1').catch(() => '')).split('\0');
    const root = argv.find((w) => w.startsWith(dir));
    if (path.basename(argv[0] ?? '') === 's3fs' && root) found.push({ pid: Number(e), root });
  }
  return found;
}

async function sharedMounts(plugin: PluginProcess): Promise<MountEntry[]> {
  const dir = path.join(plugin.mountRoot, SHARED_DIR) + '/';
  return (await readMounts()).filter((m) => m.mountPoint.startsWith(dir));
}

/** A FUSE mount is at `target` and answers. */
async function serves(target: string): Promise<boolean> {
  if (!(await mountAt(target))?.fsType.startsWith('fuse')) return false;
  return statfs(target).then(
    () => true,
    () => false,
  );
}

/** Polls `check` until it holds, up to `ms`; the last value is returned either way. */
async function until<T>(check: () => Promise<T>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  let v = await check();
  while (!v && Date.now() < end) {
    await sleep(100);
    v = await check();
  }
  return v;
}

describe('OSS volumes sharing one FUSE client per bucket', { skip: rootSkipReason(), timeout: 300_000 }, () => {
  let s3: S3Server;
  let plugin: PluginProcess;
  let holders: Holder[] = [];
  let n = 0;
  const call = (m: string, a: unknown) => plugin.client.call(`VolumeDriver.${m}`, a);
  const id = () => String(++n).padStart(64, '0');

  async function create(name: string, opts: Record<string, string> = {}): Promise<void> {
    const r = await call('Create', { Name: name, Opts: { type: 'oss', bucket: BUCKET, url: s3.url, credentials: 'local', ...opts } });
    assert.deepEqual(r.json, { Err: '' }, `${name}: ${r.text}`);
  }
  async function mount(name: string, ref: string): Promise<string> {
    const r = await call('Mount', { Name: name, ID: ref });
    assert.equal(r.json.Err ?? '', '', `${name}: ${r.text}`);
    return String(r.json.Mountpoint);
  }
  async function unmount(name: string, ref: string): Promise<void> {
    const r = await call('Unmount', { Name: name, ID: ref });
    assert.deepEqual(r.json, { Err: '' }, `${name}: ${r.text}`);
  }
  async function status(name: string): Promise<Record<string, unknown>> {
    return ((await call('Get', { Name: name })).json.Volume as { Status: Record<string, unknown> }).Status;
  }
  const target = (name: string) => path.join(plugin.mountRoot, name);

  before(async () => {
    s3 = await startS3([BUCKET], { keys: { [AK_ID]: SECRET } });
    plugin = await startPluginInTempDir(ENV);
    await writeProfile(plugin.credentialsDir, 'local', AK_ID, SECRET);
  });
  afterEach(async () => {
    for (const h of holders) await h.release();
    holders = [];
  });
  after(async () => {
    for (const h of holders) await h.release();
    await finishPlugin(plugin);
    await s3?.stop();
  });

  it('binds volumes of one bucket from one client, gives other client options their own, and stops a client with its last volume', async () => {
    await create('a', { path: '/team/a' });
    await create('b', { path: '/team/b' });
    await create('c', { path: '/team/a', umask: '077' });
    const [ra, rb, rc] = [id(), id(), id()];
    const [ta, tb, tc] = [await mount('a', ra), await mount('b', rb), await mount('c', rc)];
    const [ma, mb, mc] = [await mountAt(ta), await mountAt(tb), await mountAt(tc)];
    assert.equal(ma?.fsType, 'fuse.s3fs');
    assert.equal(ma!.device, mb!.device, 'a and b are not served by one client');
    assert.notEqual(mc!.device, ma!.device, 'c (another umask) shares a client it must not');
    assert.deepEqual([ma!.root, mb!.root, mc!.root], ['/team/a', '/team/b', '/team/a']);
    for (const m of [ma!, mb!]) {
      const flags = m.options.split(',');
      assert.ok(flags.includes('nosuid') && flags.includes('nodev') && !flags.includes('nosymfollow'), m.options);
    }
    assert.equal((await sharedClients(plugin)).length, 2);
    assert.equal((await sharedMounts(plugin)).length, 2);

    await writeFile(path.join(ta, 'x.txt'), 'from a\n');
    assert.equal(await s3.getObject(BUCKET, 'team/a/x.txt'), 'from a\n');
    await assert.rejects(stat(path.join(tb, 'x.txt')), { code: 'ENOENT' });
    assert.equal((await status('a')).client, 'shared by 2 volumes');
    assert.equal((await status('c')).client, 'shared by 1 volume');

    // The first volume goes; the second keeps its client and serves.
    await unmount('a', ra);
    assert.equal(await mountAt(ta), undefined);
    await writeFile(path.join(tb, 'y.txt'), 'from b\n');
    assert.equal(await s3.getObject(BUCKET, 'team/b/y.txt'), 'from b\n');
    assert.equal((await sharedClients(plugin)).length, 2);
    assert.equal((await status('b')).client, 'shared by 1 volume');

    // The last one takes the shared mount and its client along; c's stays.
    const bRoot = (await sharedMounts(plugin)).find((m) => m.device === mb!.device)!.mountPoint;
    await unmount('b', rb);
    assert.equal(await mountAt(bRoot), undefined);
    await assert.rejects(stat(bRoot), { code: 'ENOENT' }, 'the shared mount directory was left');
    assert.deepEqual((await until(async () => ((await sharedClients(plugin)).length === 1 ? sharedClients(plugin) : undefined)))?.map((c) => c.root), [
      (await sharedMounts(plugin))[0]!.mountPoint,
    ]);
    await unmount('c', rc);
    assert.deepEqual(await sharedMounts(plugin), []);
    assert.equal((await until(async () => (await sharedClients(plugin)).length === 0)), true, 'a shared client outlived its last volume');
    assert.deepEqual((await s3.keys(BUCKET)).filter((k) => k.endsWith('.txt')).sort(), ['team/a/x.txt', 'team/b/y.txt']);
  });

  it('refuses by name a path through a symlink, a file, or a missing path of a read-only volume, leaving nothing mounted', async () => {
    await create('whole');
    const rw = id();
    const whole = await mount('whole', rw);
    await mkdir(path.join(whole, 'real'));
    await writeFile(path.join(whole, 'plain.txt'), 'a file\n');
    await symlink('/etc', path.join(whole, 'link'));
    await create('through-link', { path: '/link' });
    await create('below-link', { path: '/link/ssl' });
    await create('a-file', { path: '/plain.txt' });
    await create('ro-missing', { path: '/nowhere', readonly: 'true' });
    const expected: Array<[string, RegExp]> = [
      ['through-link', /path \/link of bucket shared passes through a symlink, which a volume's path may not/],
      ['below-link', /path \/link\/ssl of bucket shared passes through a symlink/],
      ['a-file', /path \/plain\.txt of bucket shared is a file, not a directory/],
      ['ro-missing', /path \/nowhere of bucket shared does not exist, and a read-only volume cannot create it/],
    ];
    for (const [name, message] of expected) {
      const r = await call('Mount', { Name: name, ID: id() });
      assert.match(String(r.json.Err), message, name);
      assert.equal(await mountAt(target(name)), undefined, `${name} was left mounted`);
    }
    // The read-only group's client started for nothing, and was stopped: only whole's is left.
    assert.equal((await sharedMounts(plugin)).length, 1);
    assert.equal(await until(async () => (await sharedClients(plugin)).length === 1), true);

    // A missing path of a writable volume is made, as a client of its own would show it.
    await create('deep', { path: '/real/deeper/still' });
    const rd = id();
    const deep = await mount('deep', rd);
    await writeFile(path.join(deep, 'z.txt'), 'deep\n');
    assert.equal(await s3.getObject(BUCKET, 'real/deeper/still/z.txt'), 'deep\n');
    await unmount('deep', rd);
    await unmount('whole', rw);
    assert.equal(await until(async () => (await sharedClients(plugin)).length === 0), true);
  });

  it('replaces a shared client killed with kill -9 by one new client, onto which every volume of it is repaired', async () => {
    await create('k1', { path: '/k/1' });
    await create('k2', { path: '/k/2' });
    const [r1, r2] = [id(), id()];
    const [t1, t2] = [await mount('k1', r1), await mount('k2', r2)];
    const [before1] = await sharedClients(plugin);
    process.kill(before1!.pid, 'SIGKILL');
    // The kernel may give the new connection the old one's device number: the client's pid tells them apart.
    const repaired = await until(async () => {
      const clients = await sharedClients(plugin);
      const [m1, m2] = [await mountAt(t1), await mountAt(t2)];
      return clients.length > 0 && clients.every((c) => c.pid !== before1!.pid) && m2?.device === m1?.device && (await serves(t1)) && (await serves(t2));
    });
    assert.equal(repaired, true, `not repaired: ${plugin.output().slice(-2000)}`);
    const after = await sharedClients(plugin);
    assert.equal(after.length, 1, 'one client for the bucket, not one per volume');
    assert.notEqual(after[0]!.pid, before1!.pid);
    assert.match(plugin.output(), /"volume":"k2","reason":"mount lost: the bucket's shared s3fs client was killed by SIGKILL/);
    assert.deepEqual([(await status('k1')).refs, (await status('k2')).refs], [1, 1]);
    await writeFile(path.join(t2, 'after.txt'), 'after\n');
    assert.equal(await s3.getObject(BUCKET, 'k/2/after.txt'), 'after\n');
    await unmount('k1', r1);
    await unmount('k2', r2);
    assert.equal(await until(async () => (await sharedClients(plugin)).length === 0), true);
  });

  it('keeps a stopped (SIGSTOP) shared client and its volumes, and fails a new volume of it by name instead of binding from it', async () => {
    await create('s1', { path: '/s/1' });
    await create('s2', { path: '/s/2' });
    const r1 = id();
    const t1 = await mount('s1', r1);
    const [client] = await sharedClients(plugin);
    const undo = new Undo();
    try {
      stopProcess(client!.pid, undo);
      const r = await call('Mount', { Name: 's2', ID: id() });
      assert.match(String(r.json.Err), /volume s2: the shared client of bucket shared does not answer \(.*\); it is kept, with the volumes it serves/);
      assert.equal(await mountAt(target('s2')), undefined, 's2 was left mounted');
      assert.ok(await mountAt(t1), "the stopped client's volume was unmounted");
    } finally {
      await undo.run();
    }
    // Continued, it is the same client, and it serves again.
    assert.deepEqual((await sharedClients(plugin)).map((c) => c.pid), [client!.pid]);
    assert.equal(await until(() => serves(t1)), true);
    await unmount('s1', r1);
    assert.equal(await until(async () => (await sharedClients(plugin)).length === 0), true);
  });

  it('after kill -9 of the plugin, its successor adopts the shared client, keeps only the references containers hold, and notices the client exit', async () => {
    await create('held', { path: '/p/held' });
    await create('loose', { path: '/p/loose' });
    const [tHeld, tLoose] = [await mount('held', id()), await mount('loose', id())];
    holders.push(await holdMount(tHeld, path.join(plugin.dir, 'holders', 'held')));
    const [client] = await sharedClients(plugin);
    plugin.child.kill('SIGKILL');
    await plugin.stop();
    // As if the plugin had died between the client's start and the remount that makes it refuse symlinks.
    await execa('mount', ['-c', '-o', 'remount,bind,symfollow', client!.root]);
    plugin = await startPlugin(plugin.dir, ENV);
    // The restore releases the reference nobody holds (its bind goes, the shared client stays for the other).
    assert.equal(await until(async () => (await mountAt(tLoose)) === undefined), true, 'the reference nobody holds was kept');
    assert.equal(await until(async () => (await status('held')).client === 'shared by 1 volume'), true, JSON.stringify(await status('held')));
    assert.deepEqual((await sharedClients(plugin)).map((c) => c.pid), [client!.pid], 'the shared client was not adopted');
    assert.ok((await mountAt(client!.root))!.options.split(',').includes('nosymfollow'), 'the adopted shared mount follows symlinks');
    assert.equal(await serves(tHeld), true);
    const loose = await status('loose');
    assert.deepEqual([loose.refs, loose.mounted], [0, false]);

    // Adopted, it is watched: its death is noticed and the held volume repaired.
    process.kill(client!.pid, 'SIGKILL');
    assert.equal(await until(async () => (await sharedClients(plugin)).some((c) => c.pid !== client!.pid) && (await serves(tHeld))), true);
    // An adopted client is not our child: its exit is seen, not its signal.
    assert.match(plugin.output(), /"volume":"held","reason":"mount lost: the bucket's shared s3fs client exited"/);
  });

  it('after kill -9 of the plugin and its shared client, a restore brings every held volume back on one client start', async () => {
    // The last case's volume is still mounted, with a reference that no container holds any more:
    // the restore releases it.
    const names = ['r1', 'r2', 'r3', 'r4', 'r5', 'r6'];
    const refs = new Map<string, string>();
    for (const name of names) {
      await create(name, { path: `/p/${name}` });
      refs.set(name, id());
      const t = await mount(name, refs.get(name)!);
      holders.push(await holdMount(t, path.join(plugin.dir, 'holders', name)));
    }
    const before = await sharedClients(plugin);
    assert.equal(before.length, 1);
    plugin.child.kill('SIGKILL');
    process.kill(before[0]!.pid, 'SIGKILL');
    await plugin.stop();
    plugin = await startPlugin(plugin.dir, ENV);
    const back = await until(async () => {
      for (const name of names) if (!(await serves(target(name)))) return false;
      return (await mountAt(target('held'))) === undefined;
    }, 30_000);
    assert.equal(back, true, `not all restored: ${plugin.output().slice(-2000)}`);
    const clients = await sharedClients(plugin);
    assert.equal(clients.length, 1, 'one client start for the bucket');
    const devices = new Set(await Promise.all(names.map(async (name) => (await mountAt(target(name)))!.device)));
    assert.equal(devices.size, 1);
    assert.equal((plugin.output().match(/"msg":"mount restored"/g) ?? []).length, names.length);
    for (const name of names) await unmount(name, refs.get(name)!);
    assert.equal(await until(async () => (await sharedClients(plugin)).length === 0), true, 'the client outlived its last volume');
  });
});
