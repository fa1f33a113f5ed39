// A NAS volume under a swarm service whose task moves between two nodes, in the NFS guest
// (scripts/nfs-guest.sh: this machine's kernel has no NFS). The guest is one kernel, so each
// "node" is a dockerd with its own socket, data root, exec root and pid file (as
// scripts/cluster.sh runs them on the host), and with its own ossnas, a plain host process as in
// test/guest/nas-docker.test.ts. Both plugins must be called `ossnas` (a service names one
// driver), and dockerd finds legacy plugins only by their socket in the fixed directory
// /run/docker/plugins: so each node's dockerd and ossnas run in a mount namespace of their own,
// where a directory of that node is bind-mounted over /run/docker/plugins. That also keeps each
// node's NFS mounts in its own namespace, as on separate hosts, where the test can look for them.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { readMounts, type MountEntry } from '../../src/host/mountinfo.js';
import { ClusterNode } from '../helpers/cluster.js';
import { REPO_ROOT, waitFor } from '../helpers/docker.js';
import { tempDir } from '../helpers/env.js';
import { prepareGuestForDockerd, secs, startDockerd, type Dockerd } from '../helpers/guest-dockerd.js';
import { startPlugin, type PluginProcess } from '../helpers/plugin-process.js';

const EXPORT = '/srv/nfs';
const IMAGE = 'ossnas/busybox:1';
const DRIVER = 'ossnas';
const PLUGINS_DIR = '/run/docker/plugins';
/** Swarm's ports on the guest's loopback: node n listens on PORT0 + n. */
const PORT0 = 4377;
const RUN = randomBytes(3).toString('hex');
const inGuest = process.env.OSSNAS_NFS_GUEST === '1';
const VOLUME = `swarm-${RUN}`;
const SUB = `${EXPORT}/swarm-${RUN}`;
// nosharecache: the two nodes share one kernel, whose NFS client would otherwise give both
// nodes' mounts one superblock (one cache, one device): each node gets its own, as each host has.
const VOLUME_OPTS = { type: 'nas', server: '127.0.0.1', path: SUB, vers: '4.1', options: 'nosharecache' };

const isNfs = (m: MountEntry) => m.fsType === 'nfs' || m.fsType === 'nfs4';

interface Node {
  name: string;
  dir: string;
  /** A process that holds the node's mount namespace (`sleep`); its PID names the namespace. */
  holder: ChildProcess;
  nsPid: number;
  dockerd?: Dockerd;
  plugin?: PluginProcess;
  /** `docker -H` of this node */
  cli: ClusterNode;
  id: string;
}

/**
 * A new mount namespace (private: nothing mounted in it reaches the guest's, nor the other
 * node's, and the other way round) with `pluginsDir` over /run/docker/plugins, held by a
 * process until it is killed. unshare without --fork execs: the child is the shell, then sleep.
 */
async function mountNamespace(pluginsDir: string): Promise<ChildProcess> {
  const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c',
    `mount --bind "$1" ${PLUGINS_DIR} && echo ready && exec sleep infinity`, 'sh', pluginsDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (c) => ((out += String(c)), out.includes('ready\n') && resolve()));
    child.stderr!.on('data', (c) => (out += String(c)));
    child.once('exit', (code) => reject(new Error(`unshare ended (exit ${code}) before its namespace was ready: ${out}`)));
    child.once('error', reject);
  });
  return child;
}

/**
 * Promise.all that waits for every step before it fails: `after` must not clean up under a
 * step still running.
 */
