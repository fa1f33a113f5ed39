// Mounts under real faults, with the real program as a host process: a FUSE client stopped with
// SIGSTOP while containers hold it and more Mounts arrive; a caller that hangs up during a slow
// Mount (a slow S3 endpoint, a frozen filesystem under a block device); a kernel mount that does
// not propagate to the mountpoint. Needs root (FUSE, loop devices, fsfreeze, namespaces).
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { OSS_CLIENTS } from '../../src/backends/oss/options.js';
import { readMounts } from '../../src/host/mountinfo.js';
import { fuseClientPid, isRunning, waitFor } from '../helpers/docker.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import {
  attachLoop,
  freeze,
  fuseClients,
  logLines,
  mountedAt,
  privateMountNamespace,
  scratchFilesystem,
  sleep,
  stopProcess,
  Undo,
  unmountAll,
} from '../helpers/faults.js';
import { finishPlugin, startPluginInTempDir, writeProfile, type PluginProcess } from '../helpers/plugin-process.js';
import { startS3, type S3Server } from '../helpers/s3.js';
import { startSwitchProxy } from '../helpers/switch-proxy.js';

const SECRET = 'Faults-Secret-31c7';
const ID = (n: number) => String(n).repeat(64).slice(0, 64);

type Status = Record<string, unknown>;

/**
 * Sends a Mount as dockerd does and hangs up after `ms`, as dockerd does when its own deadline
 * passes. Resolves 'hung up', or with the answer if one came first (then the test proves nothing).
 */
function mountThenHangUp(socket: string, name: string, id: string, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const body = JSON.stringify({ Name: name, ID: id }) + '\n';
    const req = http.request(
      {
        socketPath: socket,
        agent: false, // a connection of its own, closed by the hang-up
        method: 'POST',
        path: '/VolumeDriver.Mount',
        headers: { Host: 'plugin.moby.localhost', Accept: 'application/vnd.docker.plugins.v1.2+json', 'Content-Length': Buffer.byteLength(body) },
      },
      (res) => {
        clearTimeout(timer);
        res.resume();
        resolve(`answered ${res.statusCode} before the hang-up`);
      },
    );
    req.on('error', () => undefined);
    const timer = setTimeout(() => {
      req.destroy();
      resolve('hung up');
    }, ms);
    req.end(body);
  });
}

