// The managed plugin on a cgroup v2 host, in the NFS guest (scripts/nfs-guest.sh boots it with
// cgroup_no_v1=all and cgroup2 at /sys/fs/cgroup; this machine is cgroup v1). dockerd is the
// guest's own (Debian's docker.io, cgroupfs driver), started here; the plugin is created from the
// bundle the host built (OSSNAS_E2E_BUNDLE=/ossnas-bundle: the guest has no network to build one),
// its s3fs talks to the repo's S3 test server on the guest's loopback. Covered: the quick start's
// volume flow (scripts/quickstart.sh), and test/e2e/restart.test.ts's kill -9 of the plugin while a
// container writes to an OSS volume, where on v2 the s3fs client must have moved to the one
// hierarchy's `ossnas-fuse`, beside the plugin's cgroup, to outlive it.
import assert from 'node:assert/strict';
import { mkdir, readFile, readlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { readMounts } from '../../src/host/mountinfo.js';
import {
  CONTAINER_LABEL,
  docker,
  dockerResult,
  fuseClientPid,
  installPlugin,
  isRunning,
  leftPluginCgroup,
  pluginPid,
  TEST_IMAGE,
  volumeStatus,
  volumesOf,
  waitFor,
  type InstalledPlugin,
} from '../helpers/docker.js';
import { tempDir } from '../helpers/env.js';
import { prepareGuestForDockerd, secs, startDockerd, type Dockerd } from '../helpers/guest-dockerd.js';
import { REPO_ROOT } from '../helpers/plugin-process.js';
import { startS3, type S3Server } from '../helpers/s3.js';

const inGuest = process.env.OSSNAS_NFS_GUEST === '1';
const PLUGIN = 'ossnas';
const BUCKET = 'restart-bucket';
const DEMO_BUCKET = 'demo';
const mountArg = (vol: string) => `type=volume,src=${vol},dst=/data,volume-driver=${PLUGIN}`;
/** Appends a line 5 times a second and counts the appends that failed (as restart.test.ts). */
const WRITER = 'while :; do date >> /data/ticks || echo x >> /tmp/failed; sleep 0.2; done';
/** `docker run` in the guest: no network there (dockerd runs with --bridge=none). */
const run = (...args: string[]) => ['run', '--network', 'none', ...args];
/**
 * `docker plugin create` of the ~390 MB rootfs: 14-21 s on our hosts, 3.8-7.2 min in the guest
 * under TCG: dockerd gzips (level 6) and hashes the whole layer while unpacking it, and the gzip
 * is most of it (natively 15.5 s of CPU for the 376 MB tar, sha256 1.4 s, tar 0.1 s), all emulated.
 */
const CREATE_TIMEOUT_MS = 1_200_000;
const cgroupOf = async (pid: number) => (await readFile(`/proc/${pid}/cgroup`, 'utf8')).trim();

describe('the managed plugin on cgroup v2 (a real dockerd in the guest)', { skip: inGuest ? false : 'runs inside the NFS guest (scripts/nfs-guest.sh)', timeout: 1_800_000 }, () => {
  let dockerd: Dockerd | undefined;
  let plugin: InstalledPlugin | undefined;
  let s3: S3Server | undefined;
  const cleanups: Array<() => Promise<unknown>> = [];
  // Set up in `before`, where there is no t.diagnostic: reported by the first test.
  const setupNotes: string[] = [];

  before(async () => {
    const { storage, notes } = await prepareGuestForDockerd();
    setupNotes.push(...notes);
    const t = await tempDir('ossnas-cg2-');
    cleanups.push(t.cleanup);
    dockerd = await startDockerd({
      host: 'unix:///var/run/docker.sock',
      args: ['--bridge=none', '--iptables=false', '--ip6tables=false', `--storage-driver=${storage}`],
      log: path.join(t.dir, 'dockerd.log'),
    });
    setupNotes.push(`dockerd (${storage}) answered after ${secs(dockerd.startMs)}`);
    let t1 = Date.now();
    await execa('bash', [path.join(REPO_ROOT, 'scripts', 'busybox-image.sh'), TEST_IMAGE], { timeout: 300_000 });
    setupNotes.push(`busybox image imported in ${secs(Date.now() - t1)}`);

    t1 = Date.now();
    // node + tsx + s3rver start slowly under TCG (over 15 s on a busy host).
    s3 = await startS3([BUCKET, DEMO_BUCKET], { startTimeoutMs: 180_000 });
    setupNotes.push(`S3 server listening after ${secs(Date.now() - t1)}`);

    // As the quick start: a state directory and credentials profiles (mode 600, or the plugin
    // refuses them).
    const state = path.join(t.dir, 'state');
    const creds = path.join(t.dir, 'credentials');
    await mkdir(state, { recursive: true });
    await mkdir(creds, { recursive: true });
    for (const profile of ['local', 'demo']) await writeFile(path.join(creds, profile), 'akId=S3RVER\nakSecret=S3RVER\n', { mode: 0o600 });
    plugin = await installPlugin(PLUGIN, { stateDir: state, credentialsDir: creds, env: { LOG_LEVEL: 'debug' }, createTimeoutMs: CREATE_TIMEOUT_MS });
    setupNotes.push(`plugin created in ${secs(plugin.timings.create)}, enabled in ${secs(plugin.timings.enable)}`);
  });

  after(async () => {
    const containers = (await dockerResult(['ps', '-aq', '--filter', `label=${CONTAINER_LABEL}=${PLUGIN}`]).catch(() => undefined))?.stdout;
    if (containers) await dockerResult(['rm', '-f', ...containers.split('\n')]);
    await plugin?.cleanup().catch((e: unknown) => console.error('plugin cleanup:', e));
    await s3?.stop();
    if (dockerd) {
      const t0 = Date.now();
      await dockerd.stop();
      console.log(`# dockerd stopped in ${secs(Date.now() - t0)}`);
    }
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  it('the guest is a cgroup v2 only host, and dockerd runs on it with cgroup v2', async (t) => {
    for (const n of setupNotes) t.diagnostic(n);
    assert.match(await readFile('/proc/cmdline', 'utf8'), /(^| )cgroup_no_v1=all( |$)/m);
    const own = await readFile('/proc/self/cgroup', 'utf8');
    assert.match(own, /^0::\/\S*\n$/, `one line, the unified hierarchy's: ${own}`);
    // /proc/cgroups: no controller is bound to a v1 hierarchy (hierarchy ID 0 for all).
    const bound = (await readFile('/proc/cgroups', 'utf8')).split('\n').filter((l) => l && !l.startsWith('#') && l.split('\t')[1] !== '0');
    assert.deepEqual(bound, [], 'controllers bound to a v1 hierarchy');
    const cgroupMounts = (await readMounts()).filter((m) => m.fsType === 'cgroup' || m.fsType === 'cgroup2');
    assert.deepEqual(cgroupMounts.map((m) => `${m.fsType} ${m.mountPoint}`), ['cgroup2 /sys/fs/cgroup']);
    const info = await docker(['info', '--format', '{{.CgroupVersion}} {{.CgroupDriver}}']);
    t.diagnostic(`docker info: cgroup version, driver: ${info}; controllers: ${(await readFile('/sys/fs/cgroup/cgroup.controllers', 'utf8')).trim()}`);
    assert.match(info, /^2 /);
  });

  it("the quick start's volume flow: a container writes to an OSS volume, another reads it, volume rm keeps the bucket's data", async (t) => {
    const vol = 'ossnas-demo';
    const mount = mountArg(vol);
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${DEMO_BUCKET}`, '-o', `url=${s3!.url}`, '-o', 'credentials=demo', vol]);
    let r = await dockerResult(run('--rm', '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mount, TEST_IMAGE, 'sh', '-c', 'echo "hello from a container" > /data/hello.txt; ls -l /data'));
    assert.equal(r.exitCode, 0, r.stderr);
    t.diagnostic(`first container: ${r.stdout}`);
    assert.equal(await s3!.getObject(DEMO_BUCKET, 'hello.txt'), 'hello from a container\n', 'the object, read straight from the S3 server');
    r = await dockerResult(run('--rm', '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mount, TEST_IMAGE, 'cat', '/data/hello.txt'));
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'hello from a container', 'a second container reads it through the volume');
    const status = await volumeStatus(vol);
    assert.deepEqual([status.refs, status.mounted], [0, false], 'unmounted once the containers are gone');
    await docker(['volume', 'rm', vol]);
    assert.equal(await s3!.getObject(DEMO_BUCKET, 'hello.txt'), 'hello from a container\n', "volume rm leaves the bucket's data");
  });

  it('kill -9 of the plugin while a container writes to an OSS volume: the s3fs left the plugin cgroup for ossnas-fuse, outlives it, is adopted, nothing is lost', async (t) => {
    const vol = 'ossnas-cg2-oss';
    const holder = 'ossnas-cg2-holder';
    t.after(() => dockerResult(['rm', '-f', holder]));
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3!.url}`, '-o', 'credentials=local', vol]);
    await docker(run('-d', '--name', holder, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg(vol), TEST_IMAGE,
      'sh', '-c', `echo before > /data/before.txt; ${WRITER}`));
    await waitFor('the volume mounted once, and the first write in the bucket', async () => {
      const s = await volumeStatus(vol);
      return s.refs === 1 && s.mounted === true && (await s3!.getObject(BUCKET, 'before.txt')) === 'before\n';
    }, 120_000, 200);

    const pid = await pluginPid(plugin!.id);
    assert.ok(pid, 'found the plugin process');
    const client = await fuseClientPid(`/mnt/volumes/${vol}`);
    assert.ok(client, 'found the s3fs client');
    const [pluginCg, clientCg] = [await cgroupOf(pid), await cgroupOf(client)];
    t.diagnostic(`plugin ${pid}: ${pluginCg}; s3fs ${client}: ${clientCg}`);
    t.diagnostic(`cgroup namespaces: plugin ${await readlink(`/proc/${pid}/ns/cgroup`)}, init ${await readlink('/proc/1/ns/cgroup')}`);
    assert.match(pluginCg, new RegExp(`^0::/(.*/)?${plugin!.id}$`), "the plugin's cgroup is named after it (dockerd's cgroupfs driver)");
    assert.ok(leftPluginCgroup(clientCg), `the client left the plugin cgroup: ${clientCg}`);
    assert.equal(path.posix.dirname(clientCg.slice(3)), path.posix.dirname(pluginCg.slice(3)), "ossnas-fuse is beside the plugin's cgroup");

    const t0 = performance.now();
    process.kill(pid, 'SIGKILL');
    const newPid = await waitFor('dockerd to restart the plugin', async () => {
      const p = await pluginPid(plugin!.id);
      return p && p !== pid ? p : undefined;
    }, 60_000, 50);
    await waitFor('the plugin to answer', async () => (await dockerResult(['volume', 'inspect', vol])).exitCode === 0, 60_000, 50);
    t.diagnostic(`plugin restarted by dockerd and answering after ${Math.round(performance.now() - t0)} ms (pid ${pid} -> ${newPid})`);
    assert.ok((await volumesOf(PLUGIN)).includes(vol), 'the volume is still listed');

    const adopted = await waitFor('the OSS volume to be adopted', async () => {
      const s = await volumeStatus(vol);
      return s.mounted === true && s.health === 'ok' ? s : undefined;
    }, 60_000, 100);
    t.diagnostic(`adopted ${Math.round(performance.now() - t0)} ms after the kill`);
    assert.equal(await fuseClientPid(`/mnt/volumes/${vol}`), client, 'the same s3fs serves');
    assert.equal(adopted.refs, 1, 'the reference survived the kill');

    // The running container never noticed.
    const ticks = async () => Number((await docker(['exec', holder, 'sh', '-c', 'wc -l < /data/ticks'])).trim());
    const n1 = await ticks();
    await new Promise((r) => setTimeout(r, 2000));
    assert.ok((await ticks()) > n1, 'the container keeps writing');
    assert.equal((await dockerResult(['exec', holder, 'cat', '/tmp/failed'])).exitCode, 1, 'no append failed');

    // A new container sees what was written before the kill, and writes.
    const r = await dockerResult(run('--rm', '--mount', mountArg(vol), TEST_IMAGE, 'sh', '-c', 'cat /data/before.txt && echo after > /data/after.txt'));
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'before');
    assert.equal(await s3!.getObject(BUCKET, 'after.txt'), 'after\n');

    // The last container to stop unmounts, and the adopted client ends with its mount.
    await docker(['rm', '-f', holder]);
    await waitFor('unmounted after the last container', async () => {
      const s = await volumeStatus(vol);
      return s.refs === 0 && s.mounted === false;
    }, 60_000, 200);
    await waitFor('the adopted s3fs to exit', async () => !(await isRunning(client)), 60_000, 200);
    assert.ok(Number((await s3!.getObject(BUCKET, 'ticks'))?.split('\n').filter(Boolean).length) > 0, "the container's appends are in the bucket");
    await docker(['volume', 'rm', vol]);
  });
});
