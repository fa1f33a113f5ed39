// A swarm service whose tasks mount an ossnas volume (`docker service create --mount
// type=volume,volume-driver=...,volume-opt=...`), on a single-node swarm of the test's own dockerd:
// two replicas share one bucket through one mount, swarm creates the volume from the volume-opts,
// and removing the service unmounts it. Also what the plugin's SCOPE setting changes under swarm.
// Needs root and dockerd.
//
// The swarm: this dockerd's own single-node swarm, or the one it already manages
// (test/helpers/swarm.ts); every task is pinned to this node.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CONTAINER_LABEL,
  docker,
  dockerdLogPath,
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
import { joinSwarm, leaveSwarm, removeService, serviceContainers, waitForRunningTasks, type Swarm } from '../helpers/swarm.js';

const PLUGIN = 'ossnas-swarm-e2e';
const RUN = randomBytes(3).toString('hex');
const BUCKET = 'swarm-bucket';
const REPLICAS = 2;
/** Each task writes a file named by its hostname (task-<slot>) holding that name, then idles. */
const TASK_CMD = 'echo "$(hostname)" > "/data/$(hostname)" && sleep 3600';
const TASK_FILES = ['task-1', 'task-2'];

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
