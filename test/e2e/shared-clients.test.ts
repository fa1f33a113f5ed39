// One FUSE client per bucket in the managed plugin (OSSNAS_SHARE_CLIENTS=true), with a real
// dockerd: containers get bind mounts of one shared s3fs mount through the propagated mount, a
// path through a symlink is refused by name, and the client stops with its last volume.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CONTAINER_LABEL, docker, dockerResult, TEST_IMAGE } from '../helpers/docker.js';
import { LOCAL_PROFILE, setUpPlugin, type E2eSetup } from '../helpers/e2e-setup.js';
import { rootSkipReason } from '../helpers/env.js';
import { sleep } from '../helpers/faults.js';

const PLUGIN = 'ossnas-shared-e2e';
const BUCKET = 'shared-e2e';
const RUN = randomBytes(3).toString('hex');

/** Every s3fs on the host that serves a shared mount (of any plugin: this file's is the only one that shares). */
async function sharedClientPids(): Promise<number[]> {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const argv = (await readFile(`/proc/${e}/cmdline`, 'latin1').catch(() => '')).split('\0');
    if (path.basename(argv[0] ?? '') === 's3fs' && argv.some((w) => w.includes('/.ossnas-clients/'))) pids.push(Number(e));
  }
  return pids;
}

describe('one FUSE client per bucket in the managed plugin', { skip: rootSkipReason(), timeout: 600_000 }, () => {
  let setup: E2eSetup | undefined;
  const volumes: string[] = [];

  before(async () => {
    setup = await setUpPlugin(PLUGIN, { buckets: [BUCKET], env: { OSSNAS_SHARE_CLIENTS: 'true' } });
  });
  after(async () => {
    for (const v of volumes) await docker(['volume', 'rm', '-f', v]).catch(() => undefined);
    await setup?.cleanup();
  });

  async function create(name: string, subPath: string): Promise<string> {
    const vol = `${name}-${RUN}`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${setup!.s3!.url}`,
      '-o', `credentials=${LOCAL_PROFILE}`, '-o', `path=${subPath}`, vol]);
    volumes.push(vol);
    return vol;
  }

  it('serves two volumes of a bucket to a container from one s3fs, and stops it when the container is gone', async () => {
    const a = await create('ossnas-shared-a', '/team/a');
    const b = await create('ossnas-shared-b', '/team/b');
    const r = await dockerResult(['run', '--rm', '--label', `${CONTAINER_LABEL}=${PLUGIN}`,
      '--mount', `type=volume,src=${a},dst=/a,volume-driver=${PLUGIN}`, '--mount', `type=volume,src=${b},dst=/b,volume-driver=${PLUGIN}`,
      TEST_IMAGE, 'sh', '-c', 'echo in-a > /a/f.txt && echo in-b > /b/f.txt && ls /a /b && grep -c " /[ab] " /proc/self/mountinfo'], { timeout: 120_000 });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout.split('\n').at(-1), '2', r.stdout);
    assert.equal(await setup!.s3!.getObject(BUCKET, 'team/a/f.txt'), 'in-a\n');
    assert.equal(await setup!.s3!.getObject(BUCKET, 'team/b/f.txt'), 'in-b\n');

    // While a container holds both: one client serves them.
    const holder = `ossnas-shared-hold-${RUN}`;
    await docker(['run', '-d', '--name', holder, '--label', `${CONTAINER_LABEL}=${PLUGIN}`,
      '--mount', `type=volume,src=${a},dst=/a,volume-driver=${PLUGIN}`, '--mount', `type=volume,src=${b},dst=/b,volume-driver=${PLUGIN}`,
      TEST_IMAGE, 'sleep', '600'], { timeout: 120_000 });
    try {
      assert.equal((await sharedClientPids()).length, 1);
      assert.equal(await docker(['exec', holder, 'cat', '/a/f.txt', '/b/f.txt']), 'in-a\nin-b');
      const status = JSON.parse(await docker(['volume', 'inspect', '-f', '{{json .Status}}', a])) as Record<string, unknown>;
      assert.equal(status.client, 'shared by 2 volumes');
    } finally {
      await docker(['rm', '-f', holder]);
    }
    let left = await sharedClientPids();
    for (let i = 0; i < 50 && left.length; i++) {
      await sleep(100);
      left = await sharedClientPids();
    }
    assert.deepEqual(left, [], 'the shared client outlived the last container');
  });

  it('refuses a volume whose path passes through a symlink in the bucket, naming it', async () => {
    const whole = await create('ossnas-shared-whole', '/');
    const r = await dockerResult(['run', '--rm', '--label', `${CONTAINER_LABEL}=${PLUGIN}`,
      '--mount', `type=volume,src=${whole},dst=/w,volume-driver=${PLUGIN}`, TEST_IMAGE, 'ln', '-s', '/etc', '/w/escape'], { timeout: 120_000 });
    assert.equal(r.exitCode, 0, r.stderr);
    const through = await create('ossnas-shared-escape', '/escape');
    const refused = await dockerResult(['run', '--rm', '--label', `${CONTAINER_LABEL}=${PLUGIN}`,
      '--mount', `type=volume,src=${through},dst=/x,volume-driver=${PLUGIN}`, TEST_IMAGE, 'ls', '/x'], { timeout: 120_000 });
    assert.notEqual(refused.exitCode, 0);
    assert.match(refused.stderr, /path \/escape of bucket shared-e2e passes through a symlink/);
  });
});
