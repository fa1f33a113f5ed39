// The same program as a plain host process: a legacy plugin that dockerd discovers by its
// socket file in /run/docker/plugins. Needs root and a running dockerd.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { REPO_ROOT, startPlugin, writeProfile, type PluginProcess } from '../helpers/plugin-process.js';
import { startS3, type S3Server } from '../helpers/s3.js';

const IMAGE = 'ossnas/busybox:1';
// A fixed name: dockerd caches a legacy plugin's client for its whole life, and every unknown
// volume name is then probed against each cached driver, with ~15 s of retries for a dead one.
const DRIVER = 'ossnas-legacy-test';

async function docker(...args: string[]): Promise<string> {
  const r = await execa('docker', args, { reject: false, timeout: 120_000 });
  if (r.exitCode !== 0) throw new Error(`docker ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

describe('legacy (host process) plugin discovered by dockerd', { skip: rootSkipReason(), timeout: 300_000 }, () => {
  let s3: S3Server;
  let plugin: PluginProcess;
  let cleanup: () => Promise<void>;

  before(async () => {
    await execa('bash', [path.join(REPO_ROOT, 'scripts', 'busybox-image.sh'), IMAGE]);
    s3 = await startS3(['legacy']);
    const t = await tempDir();
    cleanup = t.cleanup;
    plugin = await startPlugin(t.dir, { OSSNAS_SOCKET: `/run/docker/plugins/${DRIVER}.sock` });
    await writeProfile(plugin.credentialsDir, 'p', 'S3RVER', 'S3RVER');
  });
  let created = false;
  after(async () => {
    if (created) await execa('docker', ['volume', 'rm', '-f', 'legacy-vol'], { reject: false });
    await plugin?.stop();
    await s3?.stop();
    await cleanup?.();
  });

  it('serves docker volume create and containers, with host paths as mountpoints', async () => {
    await docker('volume', 'create', '-d', DRIVER, '-o', 'type=oss', '-o', 'bucket=legacy', '-o', `url=${s3.url}`, '-o', 'credentials=p', 'legacy-vol');
    created = true;
    const mount = `type=volume,src=legacy-vol,dst=/data,volume-driver=${DRIVER}`;
    await docker('run', '--rm', '--mount', mount, IMAGE, 'sh', '-c', 'echo legacy > /data/l.txt');
    assert.equal(await s3.getObject('legacy', 'l.txt'), 'legacy\n');
    assert.equal(await docker('run', '--rm', '--mount', mount, IMAGE, 'cat', '/data/l.txt'), 'legacy');
    const inspect = JSON.parse(await docker('volume', 'inspect', 'legacy-vol'))[0];
    assert.equal(inspect.Mountpoint, path.join(plugin.mountRoot, 'legacy-vol'));
    assert.equal(inspect.Status.refs, 0);
    await docker('volume', 'rm', 'legacy-vol');
    created = false;
    assert.equal(await s3.getObject('legacy', 'l.txt'), 'legacy\n');
    assert.ok(!(await readFile('/proc/self/mountinfo', 'utf8')).includes(plugin.mountRoot));
  });
});
