// NAS volumes end to end through a real dockerd, in the NFS guest (scripts/nfs-guest.sh: this
// machine's kernel has no NFS). The plugin is the real program as a plain host process, a legacy
// plugin that dockerd finds by its socket file in /run/docker/plugins (as in
// test/e2e/legacy.test.ts); dockerd is the guest's own (Debian's docker.io), started here, since
// the guest starts no services. Containers write and read through the volume, and the NFS server's
// export (/srv/nfs, on the guest's loopback) must hold what they wrote.
import assert from 'node:assert/strict';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { readMounts } from '../../src/host/mountinfo.js';
import { docker, dockerResult } from '../helpers/docker.js';
import { tempDir } from '../helpers/env.js';
import { prepareGuestForDockerd, secs, startDockerd, type Dockerd } from '../helpers/guest-dockerd.js';
import { nfsd, silentServer } from '../helpers/nfs-server.js';
import { REPO_ROOT, startPlugin, type PluginProcess } from '../helpers/plugin-process.js';

const EXPORT = '/srv/nfs';
const IMAGE = 'ossnas/busybox:1';
const DRIVER = 'ossnas-nfs';
const inGuest = process.env.OSSNAS_NFS_GUEST === '1';

/** The kernel's ID of the mount at `mountPoint` (mountinfo's first field): a new mount gets a new one. */
async function mountIdAt(mountPoint: string): Promise<string | undefined> {
  const line = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.split(' ')[4] === mountPoint);
  return line?.split(' ')[0];
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${secs(timeoutMs)} waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('NAS volumes through a real dockerd', { skip: inGuest ? false : 'runs inside the NFS guest (scripts/nfs-guest.sh)', timeout: 900_000 }, () => {
  let plugin: PluginProcess | undefined;
  let dockerd: Dockerd | undefined;
  let cleanup: (() => Promise<void>) | undefined;
  const volumes = new Set<string>();
  // Set up in `before`, where there is no t.diagnostic: reported by the first test.
  const setupNotes: string[] = [];

  before(async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const { storage, notes } = await prepareGuestForDockerd();
    setupNotes.push(...notes);
    // The guest has no network at all: no bridge and no iptables rules (containers run with
    // --network none). AppArmor is on in Debian's kernel, but securityfs is not mounted in the
    // guest, so dockerd sees no AppArmor and wants no profile loaded (the guest has no
    // apparmor_parser).
    dockerd = await startDockerd({
      host: 'unix:///var/run/docker.sock',
      args: ['--bridge=none', '--iptables=false', '--ip6tables=false', `--storage-driver=${storage}`],
      log: path.join(t.dir, 'dockerd.log'),
    });
    setupNotes.push(`dockerd (${storage}) answered after ${secs(dockerd.startMs)}${dockerd.attempts > 1 ? ` (started ${dockerd.attempts} times: containerd was slow)` : ''}`);

    let t1 = Date.now();
    await execa('bash', [path.join(REPO_ROOT, 'scripts', 'busybox-image.sh'), IMAGE], { timeout: 300_000 });
    setupNotes.push(`busybox image imported in ${secs(Date.now() - t1)}`);

    t1 = Date.now();
    await mkdir('/run/docker/plugins', { recursive: true });
    plugin = await startPlugin(t.dir, { OSSNAS_SOCKET: `/run/docker/plugins/${DRIVER}.sock` });
    setupNotes.push(`plugin listening after ${secs(Date.now() - t1)}`);
  });

  after(async () => {
    for (const v of volumes) await dockerResult(['volume', 'rm', '-f', v]).catch(() => undefined);
    await plugin?.stop();
    if (plugin) for (const m of await readMounts()) if (m.mountPoint.startsWith(plugin.mountRoot)) console.error('left mounted:', m);
    // dockerd stops the containerd it started, and the guest's init can then power off with
    // nothing of ours running.
    if (dockerd) {
      const t0 = Date.now();
      await dockerd.stop();
      console.log(`# dockerd stopped in ${secs(Date.now() - t0)}`);
    }
    await cleanup?.();
  });

  it('the NFS server freezes while a container writes to a volume and another starts: the writer resumes, the second gets the same mount, nothing is forced', async (t) => {
    const name = 'nas-frozen';
    const sub = `${EXPORT}/${name}`;
    await rm(sub, { recursive: true, force: true });
    // Hard, as by default; short retransmission times so that I/O resumes soon after the server.
    await docker(['volume', 'create', '-d', DRIVER, '-o', 'type=nas', '-o', 'server=127.0.0.1', '-o', `path=${sub}`, '-o', 'vers=3',
      '-o', 'options=hard,timeo=20,retrans=2,nolock,proto=tcp', name]);
    volumes.add(name);
    const mount = `type=volume,src=${name},dst=/data,volume-driver=${DRIVER}`;
    const mp = path.join(plugin!.mountRoot, name);
    const writer = `${name}-writer`;
    t.after(() => dockerResult(['rm', '-f', writer]));
    // One numbered line every 0.2 s; an append that fails is noted inside the container.
    await docker(['run', '-d', '--name', writer, '--network', 'none', '--mount', mount, IMAGE, 'sh', '-c',
      'i=0; while :; do i=$((i+1)); echo $i >> /data/ticks || echo $i >> /tmp/failed; sleep 0.2; done']);
    const ticks = async () => (await readFile(path.join(sub, 'ticks'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number);
    await waitFor(async () => (await ticks()).length >= 5, 60_000, 'the writer to write through the share');
    const mountBefore = await mountIdAt(mp);

    // Frozen: nfsd stops, and in its place something accepts connections and never answers.
    await nfsd('stop');
    const hung = await silentServer(2049);
    let second: Promise<Awaited<ReturnType<typeof dockerResult>>> | undefined;
    try {
      const atFreeze = (await ticks()).length;
      // A second container starts meanwhile; its start waits for the share as the writer does.
      second = dockerResult(['run', '--rm', '--network', 'none', '--mount', mount, IMAGE, 'sh', '-c', 'tail -n 1 /data/ticks && echo second > /data/second.txt'], { timeout: 600_000 });
      await waitFor(async () => new RegExp(`"volume":"${name}","reason":[^\n]*mount does not answer; kept as it is`).test(plugin!.output()), 120_000,
        "the plugin's answer to the second container's Mount");
      await new Promise((r) => setTimeout(r, 3000)); // the freeze goes on a while
      t.diagnostic(`lines on the server at the freeze: ${atFreeze}, 3 s later: ${(await ticks()).length}`);
    } finally {
      hung.close();
      await nfsd('start');
    }
    const t0 = Date.now();
    const r = await second!;
    assert.equal(r.exitCode, 0, `the second container: ${r.stderr}\nplugin output:\n${plugin!.output().slice(-3000)}`);
    t.diagnostic(`the second container ran ${secs(Date.now() - t0)} after the server came back`);
    const resumed = (await ticks()).length;
    await waitFor(async () => (await ticks()).length >= resumed + 5, 120_000, 'the writer to write again');
    // Every append the writer made got through, in order, across the freeze.
    const lines = await ticks();
    assert.deepEqual(lines, lines.map((_, i) => i + 1), 'an append was lost or repeated');
    assert.equal((await dockerResult(['exec', writer, 'cat', '/tmp/failed'])).exitCode, 1, 'an append failed in the writer');
    assert.equal(await readFile(path.join(sub, 'second.txt'), 'utf8'), 'second\n');
    // The same mount all along: never replaced, never unmounted or forced.
    assert.equal(await mountIdAt(mp), mountBefore, 'the mount was replaced');
    assert.doesNotMatch(plugin!.output(), new RegExp(`"volume":"${name}"[^\n]*("msg":"mount restored"|did not unmount cleanly|"msg":"mount was dead)`));

    await docker(['rm', '-f', writer]);
    await waitFor(async () => (await mountIdAt(mp)) === undefined, 60_000, 'the last Unmount');
    await docker(['volume', 'rm', name]);
    volumes.delete(name);
  });

  for (const [vers, fsType] of [['3', 'nfs'], ['4.1', 'nfs4']] as const) {
    it(`NFS v${vers}: one container writes, another reads it back, the server has it, and volume rm keeps it`, async (t) => {
      for (const note of setupNotes.splice(0)) t.diagnostic(note);
      const name = `nas-docker-v${vers.replace('.', '')}`;
      const sub = `${EXPORT}/${name}`;
      await rm(sub, { recursive: true, force: true }); // the plugin creates the sub-path itself
      const mount = `type=volume,src=${name},dst=/data,volume-driver=${DRIVER}`;
      const run = async (script: string) => {
        const r = await dockerResult(['run', '--rm', '--network', 'none', '--mount', mount, IMAGE, 'sh', '-c', script]);
        assert.equal(r.exitCode, 0, `docker run (${script}) failed: ${r.stderr}\nplugin output:\n${plugin!.output().slice(-3000)}`);
        t.diagnostic(`docker run (${script.slice(0, 40)}...): ${secs(r.ms)}`);
        return r.stdout;
      };

      await docker(['volume', 'create', '-d', DRIVER, '-o', 'type=nas', '-o', 'server=127.0.0.1', '-o', `path=${sub}`, '-o', `vers=${vers}`, name]);
      volumes.add(name);

      // The writer also shows what /data is inside the container: the NFS mount itself (bind
      // mounted by dockerd from the plugin's mount point), of the version asked for.
      const seen = await run(`grep " /data " /proc/mounts && echo "written by v${vers}" > /data/from-docker.txt`);
      const [source, , type, opts] = seen.split(' ');
      assert.equal(source, `127.0.0.1:${sub}`, seen);
      assert.equal(type, fsType, seen);
      assert.match(opts!, new RegExp(`(^|,)vers=${vers.replace('.', '\\.')}(,|$)`), seen);

      assert.equal(await run('cat /data/from-docker.txt'), `written by v${vers}`);
      assert.equal(await readFile(path.join(sub, 'from-docker.txt'), 'utf8'), `written by v${vers}\n`, 'the server has it');

      const inspect = JSON.parse(await docker(['volume', 'inspect', name]))[0];
      assert.equal(inspect.Driver, DRIVER);
      assert.equal(inspect.Mountpoint, path.join(plugin!.mountRoot, name));
      const left = (await readMounts()).filter((m) => m.mountPoint.startsWith(plugin!.mountRoot));
      assert.deepEqual(left, [], 'unmounted once the last container is gone');

      await docker(['volume', 'rm', name]);
      volumes.delete(name);
      assert.equal((await docker(['volume', 'ls', '-q'])).split('\n').includes(name), false);
      assert.equal(await readFile(path.join(sub, 'from-docker.txt'), 'utf8'), `written by v${vers}\n`, 'volume rm never deletes data');
    });
  }
});
