// The optional ossfs build input: `OSSFS_DEB=FILE bash rootfs.build.sh` installs the package (and
// its dependencies, from the Debian mirror) into the rootfs, and the plugin then mounts OSS
// volumes with ossfs instead of s3fs. Alibaba's ossfs cannot be fetched here (no registry but
// Debian's and npm), so the package is a stand-in built by this test: an `ossfs` command that
// records its argv and then runs s3fs with it (s3fs reads ossfs's passwd format,
// bucket:akId:akSecret, and the options the plugin gives). What this proves: the build input,
// the plugin's choice of client, the argv and passwd handoff it makes for ossfs, and a container
// writing through it. What it cannot: Alibaba's binary against a real OSS endpoint.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { buildPluginWith, CONTAINER_LABEL, docker, dockerResult, TEST_IMAGE } from '../helpers/docker.js';
import { LOCAL_PROFILE, setUpPlugin, type E2eSetup } from '../helpers/e2e-setup.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { REPO_ROOT } from '../helpers/plugin-process.js';

const PLUGIN = 'ossnas-ossfs-e2e';
const BUCKET = 'ossfs-bucket';
const RUN = randomBytes(3).toString('hex');
/** Where the stand-in writes its argv: the plugin's state directory, which the test can read. */
const ARGV_LOG = 'ossfs-standin.argv';

/** A Debian package `ossfs` whose command records its arguments and runs s3fs with them. */
async function standInPackage(dir: string): Promise<string> {
  const tree = path.join(dir, 'ossfs-standin');
  await mkdir(path.join(tree, 'DEBIAN'), { recursive: true });
  await mkdir(path.join(tree, 'usr', 'bin'), { recursive: true });
  await writeFile(
    path.join(tree, 'DEBIAN', 'control'),
    [
      'Package: ossfs',
      'Version: 1.91.0-standin1',
      'Architecture: all',
      // A dependency apt must resolve from the mirror, as the real package's are.
      'Depends: s3fs, libfuse2',
      'Maintainer: ossnas tests <tests@ossnas.invalid>',
      'Description: stand-in for Alibaba ossfs (ossnas test only)',
      '',
    ].join('\n'),
  );
  const bin = path.join(tree, 'usr', 'bin', 'ossfs');
  await writeFile(bin, `#!/bin/sh\nprintf '%s\\n' "$*" >> /var/lib/ossnas/${ARGV_LOG}\nexec s3fs "$@"\n`);
  await chmod(bin, 0o755);
  const deb = path.join(dir, 'ossfs_1.91.0-standin1_all.deb');
  await execa('dpkg-deb', ['--root-owner-group', '--build', tree, deb]);
  return deb;
}

describe('ossfs in the rootfs (OSSFS_DEB, with a stand-in package)', { skip: rootSkipReason(), timeout: 900_000 }, () => {
  let setup: E2eSetup | undefined;
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    const work = await tempDir('ossnas-e2e-ossfs-');
    cleanups.push(work.cleanup);
    const bundle = await buildPluginWith('ossfs', { OSSFS_DEB: await standInPackage(work.dir) });
    setup = await setUpPlugin(PLUGIN, { buckets: [BUCKET], bundle });
  });
  after(async () => {
    await setup?.cleanup();
    for (const c of cleanups.reverse()) await c();
  });

  it('refuses a file that is not an ossfs package, before building anything', async () => {
    const work = await tempDir('ossnas-e2e-ossfs-bad-');
    cleanups.push(work.cleanup);
    const notDeb = path.join(work.dir, 'ossfs.deb');
    await writeFile(notDeb, 'not a package\n');
    const r = await execa('bash', ['rootfs.build.sh'], { cwd: REPO_ROOT, env: { OSSFS_DEB: notDeb, OUT: path.join(work.dir, 'out') }, reject: false, all: true });
    assert.notEqual(r.exitCode, 0);
    assert.match(String(r.all), /OSSFS_DEB: .* is not a Debian package named ossfs/);
  });

  it('mounts OSS volumes with ossfs: the options only ossfs has are accepted, and a container writes through it', async () => {
    const { s3, stateDir } = setup!;
    // readdir_optimize is ossfs's alone: a plugin running s3fs refuses it at Create.
    const ossfsOnly = `ossnas-ossfs-opt-${RUN}`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3!.url}`,
      '-o', `credentials=${LOCAL_PROFILE}`, '-o', 'otherOpts=-o readdir_optimize', ossfsOnly]);
    await docker(['volume', 'rm', ossfsOnly]);

    const vol = `ossnas-ossfs-${RUN}`;
    await docker(['volume', 'create', '-d', PLUGIN, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3!.url}`,
      '-o', `credentials=${LOCAL_PROFILE}`, '-o', 'path=/through-ossfs', vol]);
    const r = await dockerResult(['run', '--rm', '--label', `${CONTAINER_LABEL}=${PLUGIN}`,
      '--mount', `type=volume,src=${vol},dst=/data,volume-driver=${PLUGIN}`, TEST_IMAGE,
      'sh', '-c', 'echo via-ossfs > /data/o.txt && cat /data/o.txt'], { timeout: 120_000 });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'via-ossfs');
    assert.equal(await s3!.getObject(BUCKET, 'through-ossfs/o.txt'), 'via-ossfs\n');

    // The mount went through the ossfs command, with the bucket and path as its source and the
    // keys in a passwd file, never in argv.
    const argv = (await readFile(path.join(stateDir, ARGV_LOG), 'utf8')).trim().split('\n');
    assert.equal(argv.length, 1, `one ossfs start: ${argv.join(' | ')}`);
    assert.match(argv[0]!, new RegExp(`^${BUCKET}:/through-ossfs \\S*/${vol} -f `));
    assert.match(argv[0]!, /-o passwd_file=\/run\/ossnas\//);
    assert.doesNotMatch(argv[0]!, /S3RVER/, 'no key in argv');
    await docker(['volume', 'rm', vol]);
  });
});