describe('mounts under real faults', { skip: rootSkipReason(), timeout: 240_000 }, () => {
  const undo = new Undo();
  let s3: S3Server;
  let plugin: PluginProcess;
  const call = (m: string, a: unknown) => plugin.client.call(`VolumeDriver.${m}`, a);
  const status = async (name: string) => ((await call('Get', { Name: name })).json.Volume as { Status: Status }).Status;
  const logged = (msg: string, volume: string) => logLines(plugin.output()).filter((l) => l.msg === msg && l.volume === volume);
  const mountsAt = async (p: string) => (await readMounts()).filter((m) => m.mountPoint === p);

  before(async () => {
    s3 = await startS3(['bucket'], { keys: { FAULTSKEY: SECRET } });
    plugin = await startPluginInTempDir();
    await writeProfile(plugin.credentialsDir, 'local', 'FAULTSKEY', SECRET);
  });
  after(async () => {
    await undo.run(); // continues stopped processes and thaws filesystems before anything waits on them
    await finishPlugin(plugin);
    await s3?.stop();
  });

  /** The process's threads asleep in a FUSE request (the kernel names where each waits in wchan). */
  const threadsWaitingOnFuse = async (pid: number): Promise<string[]> => {
    const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
    const waits = await Promise.all(tids.map((tid) => readFile(`/proc/${pid}/task/${tid}/wchan`, 'utf8').catch(() => '')));
    return waits.filter((w) => /fuse|request_wait_answer/.test(w));
  };

  for (const client of OSS_CLIENTS) it(`a held OSS volume whose ${client} is stopped past every probe: Mounts are answered with the same mount, kept as it is, and its I/O completes once it runs again`, async (t) => {
    const name = `stopped-${client}`;
    const extra = client === 's3fs' ? {} : { client };
    await call('Create', { Name: name, Opts: { type: 'oss', bucket: 'bucket', url: s3.url, credentials: 'local', path: `/${client}`, ...extra } });
    const mp = path.join(plugin.mountRoot, name);
    assert.deepEqual((await call('Mount', { Name: name, ID: ID(1) })).json, { Mountpoint: mp, Err: '' });
    const [pid, ...others] = await fuseClients(mp);
    assert.ok(pid && others.length === 0, `one ${client} serves ${mp}`);
    const device = (await mountsAt(mp))[0]!.device;

    const local = new Undo();
    t.after(() => local.run());
    stopProcess(pid, local);
    const stoppedAt = Date.now();
    // A container's write, started while the client is stopped: it waits in the kernel. (Never
    // from this process: its threads would wait with it.)
    const holder = execa('sh', ['-c', `echo data > ${mp}/f && cat ${mp}/f`], { reject: false, timeout: 60_000 });
    local.add('the holder', async () => holder.kill('SIGKILL'));
    let holderDone = false;
    void holder.finally(() => (holderDone = true));

    // Mounts keep arriving, one a second; each probe waits its 2 s for an answer that never comes.
    const replies = await Promise.all(
      [2, 3, 4, 5].map(async (n, i) => {
        await sleep(i * 1000);
        return call('Mount', { Name: name, ID: ID(n) });
      }),
    );
    for (const r of replies) assert.deepEqual(r.json, { Mountpoint: mp, Err: '' }, r.text);
    assert.equal(holderDone, false, 'the holder waits while the client is stopped');
    assert.deepEqual(await fuseClients(mp), [pid], 'the same client, and no second one');
    assert.deepEqual((await mountsAt(mp)).map((m) => m.device), [device], 'the same FUSE mount, and only it, at the mountpoint');
    assert.equal((await status(name)).refs, 5);
    // Each probe's statfs waits in the kernel for the stopped client, on a libuv thread, until it
    // answers: five probes must share one such call, or a long stop would take every thread.
    const waiting = await threadsWaitingOnFuse(plugin.child.pid!);
    assert.ok(waiting.length === 1, `plugin threads waiting on the stopped client: ${waiting.length} (one probe at a time per mount)`);
    // Stopped for longer than any probe's timeout, whatever the Mounts took.
    await sleep(Math.max(0, 9000 - (Date.now() - stoppedAt)));

    assert.ok(await isRunning(pid), 'the stopped client is still there');
    process.kill(pid, 'SIGCONT');
    const done = await holder;
    t.diagnostic(`stopped for ${Date.now() - stoppedAt} ms; the holder finished after SIGCONT`);
    assert.deepEqual([done.exitCode, done.stdout, done.stderr], [0, 'data', '']);
    // rclone uploads after close.
    await waitFor('the write to reach the bucket', async () => (await s3.getObject('bucket', `${client}/f`)) === 'data\n', 10_000, 50);
    assert.deepEqual(await fuseClients(mp), [pid]);
    assert.deepEqual((await mountsAt(mp)).map((m) => m.device), [device]);
    const kept = logged('mount does not answer; kept as it is (its I/O waits and resumes when it answers)', name);
    assert.ok(kept.length >= 4, `the log says each Mount kept it (${kept.length} lines)`);
    assert.match(String(kept[0]!.reason), /no answer from .* within 2000 ms/);

    for (const n of [1, 2, 3, 4, 5]) assert.deepEqual((await call('Unmount', { Name: name, ID: ID(n) })).json, { Err: '' });
    assert.equal((await mountsAt(mp)).length, 0);
    await waitFor(`the ${client} of the unmounted volume to exit`, async () => (await fuseClientPid(mp)) === undefined, 10_000, 100);
  });

  it('OSS: a caller that hangs up during a slow Mount keeps no reference, and the mount it started is undone; one that another ID holds stays', async (t) => {
    const proxy = await startSwitchProxy(s3.port);
    t.after(() => proxy.close());
    const url = `http://127.0.0.1:${proxy.port}`;
    await call('Create', { Name: 'hangup', Opts: { type: 'oss', bucket: 'bucket', url, credentials: 'local' } });
    const mp = path.join(plugin.mountRoot, 'hangup');
    await proxy.setMode('slow'); // every connection of s3fs's start waits SLOW_MS: the start takes seconds

    // Alone: the caller leaves, the mount completes for nobody and is undone.
    assert.equal(await mountThenHangUp(plugin.socket, 'hangup', ID(1), 500), 'hung up');
    await waitFor('the log line "mount undone" for hangup', async () => logged('mount undone', 'hangup').length === 1, 30_000, 50);
    assert.equal(logged('mount undone', 'hangup')[0]!.why, 'its caller hung up before it was ready');
    let st = await status('hangup');
    assert.deepEqual([st.refs, st.mounted], [0, false]);
    assert.equal((await mountsAt(mp)).length, 0, 'nothing mounted');
    await waitFor('no s3fs serving hangup', async () => (await fuseClientPid(mp)) === undefined, 10_000, 100);
    // Its call's own log line (written after the undo) says what the caller would have been told.
    const gone = await waitFor('the log line of the Mount that was hung up', async () =>
      logLines(plugin.output()).find((l) => l.call === 'VolumeDriver.Mount' && l.volume === 'hangup'), 10_000, 50);
    assert.equal(gone.err, 'volume hangup: the caller hung up before the mount was ready; no reference was kept');

    // With ID(2) holding it: ID(3) queues behind ID(2)'s slow Mount and hangs up; the mount is ID(2)'s and stays.
    let firstAnswered = false;
    const first = call('Mount', { Name: 'hangup', ID: ID(2) }).finally(() => (firstAnswered = true));
    await waitFor('the s3fs of ID(2)\'s Mount', async () => (await fuseClientPid(mp)) !== undefined, 20_000, 20);
    assert.equal(await mountThenHangUp(plugin.socket, 'hangup', ID(3), 500), 'hung up');
    assert.equal(firstAnswered, false, 'ID(3) hung up while ID(2)\'s Mount was still running, so it was still waiting');
    assert.deepEqual((await first).json, { Mountpoint: mp, Err: '' });
    await waitFor('ID(3)\'s Mount to finish', async () => logLines(plugin.output()).filter((l) => l.call === 'VolumeDriver.Mount' && l.volume === 'hangup').length === 3, 20_000, 50);
    const pid = await fuseClientPid(mp);
    st = await status('hangup');
    assert.deepEqual([st.refs, st.mounted], [1, true]);
    assert.equal((await mountsAt(mp)).length, 1);
    assert.equal(logged('mount undone', 'hangup').length, 1, 'no second undo');
    await proxy.setMode('forward');
    assert.deepEqual((await call('Unmount', { Name: 'hangup', ID: ID(3) })).json, { Err: '' }, 'an unknown ID changes nothing');
    assert.equal(await fuseClientPid(mp), pid);
    assert.deepEqual((await call('Unmount', { Name: 'hangup', ID: ID(2) })).json, { Err: '' });
    assert.equal((await mountsAt(mp)).length, 0);
  });

  it('disk: a caller that hangs up while the device does not answer (its backing file on a frozen filesystem) keeps no reference, and the late mount is undone', async (t) => {
    const local = new Undo();
    t.after(() => local.run());
    const dir = plugin.dir;
    // A filesystem of our own holds the device's backing file: freezing it stops every write to the device.
    await scratchFilesystem(path.join(dir, 'outer.img'), path.join(dir, 'outer'), 64 * 2 ** 20, local);
    const dev = await attachLoop(path.join(dir, 'outer', 'inner.img'), 32 * 2 ** 20, local);
    assert.deepEqual((await call('Create', { Name: 'frozen', Opts: { type: 'disk', device: dev } })).json, { Err: '' });
    const mp = path.join(plugin.mountRoot, 'frozen');
    local.add(`unmount ${mp}`, () => unmountAll(mp));

    const thaw = await freeze(path.join(dir, 'outer'), local);
    // The device is empty: Mount formats it, and mkfs's writes wait for the thaw.
    const hungUp = await mountThenHangUp(plugin.socket, 'frozen', ID(1), 1000);
    await sleep(2000); // frozen for about 3 s in all
    const undoneBeforeThaw = logged('mount undone', 'frozen').length;
    await thaw();
    assert.equal(hungUp, 'hung up', 'the Mount was still waiting on the frozen device when its caller left');
    assert.equal(undoneBeforeThaw, 0);
    await waitFor('the log line "mount undone" for frozen', async () => logged('mount undone', 'frozen').length === 1, 30_000, 50);
    assert.equal(logged('mount undone', 'frozen')[0]!.why, 'its caller hung up before it was ready');
    const st = await status('frozen');
    assert.deepEqual([st.refs, st.mounted], [0, false]);
    assert.equal(await mountedAt(mp), false, 'nothing mounted at the mountpoint');
    assert.deepEqual((await readMounts()).filter((m) => m.source === dev), [], 'the device is mounted nowhere');
    assert.equal((await execa('blkid', ['-p', '-o', 'value', '-s', 'TYPE', dev])).stdout, 'ext4', 'the format it did was completed');

    // And the volume works for the next caller.
    assert.deepEqual((await call('Mount', { Name: 'frozen', ID: ID(2) })).json, { Mountpoint: mp, Err: '' });
    assert.deepEqual((await call('Unmount', { Name: 'frozen', ID: ID(2) })).json, { Err: '' });
    assert.equal(await mountedAt(mp), false);
    assert.deepEqual((await call('Remove', { Name: 'frozen' })).json, { Err: '' });
  });
});

