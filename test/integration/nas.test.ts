// NAS volumes on this machine's own kernel, which has no NFS (platform.md): Create works, Mount
// says exactly that, and nothing is left behind. The real NFS tests run in a guest kernel
// (test/integration/nas-guest.test.ts). Also the unmount fallbacks, on real mounts.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { openHostNamespace } from '../../src/host/hostns.js';
import { ensureDir } from '../../src/host/files.js';
import { readMounts } from '../../src/host/mountinfo.js';
import { unmountKernelMount } from '../../src/host/unmount.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { finishPlugin, startPluginInTempDir, type PluginProcess } from '../helpers/plugin-process.js';

const ID = 'a'.repeat(64);

async function kernelHasNfs(): Promise<boolean> {
  const fs = await readFile('/proc/filesystems', 'utf8');
  if (/\tnfs4?$/m.test(fs)) return true;
  const mods = await readdir(`/lib/modules/${os.release()}/kernel/fs/nfs`).catch(() => []);
  return mods.length > 0;
}

describe('NAS volumes on a kernel without NFS', { skip: rootSkipReason(), timeout: 60_000 }, () => {
  let plugin: PluginProcess;
  const call = (m: string, a: unknown) => plugin.client.call(`VolumeDriver.${m}`, a);

  before(async () => {
    plugin = await startPluginInTempDir();
  });
  after(() => finishPlugin(plugin));

  it('Create works without the server, and Status says what the volume points at', async () => {
    const r = await call('Create', { Name: 'n1', Opts: { type: 'nas', server: '127.0.0.1', path: '/export/a', vers: '4' } });
    assert.deepEqual(r.json, { Err: '' });
    const st = ((await call('Get', { Name: 'n1' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.deepEqual([st.type, st.server, st.path, st.vers, st.options, st.mounted], ['nas', '127.0.0.1', '/export/a', '4.0', 'noresvport', false]);
  });

  it('Mount on a kernel without NFS says exactly that, and leaves nothing mounted', async (t) => {
    if (await kernelHasNfs()) return t.skip('this kernel has NFS; the guest tests cover it');
    const r = await call('Mount', { Name: 'n1', ID });
    assert.equal(r.status, 500);
    assert.match(String(r.json.Err), /the host kernel \(.+\) has no NFS support: 'nfs4' is not in \/proc\/filesystems/);
    assert.deepEqual((await readMounts()).filter((m) => m.mountPoint.startsWith(plugin.mountRoot)), []);
    const st = ((await call('Get', { Name: 'n1' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.match(String(st.lastError), /no NFS support/);
    assert.deepEqual((await call('Remove', { Name: 'n1' })).json, { Err: '' });
  });
});

describe('unmounting a kernel mount', { skip: rootSkipReason() }, () => {
  it('is plain when it can be, and detaches a busy mount lazily rather than failing', async () => {
    const t = await tempDir();
    const ns = await openHostNamespace('auto')();
    const dir = path.join(t.dir, 'm');
    await ensureDir(dir, 0o700);
    const mounted = async () => (await readMounts()).some((m) => m.mountPoint === dir);
    try {
      await execa('mount', ['-t', 'tmpfs', 'tmpfs', dir]);
      assert.equal(await unmountKernelMount(ns, dir), 'unmounted');
      assert.equal(await mounted(), false);

      await execa('mount', ['-t', 'tmpfs', 'tmpfs', dir]);
      const holder = spawn('sleep', ['30'], { cwd: dir, stdio: 'ignore' }); // keeps the mount busy
      try {
        assert.equal(await unmountKernelMount(ns, dir, { plainMs: 2000 }), 'detached');
        assert.equal(await mounted(), false);
      } finally {
        holder.kill('SIGKILL');
      }
      assert.equal(await unmountKernelMount(ns, dir), 'unmounted', 'nothing mounted is fine');
    } finally {
      await execa('umount', ['-l', dir], { reject: false });
      await t.cleanup();
    }
  });
});
