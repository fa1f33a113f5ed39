// A swarm service whose tasks mount an ossnas volume (`docker service create --mount
// type=volume,volume-driver=...,volume-opt=...`), on a single-node swarm of the test's own dockerd:
// two replicas share one bucket through one mount, swarm creates the volume from the volume-opts,
// and removing the service unmounts it. Also what the plugin's SCOPE setting changes under swarm.
// Needs root and dockerd.
//
// The swarm: a dockerd outside any swarm gets `docker swarm init` (listening on 127.0.0.1 only),
// and the test leaves that swarm again (and removes the docker_gwbridge network init created). A
// dockerd that already manages a swarm is used as it is and left in it; every task is pinned to
// this node (the plugin is installed here only). A swarm worker, or a swarm in any other state,
// fails the test with a clear message: services cannot be created there.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CONTAINER_LABEL,
  docker,
  dockerdLogPath,
  dockerResult,
  fuseClientPid,
  mountPoints,
  processesWith,
  TEST_IMAGE,
  volumeExists,
  waitFor,
  type InstalledPlugin,
} from '../helpers/docker.js';
import { readMounts } from '../../src/host/mountinfo.js';
import { LOCAL_PROFILE, setUpPlugin, type E2eSetup } from '../helpers/e2e-setup.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import type { S3Server } from '../helpers/s3.js';

const PLUGIN = 'ossnas-swarm-e2e';
const RUN = randomBytes(3).toString('hex');
const BUCKET = 'swarm-bucket';
/** Node label that marks a swarm this test initialised (so a run after a crashed one still leaves it). */
const INIT_LABEL = 'ossnas-e2e.swarm-init';
const REPLICAS = 2;
/** Each task writes a file named by its hostname (task-<slot>) holding that name, then idles. */
const TASK_CMD = 'echo "$(hostname)" > "/data/$(hostname)" && sleep 3600';
const TASK_FILES = ['task-1', 'task-2'];

interface SwarmInfo {
  LocalNodeState: string;
  ControlAvailable: boolean;
  NodeID: string;
  Nodes?: number;
  Error: string;
}

interface Swarm {
  nodeId: string;
  /** The test initialised this swarm and must leave it. */
  ours: boolean;
  /** docker_gwbridge existed before the init (then it is not ours to remove). */
  gwbridgeExisted: boolean;
}

const swarmInfo = async () => JSON.parse(await docker(['info', '--format', '{{json .Swarm}}'])) as SwarmInfo;

async function networkExists(name: string): Promise<boolean> {
  return (await dockerResult(['network', 'inspect', name])).exitCode === 0;
}

/** A swarm this dockerd manages: its own new single-node swarm, or the one it already manages. */
async function joinSwarm(note: (m: string) => void): Promise<Swarm> {
  const info = await swarmInfo();
  if (info.LocalNodeState === 'inactive') {
    const gwbridgeExisted = await networkExists('docker_gwbridge');
    // Loopback only: no network is needed for one node, and the CI machine exposes no swarm port.
    await docker(['swarm', 'init', '--advertise-addr', '127.0.0.1', '--listen-addr', '127.0.0.1:2377'], { timeout: 60_000 });
    const { NodeID } = await swarmInfo();
    await docker(['node', 'update', '--label-add', `${INIT_LABEL}=1`, NodeID]).catch(async (e: unknown) => {
      await dockerResult(['swarm', 'leave', '--force']);
      throw e;
    });
    // dockerd sets up the ingress network's sandbox ~2 s after init, services or not. A leave
    // before that is done (a test failing at once) leaves a stale `ingress` network and an
    // ingress-sbox endpoint on docker_gwbridge behind (measured with dockerd 20.10).
    const t0 = Date.now();
    const settled = await waitFor('the ingress sandbox on docker_gwbridge', async () => (await gwbridgeEndpoints())?.includes('ingress-sbox'), 30_000, 250)
      .then(() => `ingress set up after ${Date.now() - t0} ms`, (e: Error) => e.message);
    note(`docker swarm init: single-node swarm, node ${NodeID}; ${settled}`);
    return { nodeId: NodeID, ours: true, gwbridgeExisted };
  }
  if (info.LocalNodeState === 'active' && info.ControlAvailable) {
    const labels = JSON.parse(await docker(['node', 'inspect', '--format', '{{json .Spec.Labels}}', info.NodeID])) as Record<string, string> | null;
    const ours = Boolean(labels?.[INIT_LABEL]);
    note(
      ours
        ? `dockerd is still in the swarm an earlier run of this test initialised: using it, and leaving it at the end`
        : `dockerd already manages a swarm (${info.Nodes ?? '?'} node(s)): using it, tasks pinned to node ${info.NodeID}; it stays in the swarm`,
    );
    return { nodeId: info.NodeID, ours, gwbridgeExisted: !ours };
  }
  if (info.LocalNodeState === 'active') {
    throw new Error(
      `this dockerd is a swarm worker (node ${info.NodeID}): services can only be created on a manager. ` +
        `Run this test on a dockerd outside any swarm (it then creates and leaves its own) or on a swarm manager.`,
    );
  }
  throw new Error(
    `this dockerd's swarm state is '${info.LocalNodeState}'${info.Error ? ` (${info.Error})` : ''}: the test needs either no swarm ` +
      `(it creates its own) or an active swarm manager. Not touching it.`,
  );
}