describe('a kernel mount that does not reach the mountpoint', { skip: rootSkipReason(), timeout: 120_000 }, () => {
  const undo = new Undo();
  let plugin: PluginProcess | undefined;
  after(async () => {
    await finishPlugin(plugin);
    await undo.run();
  });

  it('fails the Mount, saying the mount does not appear at the mountpoint and was undone, and leaves nothing mounted in the namespace it went to', async () => {
    // "The host's" mount namespace is a private copy of ours: a mount made there never
    // propagates here, as with dockerd under MountFlags=slave. Being a copy, it shows our paths
    // at the same places, so the plugin's path translation (translatePath) finds them.
    const hostPid = await privateMountNamespace(undo);
    const t = await tempDir();
    undo.add('the temporary directory', t.cleanup);
    const dev = await attachLoop(path.join(t.dir, 'prop.img'), 32 * 2 ** 20, undo);
    plugin = await startPluginInTempDir({ OSSNAS_HOST_PID: String(hostPid) });
    const call = (m: string, a: unknown) => plugin!.client.call(`VolumeDriver.${m}`, a);
    assert.deepEqual((await call('Create', { Name: 'unseen', Opts: { type: 'disk', device: dev } })).json, { Err: '' });
    const mp = path.join(plugin.mountRoot, 'unseen');

    const r = await call('Mount', { Name: 'unseen', ID: ID(1) });
    assert.equal(r.status, 500);
    assert.equal(
      r.json.Err,
      `volume unseen: the mount succeeded but does not appear at ${mp}, so it was undone; the plugin's mounts do not propagate ` +
        "(is dockerd running with MountFlags=slave, or the mount root not shared?)",
    );
    assert.ok(logLines(plugin.output()).some((l) => l.msg === `kernel mounts go to the mount namespace of PID ${hostPid}`), 'the mount went to that namespace');
    assert.equal(await mountedAt(mp, `/proc/${hostPid}/mountinfo`), false, 'undone in the namespace it was made in');
    assert.deepEqual((await readMounts(`/proc/${hostPid}/mountinfo`)).filter((m) => m.source === dev), [], 'the device is mounted nowhere there');
    assert.equal(await mountedAt(mp), false);
    assert.equal((await execa('blkid', ['-p', '-o', 'value', '-s', 'TYPE', dev])).stdout, 'ext4', 'it did format and mount the device');
    const st = ((await call('Get', { Name: 'unseen' })).json.Volume as { Status: Status }).Status;
    assert.deepEqual([st.refs, st.mounted, st.health], [0, false, 'error']);
    assert.match(String(st.lastError), /does not appear at/);
    assert.deepEqual((await call('Remove', { Name: 'unseen' })).json, { Err: '' });
  });
});
