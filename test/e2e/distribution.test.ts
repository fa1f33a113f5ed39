// Distribution through a registry, as users get the plugin: `docker plugin push` to a real
// registry (Debian's docker-registry, distribution 2.8, on 127.0.0.1 with plain HTTP, which
// dockerd trusts for loopback), `docker plugin install` with settings given at install time,
// and the installed plugin serving a volume. Needs root and a running dockerd.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa, type ResultPromise } from 'execa';
import {
  buildPlugin,
  CONTAINER_LABEL,
  docker,
  dockerResult,
  ensureBusyboxImage,
  pluginInfo,
  pluginPid,
  removePlugin,
  requireDocker,
  TEST_IMAGE,
  timings,
  volumesOf,
  waitFor,
} from '../helpers/docker.js';
import { freePort, rootSkipReason, tempDir } from '../helpers/env.js';
import { REPO_ROOT } from '../helpers/plugin-process.js';
import { startS3, type S3Server } from '../helpers/s3.js';

const REGISTRY_BIN = '/usr/bin/docker-registry';
const ALIAS = 'ossnas-reg';
const BUCKET = 'reg-bucket';
const PROFILE = 'reg-profile';
const RELEASED = 'ossnas-released';

interface Registry {
  host: string;
  output(): string;
  stop(): Promise<void>;
}

async function startRegistry(dir: string): Promise<Registry> {
  if (!existsSync(REGISTRY_BIN)) throw new Error(`${REGISTRY_BIN} is missing: apt-get install docker-registry`);
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const config = path.join(dir, 'config.yml');
  // No auth (the packaged config wants htpasswd), storage in the test's temp dir.
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${path.join(dir, 'data')}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: ${host}`,
      '',
    ].join('\n'),
  );
  let out = '';
  const child: ResultPromise = execa(REGISTRY_BIN, ['serve', config], {
    reject: false,
    buffer: false,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  });
  child.stdout?.on('data', (c) => (out = (out + String(c)).slice(-8000)));
  child.stderr?.on('data', (c) => (out = (out + String(c)).slice(-8000)));
  let exited = false;
  const done = child.then(() => void (exited = true));
  const stop = async () => {
    if (!exited) child.kill('SIGTERM');
    const ok = await Promise.race([done.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
    if (!ok) {
      child.kill('SIGKILL');
      await done;
    }
  };
  try {
    await waitFor(
      `the registry to answer http://${host}/v2/`,
      async () => {
        if (exited) throw new Error(`docker-registry exited: ${out}`);
        const res = await fetch(`http://${host}/v2/`).catch(() => undefined);
        return res?.ok;
      },
      20_000,
      100,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { host, output: () => out, stop };
}