/** The endpoints on docker_gwbridge (the bridge swarm creates for its sandboxes), or undefined when there is none. */
async function gwbridgeEndpoints(): Promise<string[] | undefined> {
  const r = await dockerResult(['network', 'inspect', '--format', '{{json .Containers}}', 'docker_gwbridge']);
  return r.exitCode === 0 ? Object.keys((JSON.parse(r.stdout) as Record<string, unknown> | null) ?? {}) : undefined;
}

/** Leaves the swarm the test initialised, and removes the docker_gwbridge network the init created. */
async function leaveSwarm(s: Swarm): Promise<void> {
  if (!s.ours) return;
  await docker(['swarm', 'leave', '--force'], { timeout: 60_000 });
  if (s.gwbridgeExisted) return;
  // Its endpoints go within a moment of the leave; one that stays is a stale ingress sandbox.
  let eps = await gwbridgeEndpoints();
  for (const deadline = Date.now() + 10_000; eps?.length && Date.now() < deadline; eps = await gwbridgeEndpoints()) {
    await new Promise((r) => setTimeout(r, 250));
  }
  if (eps === undefined) return;
  if (eps.includes('ingress-sbox')) await docker(['network', 'disconnect', '-f', 'docker_gwbridge', 'gateway_ingress-sbox']);
  await docker(['network', 'rm', 'docker_gwbridge']);
}

interface Task {
  id: string;
  name: string;
  desired: string;
  current: string;
  error: string;
}

async function tasksOf(service: string): Promise<Task[]> {
  const out = await docker(['service', 'ps', '--no-trunc', '--format', '{{.ID}}\t{{.Name}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}', service]);
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [id = '', name = '', desired = '', current = '', error = ''] = l.split('\t');
      return { id, name, desired, current, error };
    });
}

const servicePs = async (service: string) => (await dockerResult(['service', 'ps', '--no-trunc', service])).stdout;

/**
 * Waits until COUNT tasks of SERVICE run. A task that failed, was rejected or completed ends the
 * wait at once (restart-condition none: it will not come back). Pending is no failure: the
 * scheduler may take up to one node-description period (~20 s) to see a plugin just enabled.
 */