async function settled(steps: Array<Promise<unknown>>): Promise<void> {
  const failed = (await Promise.allSettled(steps)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

describe('a swarm of two dockerd nodes in the guest: a task on a NAS volume moves by drain', { skip: inGuest ? false : 'runs inside the NFS guest (scripts/nfs-guest.sh)', timeout: 600_000 }, () => {
  const nodes: Node[] = [];
  let cleanup: (() => Promise<void>) | undefined;
  let manager: Node;
  const services: string[] = [];
  const volumes: string[] = [];
  // Set up in `before`, where there is no t.diagnostic: reported by the test.
  const setupNotes: string[] = [];

  before(async () => {
    const t0 = Date.now();
    const t = await tempDir('ossnas-swarm-');
    cleanup = t.cleanup;
    const { storage, notes } = await prepareGuestForDockerd();
    setupNotes.push(...notes);
    await mkdir(PLUGINS_DIR, { recursive: true }); // the bind mount's target

    for (const name of ['n1', 'n2']) {
      const dir = path.join(t.dir, name);
      await mkdir(path.join(dir, 'plugins'), { recursive: true });
      const holder = await mountNamespace(path.join(dir, 'plugins'));
      const cli = new ClusterNode(name, `unix://${dir}/docker.sock`, path.join(dir, 'dockerd.log'));
      nodes.push({ name, dir, holder, nsPid: holder.pid!, cli, id: '' });
    }
    [manager] = nodes as [Node];
    const enter = (n: Node) => ['nsenter', '-t', String(n.nsPid), '-m', '--'];

    // Both nodes at once, and on each its dockerd and ossnas at once: under TCG a dockerd takes
    // 6-14 s, mostly its own start-up work. No bridge and no iptables (the guest has no network,
    // and no other dockerd whose docker0 --bridge=none would delete), and each node's files in its
    // own directory.
    // ossnas runs in the node's namespace, which OSSNAS_HOST_PID names: with `auto` a plain host
    // process that can enter PID 1's namespace mounts there (the guest's), where the node's
    // dockerd would not see the mount.
    let t1 = Date.now();
    await settled(nodes.map(async (n) => {
      await settled([
        startDockerd({
          host: n.cli.host,
          log: n.cli.logFile,
          prefix: enter(n),
          args: [
            '--data-root', path.join(n.dir, 'data'), '--exec-root', path.join(n.dir, 'exec'), '--pidfile', path.join(n.dir, 'docker.pid'),
            '--bridge=none', '--iptables=false', '--ip6tables=false', '--ip-masq=false', '--ip-forward=false', '--userland-proxy=false',
            `--storage-driver=${storage}`,
          ],
        }).then((d) => (n.dockerd = d)),
        startPlugin(path.join(n.dir, 'ossnas'), { OSSNAS_SOCKET: path.join(n.dir, 'plugins', `${DRIVER}.sock`), OSSNAS_HOST_PID: String(n.nsPid) },
          { prefix: enter(n), socketTimeoutMs: 60_000 }).then((p) => (n.plugin = p)),
      ]);
    }));
    setupNotes.push(`2 dockerds (${storage}) and their plugins answered after ${nodes.map((n) => `${secs(n.dockerd!.startMs)}${n.dockerd!.attempts > 1 ? ` (${n.dockerd!.attempts} starts)` : ''}`).join(' and ')} (${secs(Date.now() - t1)} in all)`);

    const [n1, n2] = nodes as [Node, Node];
    // No image can be pulled: made on each node (meanwhile the swarm forms).
    const loadImage = async () => {
      const t2 = Date.now();
      await settled(nodes.map((n) =>
        execa('bash', [path.join(REPO_ROOT, 'scripts', 'busybox-image.sh'), IMAGE], { env: { DOCKER_HOST: n.cli.host }, timeout: 300_000 })));
      setupNotes.push(`busybox image made on both nodes in ${secs(Date.now() - t2)}`);
    };
    const formSwarm = async () => {
      // The volume, created on each node before the swarm forms. Swarm's scheduler places a task
      // only on nodes whose description lists its volume driver, and a node lists a legacy plugin
      // only once its dockerd has used it: without this, "no suitable node (missing plugin on 2
      // nodes)". A node sends its description when it joins (and looks for changes every 20 s).
      let t2 = Date.now();
      await rm(SUB, { recursive: true, force: true }); // the plugin creates the sub-path itself
      volumes.push(VOLUME);
      await settled(nodes.map((n) => n.cli.docker(['volume', 'create', '-d', DRIVER, ...Object.entries(VOLUME_OPTS).flatMap(([k, v]) => ['-o', `${k}=${v}`]), VOLUME])));
      setupNotes.push(`volume created on both nodes in ${secs(Date.now() - t2)}`);
      t2 = Date.now();
      const addr = (n: Node) => `127.0.0.1:${PORT0 + Number(n.name.slice(1))}`;
      const init = await n1.cli.docker(['swarm', 'init', '--listen-addr', addr(n1), '--advertise-addr', addr(n1)]);
      const token = /--token (\S+)/.exec(init)?.[1];
      assert.ok(token, `no join token in: ${init}`);
      await n2.cli.docker(['swarm', 'join', '--listen-addr', addr(n2), '--advertise-addr', addr(n2), '--token', token, addr(n1)]);
      for (const n of nodes) n.id = await n.cli.id();
      setupNotes.push(`swarm of 2 formed in ${secs(Date.now() - t2)}`);
    };
    t1 = Date.now();
    await settled([loadImage(), formSwarm()]);
    setupNotes.push(`image and swarm in ${secs(Date.now() - t1)}; all set up in ${secs(Date.now() - t0)}`);
  });

  after(async () => {
    const t0 = Date.now();
    const problems: string[] = [];
    const quietly = async (what: string, p: Promise<unknown>) => p.catch((e: Error) => problems.push(`${what}: ${e.message}`));
    if (manager?.dockerd) for (const s of services) await quietly(`service rm ${s}`, manager.cli.dockerResult(['service', 'rm', s]));
    // Each node on its own from here: leaves the swarm, drops the volume, stops its dockerd (which
    // stops its containers and the containerd it started) and its ossnas; then its namespace goes
    // with the process that holds it, and with it whatever a failed test left mounted there.
    await Promise.all(nodes.map(async (n) => {
      if (n.dockerd) {
        await quietly(`${n.name} swarm leave`, n.cli.dockerResult(['swarm', 'leave', '--force']));
        for (const v of volumes) await quietly(`${n.name} volume rm ${v}`, n.cli.dockerResult(['volume', 'rm', '-f', v]));
        await quietly(`${n.name} dockerd stop`, n.dockerd.stop());
      }
      await quietly(`${n.name} plugin stop`, n.plugin?.stop() ?? Promise.resolve());
      const left = (await readMounts(`/proc/${n.nsPid}/mountinfo`).catch(() => [] as MountEntry[])).filter(isNfs);
      for (const m of left) console.error(`left mounted in ${n.name}'s namespace:`, m);
      n.holder.kill('SIGKILL');
    }));
    await cleanup?.();
    console.log(`# swarm cleaned up in ${secs(Date.now() - t0)}`);
    if (problems.length) throw new Error(`cleanup: ${problems.join('; ')}`);
  });

  // ---------------------------------------------------------------------------------------------

  /** NFS mounts of `exportPath` in the node's namespace (what its ossnas mounted; containers' are in their own). */
  const nfsMountsIn = async (n: Node, exportPath: string) =>
    (await readMounts(`/proc/${n.nsPid}/mountinfo`)).filter((m) => isNfs(m) && m.source === `127.0.0.1:${exportPath}`);

  async function statusOn(n: Node, volume: string): Promise<Record<string, unknown> | undefined> {
    const r = await n.cli.dockerResult(['volume', 'inspect', '--format', '{{json .Status}}', volume]);
    return r.exitCode === 0 ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined;
  }

  /** Waits until the node holds nothing of the volume: no reference, not mounted, no NFS mount in its namespace. */
  const nothingHeldOn = (n: Node, volume: string, exportPath: string) =>
    waitFor(`${n.name} to hold nothing of ${volume}`, async () => {
      const s = await statusOn(n, volume);
      return (!s || (s.refs === 0 && s.mounted === false)) && (await nfsMountsIn(n, exportPath)).length === 0;
    }, 60_000, 250);

  /** The tasks of the service that should run, with their node: inspected by ID, since every node has the guest's hostname. */
  async function tasksOf(service: string): Promise<Array<{ node: string; state: string }>> {
    const ids = (await manager.cli.docker(['service', 'ps', '-q', '--no-trunc', '--filter', 'desired-state=running', service])).split('\n').filter(Boolean);
    if (!ids.length) return [];
    const out = await manager.cli.docker(['inspect', '--type', 'task', '--format', '{{.NodeID}} {{.Status.State}}', ...ids]);
    return out.split('\n').filter(Boolean).map((l) => {
      const [id, state = ''] = l.split(' ');
      return { node: nodes.find((n) => n.id === id)?.name ?? `? (${id})`, state };
    });
  }

  it('a task moved by drain finds what it wrote and writes on; the node it left holds nothing; and back again', async (t) => {
    for (const note of setupNotes.splice(0)) t.diagnostic(note);
    const svc = `swarm-${RUN}`;
    const vol = VOLUME;
    const sub = SUB;
    // With the options, as a service gives them, for a node that has no such volume yet.
    const mount = `type=volume,source=${vol},target=/data,volume-driver=${DRIVER},${Object.entries(VOLUME_OPTS).map(([k, v]) => `volume-opt=${k}=${v}`).join(',')}`;
    // Each start notes its node and where it takes the count up, then appends numbers from the
    // last one on the share: a line lost or written twice across a move breaks the sequence.
    const cmd = 'f=/data/count; touch $f; i=$(wc -l < $f); echo "$NODE $i" >> /data/starts; while :; do i=$((i+1)); echo $i >> $f; sleep 0.2; done';
    services.push(svc);
    let t0 = Date.now();
    await manager.cli.docker(['service', 'create', '--detach', '--name', svc, '--no-resolve-image', '--stop-grace-period', '1s', '--replicas', '1',
      '--env', 'NODE={{.Node.ID}}', '--mount', mount, IMAGE, 'sh', '-c', cmd]);

    const lines = async (file: string) => (await readFile(path.join(sub, file), 'utf8').catch(() => '')).split('\n').filter(Boolean);
    /** The count on the export, checked to be 1..N with no gap; returns N. */
    const counted = async () => {
      const nums = (await lines('count')).map(Number);
      nums.forEach((x, i) => assert.equal(x, i + 1, `count: line ${i + 1} is ${x} (${nums.join(' ')})`));
      return nums.length;
    };
    /** Waits for start number `k` (1-based) and for its task to have written 5 lines past where it began. */
    const started = async (k: number) => {
      const [id, from] = await waitFor(`start ${k} of the task, and its writes`, async () => {
        const s = (await lines('starts'))[k - 1]?.split(' ');
        return s && (await lines('count')).length >= Number(s[1]) + 5 ? s : undefined;
      }, 180_000, 250).catch(async (e: Error) => {
        throw new Error(`${e.message}\n${(await manager.cli.dockerResult(['service', 'ps', '--no-trunc', svc])).stdout}`);
      });
      await counted();
      const on = nodes.find((n) => n.id === id);
      assert.ok(on, `start ${k} on an unknown node ${id}`);
      return { on, from: Number(from) };
    };

    let { on: from } = await started(1);
    t.diagnostic(`service created: its task writes on ${from.name} after ${secs(Date.now() - t0)}`);
    const rounds = 2; // there and back
    for (let k = 2; k <= rounds + 1; k++) {
      const seen = await counted();
      t0 = Date.now();
      await manager.cli.docker(['node', 'update', '--availability', 'drain', from.id]);
      const { on: to, from: takenUpAt } = await started(k);
      const moved = Date.now() - t0;
      assert.notEqual(to.name, from.name, `start ${k} on the drained node`);
      assert.ok(takenUpAt >= seen, `the task on ${to.name} took the count up at ${takenUpAt}, but the share had ${seen} lines before the drain`);
      // The swarm agrees: one task, running on the node the task says it is on.
      assert.deepEqual(await tasksOf(svc), [{ node: to.name, state: 'running' }]);
      // The volume is mounted on the node the task runs on, in its namespace only.
      assert.deepEqual(await statusOn(to, vol).then((s) => [s?.refs, s?.mounted]), [1, true], `${to.name}'s volume`);
      assert.deepEqual((await nfsMountsIn(to, sub)).map((m) => m.mountPoint), [path.join(to.plugin!.mountRoot, vol)], `the NFS mount in ${to.name}'s namespace`);
      assert.equal((await readMounts()).filter((m) => m.source === `127.0.0.1:${sub}`).length, 0, "no NFS mount in the guest's own namespace");
      await nothingHeldOn(from, vol, sub);
      t.diagnostic(`drain of ${from.name}: the task writes on ${to.name} ${secs(moved)} later, from line ${takenUpAt + 1}; ${from.name} holds nothing ${secs(Date.now() - t0)} after the drain`);
      await manager.cli.docker(['node', 'update', '--availability', 'active', from.id]);
      from = to;
    }

    t0 = Date.now();
    await manager.cli.docker(['service', 'rm', svc]);
    services.splice(services.indexOf(svc), 1);
    await settled(nodes.map(async (n) => {
      await nothingHeldOn(n, vol, sub);
      await n.cli.docker(['volume', 'rm', vol]);
    }));
    volumes.splice(volumes.indexOf(vol), 1);
    t.diagnostic(`service and volumes removed, nothing held on either node, in ${secs(Date.now() - t0)}`);

    const starts = await lines('starts');
    assert.equal(starts.length, rounds + 1, `one start per placement: ${starts.join(' | ')}`);
    const total = await counted();
    t.diagnostic(`the share holds ${total} numbered lines with no gap, written by ${starts.length} tasks (${starts.map((s) => nodes.find((n) => n.id === s.split(' ')[0])?.name).join(', ')})`);
  });
});