describe('ossnas distributed through a registry', { skip: rootSkipReason(), timeout: 600_000 }, () => {
  let registry: Registry | undefined;
  let ref = '';
  let s3: S3Server;
  let bundle: string;
  let stateDir: string;
  let credentialsDir: string;
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    await requireDocker();
    await ensureBusyboxImage();
    // Left by an interrupted earlier run.
    const stale = await removePlugin(ALIAS);
    if (stale.length) throw new Error(`cannot remove plugin ${ALIAS} left by an earlier run: ${stale.join('; ')}`);
    bundle = await buildPlugin();

    const reg = await tempDir('ossnas-e2e-registry-');
    cleanups.push(reg.cleanup);
    registry = await startRegistry(reg.dir);
    cleanups.push(() => registry!.stop());
    ref = `${registry.host}/ossnas/ossnas:e2e`;

    s3 = await startS3([BUCKET]);
    cleanups.push(() => s3.stop());
    const state = await tempDir('ossnas-e2e-reg-state-');
    const creds = await tempDir('ossnas-e2e-reg-creds-');
    cleanups.push(state.cleanup, creds.cleanup);
    stateDir = state.dir;
    credentialsDir = creds.dir;
    await writeFile(path.join(credentialsDir, PROFILE), 'akId=S3RVER\nakSecret=S3RVER\n', { mode: 0o600 });
  });

  after(async () => {
    const errors: unknown[] = [];
    // Plugins first (the installed one holds mounts of the S3 server), then the rest.
    for (const name of [ALIAS, RELEASED, ref].filter(Boolean)) {
      const problems = await removePlugin(name).catch((e: unknown) => [String(e)]);
      if (problems.length) errors.push(new Error(`removing plugin ${name}: ${problems.join('; ')}`));
    }
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => errors.push(e));
    if (errors.length) throw new AggregateError(errors, 'distribution e2e cleanup failed');
  });

  it('pushes the plugin to the registry and removes the local copy', async (t) => {
    let t0 = performance.now();
    await docker(['plugin', 'create', ref, bundle], { timeout: 300_000 });
    timings['plugin create (registry ref)'] = performance.now() - t0;

    t0 = performance.now();
    await docker(['plugin', 'push', ref], { timeout: 300_000 });
    timings['plugin push'] = performance.now() - t0;

    const tags = (await (await fetch(`http://${registry!.host}/v2/ossnas/ossnas/tags/list`)).json()) as { tags?: string[] };
    assert.deepEqual(tags.tags, ['e2e']);

    await docker(['plugin', 'rm', ref]);
    assert.notEqual((await dockerResult(['plugin', 'inspect', ref])).exitCode, 0, 'the local copy must be gone');
    if (timings['plugin build'] !== undefined) t.diagnostic(`plugin build: ${(timings['plugin build'] / 1000).toFixed(1)} s`);
    t.diagnostic(`plugin create: ${(timings['plugin create (registry ref)']! / 1000).toFixed(1)} s`);
    t.diagnostic(`plugin push: ${(timings['plugin push']! / 1000).toFixed(1)} s`);
  });

  it('installs it from the registry with settings given at install time', async (t) => {
    const t0 = performance.now();
    await docker(
      ['plugin', 'install', '--alias', ALIAS, '--grant-all-permissions', ref,
        'LOG_LEVEL=debug', `state.source=${stateDir}`, `credentials.source=${credentialsDir}`],
      { timeout: 300_000 },
    );
    timings['plugin install'] = performance.now() - t0;
    t.diagnostic(`plugin install (pull + enable): ${(timings['plugin install'] / 1000).toFixed(1)} s`);

    const [p] = JSON.parse(await docker(['plugin', 'inspect', ALIAS])) as Array<{
      Name: string;
      Enabled: boolean;
      PluginReference: string;
      Settings: { Env: string[]; Mounts: Array<{ Name: string; Source: string }> };
    }>;
    assert.ok(p, 'docker plugin inspect returned nothing');
    assert.equal(p.Enabled, true);
    assert.match(p.Name, new RegExp(`^${ALIAS}(:latest)?$`));
    assert.equal(p.PluginReference, ref);
    assert.ok(p.Settings.Env.includes('LOG_LEVEL=debug'), `Settings.Env: ${p.Settings.Env.join(' ')}`);
    assert.equal(p.Settings.Mounts.find((m) => m.Name === 'state')?.Source, stateDir);
    assert.equal(p.Settings.Mounts.find((m) => m.Name === 'credentials')?.Source, credentialsDir);
  });

  it('the installed plugin serves a volume', async () => {
    const vol = `ossnas-reg-${process.pid}`;
    await docker(['volume', 'create', '-d', ALIAS, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`,
      '-o', `credentials=${PROFILE}`, vol]);
    const r = await dockerResult(['run', '--rm', '--label', `${CONTAINER_LABEL}=${ALIAS}`,
      '--mount', `type=volume,src=${vol},dst=/data,volume-driver=${ALIAS}`, TEST_IMAGE,
      'sh', '-c', 'echo from-registry > /data/reg.txt && cat /data/reg.txt'], { timeout: 120_000 });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'from-registry');
    assert.equal(await s3.getObject(BUCKET, 'reg.txt'), 'from-registry\n');
    await waitFor('the volume to be unmounted after the container', async () => {
      const [v] = JSON.parse(await docker(['volume', 'inspect', vol])) as Array<{ Status?: Record<string, unknown> }>;
      return v?.Status?.mounted === false && v.Status.refs === 0;
    });
    await docker(['volume', 'rm', vol]);
    assert.equal(await s3.getObject(BUCKET, 'reg.txt'), 'from-registry\n');
  });

  it('docker plugin upgrade to a rebuilt plugin keeps every volume, its options and its data', async (t) => {
    // "Rebuilt": the same rootfs (hard links, no copy) plus a file, under a config that differs,
    // so the registry holds a second, different plugin and the upgrade really replaces it.
    const rebuilt = await tempDir('ossnas-e2e-rebuilt-');
    cleanups.push(rebuilt.cleanup);
    await execa('cp', ['-al', path.join(bundle, 'rootfs'), path.join(rebuilt.dir, 'rootfs')]);
    // A new file (directories are real copies, so the original bundle is untouched): dockerd
    // refuses to create a plugin whose rootfs layer it already holds ("content ... already exists").
    await writeFile(path.join(rebuilt.dir, 'rootfs', 'app', 'REBUILT'), `${new Date().toISOString()}\n`);
    const config = JSON.parse(await readFile(path.join(bundle, 'config.json'), 'utf8')) as { description: string };
    config.description += ' (rebuilt for the upgrade test)';
    await writeFile(path.join(rebuilt.dir, 'config.json'), JSON.stringify(config, null, 2));
    // Pushed under the same reference, as a release is: `docker plugin upgrade NAME` then pulls
    // it again. (Upgrading to another reference makes the CLI ask "Plugin images do not match,
    // are you sure?", and without a terminal it answers no and exits 0 having done nothing.)
    await docker(['plugin', 'create', ref, rebuilt.dir], { timeout: 300_000 });
    await docker(['plugin', 'push', ref], { timeout: 300_000 });
    await docker(['plugin', 'rm', ref]);

    const oss = `ossnas-upg-oss-${process.pid}`;
    const rclone = `ossnas-upg-rclone-${process.pid}`;
    const disk = `ossnas-upg-disk-${process.pid}`;
    const volumes = [oss, rclone, disk];
    // Removed while the plugin still exists, even when the test fails: dockerd keeps a removed
    // plugin's volumes in its database and spends 15 s on each at every later daemon start.
    t.after(async () => {
      for (const vol of volumes) await dockerResult(['volume', 'rm', '-f', vol]);
    });
    await docker(['volume', 'create', '-d', ALIAS, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`,
      '-o', `credentials=${PROFILE}`, '-o', 'path=/upgrade', oss]);
    await docker(['volume', 'create', '-d', ALIAS, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`,
      '-o', `credentials=${PROFILE}`, '-o', 'path=/upgrade-rclone', '-o', 'client=rclone', rclone]);
    await docker(['volume', 'create', '-d', ALIAS, '-o', 'type=disk', '-o', 'size=32M', disk]);
    const run = (vol: string, cmd: string) =>
      dockerResult(['run', '--rm', '--label', `${CONTAINER_LABEL}=${ALIAS}`, '--mount', `type=volume,src=${vol},dst=/data,volume-driver=${ALIAS}`,
        TEST_IMAGE, 'sh', '-c', cmd], { timeout: 120_000 });
    for (const vol of volumes) assert.equal((await run(vol, `echo before-upgrade > /data/u.txt`)).exitCode, 0);
    const optionsBefore = await docker(['volume', 'inspect', '--format', '{{json .Options}}', ...volumes]);
    // A container that runs across the upgrade, on each volume: its mount must keep serving.
    const holders = volumes.map((vol) => `${vol}-holder`);
    t.after(async () => {
      for (const h of holders) await dockerResult(['rm', '-f', h]);
    });
    for (const [i, vol] of volumes.entries()) {
      await docker(['run', '-d', '--name', holders[i]!, '--label', `${CONTAINER_LABEL}=${ALIAS}`,
        '--mount', `type=volume,src=${vol},dst=/data,volume-driver=${ALIAS}`, TEST_IMAGE, 'sh', '-c', 'sleep 600']);
    }

    const t0 = performance.now();
    await docker(['plugin', 'disable', '-f', ALIAS]);
    await docker(['plugin', 'upgrade', '--grant-all-permissions', ALIAS], { timeout: 300_000 });
    // Docker starts an upgraded plugin with the new config.json's mount sources, although
    // inspect still shows the ones set (docs/installing.md, Upgrading): set them again, as operators must.
    await docker(['plugin', 'set', ALIAS, `state.source=${stateDir}`, `credentials.source=${credentialsDir}`]);
    await docker(['plugin', 'enable', '--timeout', '120', ALIAS]);
    t.diagnostic(`disable -f + upgrade + enable: ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const { id } = await pluginInfo(ALIAS);
    const root = await docker(['info', '--format', '{{.DockerRootDir}}']);
    assert.ok(existsSync(path.join(root, 'plugins', id, 'rootfs', 'app', 'REBUILT')), 'the plugin has the rebuilt rootfs');
    assert.ok(existsSync(`/proc/${await pluginPid(id)}/root/app/REBUILT`), 'the plugin runs the rebuilt rootfs');
    const listed = await volumesOf(ALIAS);
    assert.ok(volumes.every((v) => listed.includes(v)), `volumes after the upgrade: ${listed.join(' ')}`);
    assert.equal(await docker(['volume', 'inspect', '--format', '{{json .Options}}', ...volumes]), optionsBefore);
    for (const vol of volumes) {
      const r = await run(vol, 'cat /data/u.txt');
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.stdout, 'before-upgrade', `${vol} kept its data`);
    }
    // The containers that ran across the upgrade still read, write and create files; on an rclone
    // volume they read, and a write fails (docs/operations.md, Known limitations): rclone opened
    // its cache by an absolute path of the old plugin's rootfs, which the upgrade deleted.
    const across = 'cat /data/u.txt && echo across-upgrade > /data/across.txt && cat /data/across.txt';
    for (const [i, vol] of volumes.entries()) {
      const r = await dockerResult(['exec', holders[i]!, 'sh', '-c', across]);
      if (vol === rclone) {
        assert.equal(r.stdout, 'before-upgrade', `${vol}: a container running across the upgrade reads: ${r.stderr}`);
        assert.match(r.stderr, /can't create \/data\/across\.txt/, `${vol}: if writes now work across an upgrade, update the docs`);
        continue;
      }
      assert.equal(r.exitCode, 0, `${vol}: a container running across the upgrade: ${r.stderr}`);
      assert.equal(r.stdout, 'before-upgrade\nacross-upgrade');
    }
    await docker(['rm', '-f', ...holders]);
    assert.equal(await s3.getObject(BUCKET, 'upgrade/across.txt'), 'across-upgrade\n', 'the write made across the upgrade reached the bucket');
    // Once its containers are gone, the rclone volume is mounted again by the new plugin, and writes.
    const r = await run(rclone, across);
    assert.equal(r.exitCode, 0, `${rclone} after the upgrade: ${r.stderr}`);
    assert.equal(await s3.getObject(BUCKET, 'upgrade-rclone/across.txt'), 'across-upgrade\n');
    for (const vol of volumes) await docker(['volume', 'rm', vol]);
  });

  it('scripts/release.sh pushes VERSION, <arch>-VERSION and latest as one plugin, refuses what it must, and the release installs', async (t) => {
    // A clean clone of this commit: the script refuses a dirty tree, and a developer's tree may be.
    const clone = await tempDir('ossnas-e2e-release-');
    cleanups.push(clone.cleanup);
    const src = path.join(clone.dir, 'src');
    await execa('git', ['clone', '-q', REPO_ROOT, src]);
    const version = (JSON.parse(await readFile(path.join(src, 'package.json'), 'utf8')) as { version: string }).version;
    const arch = ({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch];
    assert.ok(arch, `no release arch for ${process.arch}`);
    // The CI-built rootfs (hard links) plus a file: dockerd refuses to create a plugin from a
    // rootfs layer it already holds, and the tests above hold this bundle's. A real release
    // builds a fresh bundle (rootfs.build.sh), which is tested everywhere else.
    const bundleCopy = path.join(clone.dir, 'bundle');
    await execa('mkdir', [bundleCopy]);
    await execa('cp', ['-al', path.join(bundle, 'rootfs'), path.join(bundleCopy, 'rootfs')]);
    await execa('cp', [path.join(bundle, 'config.json'), bundleCopy]);
    await writeFile(path.join(bundleCopy, 'rootfs', 'app', 'RELEASE'), `${version}\n`);
    const repo = `${registry!.host}/ossnas/release`;
    const release = (args: string[]) =>
      execa('bash', [path.join(src, 'scripts/release.sh'), ...args], { cwd: clone.dir, env: { BUNDLE: bundleCopy }, reject: false, all: true, timeout: 600_000 });
    const tags = async () => {
      const res = await fetch(`http://${registry!.host}/v2/ossnas/release/tags/list`);
      return res.status === 404 ? [] : (((await res.json()) as { tags?: string[] }).tags ?? []).sort();
    };

    // Refusals, each before anything is pushed, each naming what was wrong.
    for (const [args, message, setup] of [
      [['1.0', repo], /must be semantic.*'1\.0'/, undefined],
      [['99.0.0', repo], /package\.json says version .*not 99\.0\.0/, undefined],
      [[version, 'no-registry'], /REPO must be REGISTRY\/PATH/, undefined],
      [[version, repo], /uncommitted changes/, () => writeFile(path.join(src, 'stray.txt'), 'x\n')],
    ] as const) {
      await setup?.();
      const r = await release([...args]);
      assert.notEqual(r.exitCode, 0, `release ${args.join(' ')} must fail`);
      assert.match(String(r.all), message);
    }
    assert.deepEqual(await tags(), [], 'a refused release pushed nothing');
    await execa('rm', [path.join(src, 'stray.txt')]);

    const t0 = performance.now();
    const r = await release([version, repo]);
    assert.equal(r.exitCode, 0, String(r.all));
    t.diagnostic(`release.sh with a built bundle: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // It prints each reference with its digest: three lines, one plugin.
    const printed = String(r.stdout).trim().split('\n').map((l) => l.split(' '));
    assert.deepEqual(printed.map(([reference]) => reference), [`${repo}:${version}`, `${repo}:${arch}-${version}`, `${repo}:latest`]);
    const digests = new Set(printed.map(([, digest]) => digest));
    assert.equal(digests.size, 1, `one digest for all three tags: ${String(r.stdout)}`);
    const [digest] = digests;
    assert.match(String(digest), /^sha256:[0-9a-f]{64}$/);
    assert.deepEqual(await tags(), [version, `${arch}-${version}`, 'latest'].sort());
    for (const tag of [version, `${arch}-${version}`, 'latest']) {
      const head = await fetch(`http://${registry!.host}/v2/ossnas/release/manifests/${tag}`, {
        method: 'HEAD',
        headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' },
      });
      assert.equal(head.headers.get('docker-content-digest'), digest, `the registry's digest of ${tag}`);
    }
    assert.equal((await dockerResult(['plugin', 'inspect', `${repo}:${version}`])).exitCode, 1, 'the script leaves no local copy behind');

    // The same version again is refused: a release is never pushed over.
    const again = await release([version, repo]);
    assert.notEqual(again.exitCode, 0);
    assert.match(String(again.all), new RegExp(`${version.replace(/\./g, '\\.')} exists already`));

    // An operator's install of the release, by its version tag, serves a volume.
    // A state directory of its own: two plugins never share one.
    const releasedState = await tempDir('ossnas-e2e-released-state-');
    cleanups.push(releasedState.cleanup);
    await docker(['plugin', 'install', '--alias', RELEASED, '--grant-all-permissions', `${repo}:${version}`,
      `state.source=${releasedState.dir}`, `credentials.source=${credentialsDir}`], { timeout: 300_000 });
    const vol = `ossnas-rel-${process.pid}`;
    t.after(() => dockerResult(['volume', 'rm', '-f', vol]));
    await docker(['volume', 'create', '-d', RELEASED, '-o', 'type=oss', '-o', `bucket=${BUCKET}`, '-o', `url=${s3.url}`,
      '-o', `credentials=${PROFILE}`, '-o', 'path=/release', vol]);
    const run = await dockerResult(['run', '--rm', '--label', `${CONTAINER_LABEL}=${RELEASED}`,
      '--mount', `type=volume,src=${vol},dst=/data,volume-driver=${RELEASED}`, TEST_IMAGE,
      'sh', '-c', 'echo released > /data/r.txt && cat /data/r.txt'], { timeout: 120_000 });
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(await s3.getObject(BUCKET, 'release/r.txt'), 'released\n');
    const { id } = await pluginInfo(RELEASED);
    assert.equal((await readFile(`/proc/${await pluginPid(id)}/root/app/RELEASE`, 'utf8')).trim(), version, 'the plugin runs the released rootfs');
    await docker(['volume', 'rm', vol]);
  });
});