async function waitForRunningTasks(service: string, count: number, timeoutMs = 90_000): Promise<Task[]> {
  const t0 = Date.now();
  let last: Task[] = [];
  while (Date.now() - t0 < timeoutMs) {
    last = await tasksOf(service);
    const dead = last.filter((k) => /^(Failed|Rejected|Complete|Orphaned|Remove|Shutdown)/.test(k.current));
    if (dead.length) {
      throw new Error(`a task of ${service} ended instead of running: ${dead.map((k) => `${k.name} ${k.current} ${k.error}`).join('; ')}\n` +
        `docker service ps --no-trunc ${service}:\n${await servicePs(service)}`);
    }
    const running = last.filter((k) => k.current.startsWith('Running') && k.desired === 'Running');
    if (running.length === count) return running;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${count} running tasks of ${service}\n` +
    `docker service ps --no-trunc ${service}:\n${await servicePs(service)}`);
}

const serviceContainers = async (service: string) =>
  (await docker(['ps', '-aq', '--filter', `label=com.docker.swarm.service.name=${service}`])).split('\n').filter(Boolean);

/** `docker service rm`, then waits until its task containers are gone (stop grace 1 s). */
async function removeService(service: string, timeoutMs = 60_000): Promise<void> {
  const r = await dockerResult(['service', 'rm', service]);
  if (r.exitCode !== 0 && !/not found|no such service/i.test(r.stderr)) throw new Error(`docker service rm ${service}: ${r.stderr}`);
  await waitFor(`the task containers of service ${service} to go`, async () => (await serviceContainers(service)).length === 0, timeoutMs, 250);
}

/** What dockerd's log holds of the plugin's "call" lines from byte FROM on: counts per call and status. */
async function pluginCalls(logPath: string | undefined, from: number, pluginId: string): Promise<string> {
  if (!logPath) return "(dockerd's log not found)";
  const fh = await open(logPath, 'r');
  try {
    const { size } = await fh.stat();
    const buf = Buffer.alloc(Math.max(0, size - from));
    await fh.read(buf, 0, buf.length, from);
    const counts = new Map<string, number>();
    for (const line of buf.toString('utf8').split('\n')) {
      if (!line.includes(`plugin=${pluginId}`)) continue;
      const call = /\\"call\\":\\"VolumeDriver\.(\w+)\\"/.exec(line)?.[1];
      if (!call) continue;
      const key = `${call} ${/\\"status\\":(\d+)/.exec(line)?.[1] ?? '?'}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return [...counts].map(([k, n]) => `${k} x${n}`).join(', ') || '(no call lines)';
  } finally {
    await fh.close();
  }
}

interface Volume {
  Driver: string;
  Scope: string;
  Options: Record<string, string> | null;
  Status: Record<string, unknown>;
}
const inspectVolume = async (name: string) => (JSON.parse(await docker(['volume', 'inspect', name])) as Volume[])[0]!;

/** Waits until every task's file is in the bucket under PREFIX ('' or 'dir/'), holding its name. */
function waitForTaskFiles(s3: S3Server, prefix: string): Promise<unknown> {
  return waitFor(`both task files${prefix ? ` under ${prefix}` : ''} in the bucket`, async () => {
    for (const f of TASK_FILES) if ((await s3.getObject(BUCKET, `${prefix}${f}`)) !== `${f}\n`) return false;
    return true;
  }, 15_000);
}

/** Waits until no task holds VOLUME and it is unmounted; returns its Status then. */
function waitUnmounted(volume: string): Promise<Record<string, unknown>> {
  return waitFor(`${volume} to be unmounted (refs 0, mounted false)`, async () => {
    const s = (await inspectVolume(volume)).Status;
    return s.refs === 0 && s.mounted === false ? s : undefined;
  }, 15_000);
}

const isIsoTime = (s: unknown) => typeof s === 'string' && new Date(s).toISOString() === s;

