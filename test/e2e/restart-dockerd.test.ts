// dockerd itself stopped and started again, without and with live-restore, while containers use
// ossnas volumes: the plugin comes back with every volume, and the volumes work. Runs last (file
// order) because it restarts the daemon every other test uses; it always leaves dockerd running
// with its original command line. Needs root and a dockerd this test may restart.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openSync, closeSync } from 'node:fs';
import { readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import {
  CONTAINER_LABEL,
  docker,
  dockerResult,
  REPO_ROOT,
  requireDocker,
  TEST_IMAGE,
  volumeStatus,
  volumesOf,
  waitFor,
} from '../helpers/docker.js';
import { setUpPlugin, type E2eSetup } from '../helpers/e2e-setup.js';
import { rootSkipReason } from '../helpers/env.js';
import type { S3Server } from '../helpers/s3.js';

const PLUGIN = 'ossnas-dockerd-e2e';
const RUN = randomBytes(3).toString('hex');
const BUCKET = 'dockerd-bucket';
const mountArg = (vol: string) => `type=volume,src=${vol},dst=/data,volume-driver=${PLUGIN}`;

interface Daemon {
  argv: string[];
  log: string;
}

async function currentDaemon(): Promise<{ pid: number } & Daemon> {
  const pid = Number((await execa('pgrep', ['-o', '-x', 'dockerd'])).stdout.trim());
  const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
  const out = (await readlink(`/proc/${pid}/fd/1`).catch(() => '')).replace(/ \(deleted\)$/, '');
  const log = out.startsWith('/') && !out.startsWith('/dev/') ? out : path.join(REPO_ROOT, '.cache', 'dockerd.log');
  return { pid, argv, log };
}

async function stopDaemon(pid: number): Promise<void> {
  process.kill(pid, 'SIGTERM');
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  await waitFor('dockerd to exit', async () => !alive(), 60_000, 100);
}

/** Starts dockerd as host-setup does: its own session, output appended to the same log. */
async function startDaemon(d: Daemon, extra: string[] = []): Promise<void> {
  const fd = openSync(d.log, 'a');
  try {
    spawn(d.argv[0]!, [...d.argv.slice(1), ...extra], { detached: true, stdio: ['ignore', fd, fd] }).unref();
  } finally {
    closeSync(fd);
  }
  await waitFor('dockerd to answer', async () => (await dockerResult(['version', '--format', '{{.Server.Version}}'])).exitCode === 0, 60_000, 200);
}

describe('dockerd restarted while containers use ossnas volumes', { skip: rootSkipReason(), timeout: 900_000 }, () => {
  let setup: E2eSetup | undefined;
  let s3: S3Server;
  let original: Daemon;
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    await requireDocker();
    original = await currentDaemon();
    if (original.argv.includes('--live-restore')) throw new Error('this test starts dockerd with and without --live-restore itself');
    setup = await setUpPlugin(PLUGIN, { buckets: [BUCKET] });
    s3 = setup.s3!;
  });
  after(async () => {
    // Whatever happened, leave the daemon as we found it.
    const now = await currentDaemon().catch(() => undefined);
    if (!now || now.argv.join(' ') !== original.argv.join(' ')) {
      if (now) await stopDaemon(now.pid).catch(() => undefined);
      await startDaemon(original);
    }
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await setup?.cleanup();
  });

  for (const liveRestore of [false, true]) {
    it(`${liveRestore ? 'with' : 'without'} live-restore: every volume comes back and works`, async (t) => {
      const oss = `ossnas-dd-oss-${RUN}-${Number(liveRestore)}`;
      const disk = `ossnas-dd-disk-${RUN}-${Number(liveRestore)}`;
      const holder = `ossnas-dd-${RUN}-${Number(liveRestore)}`;
      cleanups.push(() => dockerResult(['rm', '-f', holder]));
      // live-restore decides what the daemon does when it stops: it must be on before that.
      const flags = liveRestore ? ['--live-restore'] : [];
      if (liveRestore) {
        await stopDaemon((await currentDaemon()).pid);
        await startDaemon(original, flags);
        await waitFor('the plugin to answer', async () => (await dockerResult(['plugin', 'inspect', '--format', '{{.Enabled}}', PLUGIN])).stdout === 'true', 60_000, 200);
      }
      await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`, '-o', 'credentials=local', '-o', `path=/${oss}`, oss]);
      await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=disk', '-o', 'size=32M', disk]);
      await docker(['run', '-d', '--name', holder, '--label', `${CONTAINER_LABEL}=${PLUGIN}`, '--mount', mountArg(disk), '--mount',
        `type=volume,src=${oss},dst=/oss,volume-driver=${PLUGIN}`, TEST_IMAGE, 'sh', '-c', 'echo kept > /oss/kept.txt; while :; do date >> /data/ticks; sleep 0.2; done']);
      await waitFor('the holder to write to both', async () => (await s3.getObject(BUCKET, `${oss}/kept.txt`)) === 'kept\n');

      const { pid } = await currentDaemon();
      const t0 = performance.now();
      await stopDaemon(pid);
      await startDaemon(original, flags);
      t.diagnostic(`dockerd stopped and answering again in ${Math.round(performance.now() - t0)} ms`);

      const listed = await waitFor('the plugin to list its volumes', async () => {
        const v: string[] = await volumesOf(PLUGIN).catch(() => []);
        return v.includes(oss) && v.includes(disk) ? v : undefined;
      }, 60_000, 200);
      assert.ok(listed.length >= 2);
      const running = (await docker(['inspect', '--format', '{{.State.Running}}', holder])) === 'true';
      t.diagnostic(`holder container running after the restart: ${running}`);
      if (liveRestore) {
        assert.equal(running, true, 'live-restore keeps the container running');
        const n = async () => Number((await docker(['exec', holder, 'sh', '-c', 'wc -l < /data/ticks'])).trim());
        const n1 = await n();
        await new Promise((r) => setTimeout(r, 1000));
        assert.ok((await n()) > n1, 'the disk container keeps writing through the restart');
      } else {
        assert.equal(running, false, 'without live-restore dockerd stops its containers');
      }

      // New containers work on both volumes and see the data.
      let r = await dockerResult(['run', '--rm', '--mount', mountArg(oss), TEST_IMAGE, 'cat', '/data/kept.txt'], { timeout: 120_000 });
      assert.equal(r.stdout, 'kept', r.stderr);
      r = await dockerResult(['run', '--rm', '--mount', mountArg(disk), TEST_IMAGE, 'sh', '-c', 'test -s /data/ticks && echo ok'], { timeout: 120_000 });
      assert.equal(r.stdout, 'ok', r.stderr);

      await docker(['rm', '-f', holder]);
      for (const vol of [oss, disk]) {
        await waitFor(`${vol} unmounted once no container uses it`, async () => {
          const s = await volumeStatus(vol);
          return s.mounted === false && s.refs === 0 ? s : undefined;
        }, 30_000);
        await docker(['volume', 'rm', vol]);
      }
      // Back to the daemon as the rest of the suite knows it.
      if (liveRestore) {
        await stopDaemon((await currentDaemon()).pid);
        await startDaemon(original);
      }
    });
  }
});