describe('swarm services with ossnas volumes', { skip: rootSkipReason(), timeout: 600_000 }, () => {
  let setup: E2eSetup | undefined;
  let plugin: InstalledPlugin;
  let s3: S3Server;
  let swarm: Swarm | undefined;
  let logPath: string | undefined;
  const services: string[] = [];
  let swarmNote = '';

  before(async () => {
    // The plugin before the swarm: the node then describes it to the scheduler from the start.
    setup = await setUpPlugin(PLUGIN, { buckets: [BUCKET] });
    plugin = setup.plugin;
    s3 = setup.s3!;
    logPath = await dockerdLogPath();
    swarm = await joinSwarm((m) => (swarmNote = m));
  });

  after(async () => {
    const errors: unknown[] = [];
    for (const svc of services) await removeService(svc).catch((e: unknown) => errors.push(e));
    if (swarm) await leaveSwarm(swarm).catch((e: unknown) => errors.push(e));
    // Volumes, containers labelled for the plugin (the tasks carry the label too), the plugin, S3.
    await setup?.cleanup().catch((e: unknown) => errors.push(e));
    if (errors.length) throw new AggregateError(errors, `swarm e2e cleanup failed: ${errors.map((e) => (e as Error).message).join('; ')}`);
  });

  /** `docker service create` of REPLICAS tasks on this node, each mounting VOLUME (created by swarm from the volume-opts). */
  async function createService(service: string, volume: string, volumeOpts: Record<string, string>): Promise<void> {
    const opts = Object.entries({ type: 'oss', bucket: BUCKET, url: s3.url, credentials: LOCAL_PROFILE, ...volumeOpts })
      .map(([k, v]) => `volume-opt=${k}=${v}`)
      .join(',');
    services.push(service);
    await docker([
      'service', 'create', '--detach', '--name', service, '--replicas', String(REPLICAS),
      // The image exists on this node only: do not ask a registry for its digest.
      '--no-resolve-image',
      // A failed task stays failed (the wait reports it) instead of being replaced in a loop.
      '--restart-condition', 'none',
      // busybox sh as PID 1 ignores SIGTERM: without this, each task takes the default 10 s to stop.
      '--stop-grace-period', '1s',
      '--constraint', `node.id==${swarm!.nodeId}`,
      '--hostname', 'task-{{.Task.Slot}}',
      '--container-label', `${CONTAINER_LABEL}=${PLUGIN}`,
      '--mount', `type=volume,source=${volume},target=/data,volume-driver=${PLUGIN},${opts}`,
      TEST_IMAGE, 'sh', '-c', TASK_CMD,
    ]);
  }

  it('two replicas share one bucket through one mount; service rm unmounts; volume rm keeps the data', async (t) => {
    t.diagnostic(swarmNote);
    const svc = `ossnas-swarm-${RUN}`;
    const vol = `ossnas-swarm-${RUN}-data`;
    const hostPath = path.join(plugin.propagatedMount, vol);
    const logFrom = logPath ? (await stat(logPath)).size : 0;

    const t0 = Date.now();
    await createService(svc, vol, {});
    const running = await waitForRunningTasks(svc, REPLICAS);
    t.diagnostic(`${running.length} tasks running ${Date.now() - t0} ms after docker service create: ${running.map((k) => k.name).join(', ')}`);

    // Swarm created the volume from the volume-opts and mounted it once for both tasks.
    const v = await inspectVolume(vol);
    t.diagnostic(`docker volume inspect while the service runs: Scope ${v.Scope}, Status ${JSON.stringify(v.Status)}`);
    assert.match(v.Driver, new RegExp(`^${PLUGIN}(:latest)?$`));
    assert.equal(v.Scope, 'local', "the plugin's default SCOPE");
    assert.deepEqual(v.Options, { type: 'oss', bucket: BUCKET, url: s3.url, credentials: LOCAL_PROFILE });
    assert.deepEqual(
      [v.Status.type, v.Status.bucket, v.Status.credentials, v.Status.mounted, v.Status.refs, v.Status.health],
      ['oss', BUCKET, `profile ${LOCAL_PROFILE}`, true, REPLICAS, 'ok'],
    );
    assert.ok(isIsoTime(v.Status.since) && Date.parse(v.Status.since as string) >= t0 - 1000, `since: ${String(v.Status.since)}`);
    // One filesystem serves both tasks: one FUSE device at the host path (the host lists it once per
    // peer of the propagated mount, so it can show up more than once) and one s3fs for the volume.
    const here = (await readMounts()).filter((m) => m.mountPoint === hostPath);
    assert.deepEqual([...new Set(here.map((m) => `${m.fsType} ${m.device}`))].length, 1, `mounts at ${hostPath}: ${JSON.stringify(here)}`);
    assert.equal(here[0]!.fsType, 'fuse.s3fs');
    assert.equal((await processesWith(`/mnt/volumes/${vol}`)).filter((p) => /\bs3fs\b/.test(p)).length, 1, 'one s3fs for the volume');

    // Each task's file is in the bucket, and each task sees the other's through the shared mount.
    await waitForTaskFiles(s3, '');
    const containers = await serviceContainers(svc);
    assert.equal(containers.length, REPLICAS);
    for (const c of containers) {
      assert.equal(await docker(['exec', c, 'cat', ...TASK_FILES.map((f) => `/data/${f}`)]), TASK_FILES.join('\n'));
    }

    const t1 = Date.now();
    await removeService(svc);
    t.diagnostic(`task containers gone ${Date.now() - t1} ms after docker service rm`);
    const idle = await waitUnmounted(vol);
    assert.equal(idle.health, 'idle');
    assert.ok(Date.parse(idle.since as string) > Date.parse(v.Status.since as string), 'since moves when the mount ends');
    assert.deepEqual((await mountPoints()).filter((p) => p.startsWith(`${plugin.propagatedMount}/`)), [],
      "nothing mounted under the plugin's propagated mount");
    await waitFor('the s3fs of the volume to exit', async () => (await fuseClientPid(`/mnt/volumes/${vol}`)) === undefined, 10_000);
    t.diagnostic(`plugin calls from service create to here: ${await pluginCalls(logPath, logFrom, plugin.id)}`);

    // Swarm does not remove the volume with the service; removing it leaves the objects alone.
    assert.equal(await volumeExists(PLUGIN, vol), true, 'the volume outlives the service');
    await docker(['volume', 'rm', vol]);
    assert.equal(await volumeExists(PLUGIN, vol), false);
    for (const f of TASK_FILES) assert.equal(await s3.getObject(BUCKET, f), `${f}\n`, `${f} after docker volume rm`);
  });

  it('a stack deployed from a compose file: driver and driver_opts create the volume, both replicas write through it', async (t) => {
    const stack = `ossnas-stack-${RUN}`;
    const vol = `${stack}_data`; // compose names a stack's volume <stack>_<name>
    const dir = await tempDir('ossnas-stack-');
    t.after(dir.cleanup);
    // The stack example of docs/volumes.md (Swarm services and stacks), with this test's endpoint, profile, image and placement.
    const file = path.join(dir.dir, 'stack.yml');
    await writeFile(file, [
      'version: "3.8"',
      'services:',
      '  app:',
      `    image: ${TEST_IMAGE}`,
      // $$ is compose's escape for a literal $.
      `    command: ["sh", "-c", ${JSON.stringify(TASK_CMD.replaceAll('$', '$$$$'))}]`,
      '    hostname: "task-{{.Task.Slot}}"',
      '    stop_grace_period: 1s',
      '    labels:',
      `      ${CONTAINER_LABEL}: ${PLUGIN}`,
      '    volumes:',
      '      - data:/data',
      '    deploy:',
      `      replicas: ${REPLICAS}`,
      '      restart_policy: { condition: none }',
      `      placement: { constraints: ["node.id==${swarm!.nodeId}"] }`,
      'volumes:',
      '  data:',
      `    driver: ${PLUGIN}`,
      '    driver_opts:',
      '      type: oss',
      `      bucket: ${BUCKET}`,
      `      url: ${s3.url}`,
      `      credentials: ${LOCAL_PROFILE}`,
      '      path: /stack',
      '',
    ].join('\n'));
    services.push(`${stack}_app`);
    await docker(['stack', 'deploy', '--resolve-image', 'never', '-c', file, stack]);
    await waitForRunningTasks(`${stack}_app`, REPLICAS);
    const v = await inspectVolume(vol);
    assert.deepEqual(v.Options, { type: 'oss', bucket: BUCKET, url: s3.url, credentials: LOCAL_PROFILE, path: '/stack' });
    assert.deepEqual([v.Status.mounted, v.Status.refs, v.Status.path], [true, REPLICAS, '/stack']);
    await waitForTaskFiles(s3, 'stack/');
    await docker(['stack', 'rm', stack]);
    await waitFor(`the task containers of ${stack} to go`, async () => (await serviceContainers(`${stack}_app`)).length === 0, 60_000, 250);
    await waitUnmounted(vol);
    await docker(['volume', 'rm', vol]);
    assert.deepEqual((await s3.keys(BUCKET)).filter((k) => k.startsWith('stack/')), TASK_FILES.map((f) => `stack/${f}`));
  });

  it('with SCOPE=global Docker reports the volume as global and the service works the same', async (t) => {
    await docker(['plugin', 'disable', '-f', PLUGIN]);
    await docker(['plugin', 'set', PLUGIN, 'SCOPE=global']);
    await docker(['plugin', 'enable', '--timeout', '60', PLUGIN], { timeout: 90_000 });
    const svc = `ossnas-swarm-${RUN}-global`;
    const vol = `ossnas-swarm-${RUN}-global`;
    const t0 = Date.now();
    await createService(svc, vol, { path: '/global' });
    await waitForRunningTasks(svc, REPLICAS);
    t.diagnostic(`tasks running ${Date.now() - t0} ms after docker service create (plugin re-enabled just before)`);
    const v = await inspectVolume(vol);
    assert.equal(v.Scope, 'global');
    assert.deepEqual([v.Status.mounted, v.Status.refs, v.Status.health, v.Status.path], [true, REPLICAS, 'ok', '/global']);
    await waitForTaskFiles(s3, 'global/');
    await removeService(svc);
    await waitUnmounted(vol);
    await docker(['volume', 'rm', vol]);
    assert.deepEqual((await s3.keys(BUCKET)).filter((k) => k.startsWith('global/')), TASK_FILES.map((f) => `global/${f}`));
  });
});
