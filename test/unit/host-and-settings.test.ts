import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { removeEmptyMountpoint, writePrivateFile } from '../../src/host/files.js';
import { probeMount, usageOf } from '../../src/host/probe.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';
import { REDACTED, scrub } from '../../src/redact.js';
import { DEFAULTS, loadSettings } from '../../src/settings.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { parseTap } from '../helpers/tap.js';

describe('mount table', () => {
  it('parses mountinfo lines, optional fields and octal escapes', () => {
    const text =
      '36 35 98:0 /mnt1 /mnt/volumes/my\\040vol rw,noatime master:1 - fuse.s3fs s3fs rw,user_id=0\n' +
      '37 35 0:40 / /var/lib/x rw - tmpfs tmpfs rw\n';
    assert.deepEqual(parseMountinfo(text), [
      { device: '98:0', root: '/mnt1', mountPoint: '/mnt/volumes/my vol', options: 'rw,noatime', fsType: 'fuse.s3fs', source: 's3fs', superOptions: 'rw,user_id=0' },
      { device: '0:40', root: '/', mountPoint: '/var/lib/x', options: 'rw', fsType: 'tmpfs', source: 'tmpfs', superOptions: 'rw' },
    ]);
  });
});

describe('removing a mountpoint directory', () => {
  it('removes only an empty directory that nothing is mounted on', { skip: rootSkipReason() }, async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const mp = path.join(dir, 'vol');
      await mkdir(mp);
      await execa('mount', ['-t', 'tmpfs', 'empty', mp]); // an empty bucket looks like this
      try {
        assert.equal(await removeEmptyMountpoint(mp), 'mounted');
      } finally {
        await execa('umount', [mp]);
      }
      await writeFile(path.join(mp, 'data'), 'x');
      assert.equal(await removeEmptyMountpoint(mp), 'not-empty');
      assert.ok((await stat(path.join(mp, 'data'))).isFile());
      await unlink(path.join(mp, 'data'));
      assert.equal(await removeEmptyMountpoint(mp), 'removed');
      assert.equal(await removeEmptyMountpoint(mp), 'absent');
    } finally {
      await cleanup();
    }
  });
});

describe('a private file for a FUSE client', () => {
  it('is 0600 with the whole content, replacing an older file or symlink rather than writing through it', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const file = path.join(dir, 'passwd');
      await writeFile(file, 'old:old:old\n');
      await chmod(file, 0o644);
      await writePrivateFile(file, 'AKID:secret\n');
      assert.equal(await readFile(file, 'utf8'), 'AKID:secret\n');
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      const elsewhere = path.join(dir, 'elsewhere');
      await writeFile(elsewhere, 'untouched');
      await unlink(file);
      await symlink(elsewhere, file);
      await writePrivateFile(file, 'AKID:secret2\n');
      assert.equal(await readFile(elsewhere, 'utf8'), 'untouched');
      assert.equal(await readFile(file, 'utf8'), 'AKID:secret2\n');
      assert.equal((await stat(file)).mode & 0o777, 0o600);
    } finally {
      await cleanup();
    }
  });
});

describe('statfs of a mount', () => {
  it('gives size and use as df does, and why a path does not answer', { skip: rootSkipReason() }, async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await execa('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'sized', dir]);
      try {
        await writeFile(path.join(dir, 'one-mib'), Buffer.alloc(2 ** 20, 1));
        const u = await usageOf(dir);
        assert.equal(u?.totalBytes, 4 * 2 ** 20);
        assert.ok(u!.usedBytes >= 2 ** 20 && u!.usedBytes < 2 * 2 ** 20, `usedBytes ${u?.usedBytes}`);
        assert.equal(u?.usedPercent, Math.ceil((u!.usedBytes / u!.totalBytes) * 100), 'tmpfs reserves nothing for root');
        assert.deepEqual(await probeMount(dir), { state: 'serving' });
      } finally {
        await execa('umount', [dir]);
      }
      assert.equal(await usageOf(path.join(dir, 'missing')), undefined);
      // An error that does not prove a FUSE client gone: not a reason to replace a mount.
      const missing = await probeMount(path.join(dir, 'missing'));
      assert.equal(missing.state, 'unresponsive');
      assert.match(missing.state === 'unresponsive' ? missing.reason : '', /missing: ENOENT$/);
    } finally {
      await cleanup();
    }
  });
});

describe('scrubbing secrets from text', () => {
  it('replaces every occurrence, longest first, and ignores trivially short values', () => {
    assert.equal(scrub('key abcd1234 and abcd1234xyz, ab', ['abcd1234', 'abcd1234xyz', 'ab']), `key ${REDACTED} and ${REDACTED}, ab`);
  });
});

describe('settings', () => {
  it('default as the settings table of docs/settings.md says', () => {
    const s = loadSettings({});
    assert.equal(s.socket, DEFAULTS.OSSNAS_SOCKET);
    assert.equal(s.stateDir, '/var/lib/ossnas');
    assert.equal(s.mountRoot, '/mnt/volumes');
    assert.equal(s.credentialsDir, '/etc/ossnas/credentials');
    assert.equal(s.hostPid, 'auto');
    assert.equal(s.logLevel, 'info');
    assert.equal(s.mountTimeoutMs, 20_000);
    assert.equal(s.fuseDiskFreeMb, 512);
    assert.equal(s.shareClients, false);
    assert.deepEqual(s.ossDefaults, {});
    assert.deepEqual(loadSettings({ OSSNAS_DEFAULT_URL: ' http://s3:9000 ', OSSNAS_DEFAULT_CREDENTIALS: 'team' }).ossDefaults, {
      url: 'http://s3:9000',
      credentials: 'team',
    });
  });
  it('match config.json: every setting there has the same default here', async () => {
    const config = JSON.parse(await readFile(new URL('../../config.json', import.meta.url), 'utf8')) as { env: Array<{ name: string; value: string }> };
    const inConfig = Object.fromEntries(config.env.filter((e) => e.name in DEFAULTS).map((e) => [e.name, e.value]));
    assert.deepEqual(inConfig, { ...DEFAULTS });
  });
  it('treat an empty value as the default and refuse bad ones by name', () => {
    assert.equal(loadSettings({ OSSNAS_MOUNT_ROOT: '' }).mountRoot, '/mnt/volumes');
    assert.equal(loadSettings({ OSSNAS_HOST_PID: '17' }).hostPid, 17);
    assert.throws(() => loadSettings({ OSSNAS_STATE_DIR: 'relative' }), /OSSNAS_STATE_DIR must be an absolute path/);
    assert.throws(() => loadSettings({ OSSNAS_HOST_PID: 'init' }), /OSSNAS_HOST_PID must be 'auto' or a process id/);
    assert.throws(() => loadSettings({ LOG_LEVEL: 'loud' }), /LOG_LEVEL must be one of/);
    assert.throws(() => loadSettings({ OSSNAS_MOUNT_TIMEOUT: '0' }), /OSSNAS_MOUNT_TIMEOUT must be seconds/);
    assert.throws(() => loadSettings({ SCOPE: 'cluster' }), /SCOPE must be local or global, got 'cluster'/);
    assert.throws(() => loadSettings({ OSSNAS_FUSE_DISKFREE: '1G' }), /OSSNAS_FUSE_DISKFREE must be megabytes \(a whole number, 0 for none\), got '1G'/);
    assert.equal(loadSettings({ OSSNAS_FUSE_DISKFREE: '0' }).fuseDiskFreeMb, 0);
    assert.equal(loadSettings({ OSSNAS_SHARE_CLIENTS: 'TRUE' }).shareClients, true);
    assert.throws(() => loadSettings({ OSSNAS_SHARE_CLIENTS: 'yes' }), /OSSNAS_SHARE_CLIENTS must be true or false, got 'yes'/);
  });
  it("UV_THREADPOOL_SIZE: 1 to 1024, or unset; an empty or malformed value is refused (libuv would run 1 thread)", () => {
    for (const ok of [undefined, '64', ' 4', '1', '1024']) assert.doesNotThrow(() => loadSettings({ UV_THREADPOOL_SIZE: ok }), String(ok));
    assert.throws(() => loadSettings({ UV_THREADPOOL_SIZE: '' }), /^Error: UV_THREADPOOL_SIZE is empty, which Node's thread pool reads as 1 thread .*; set it to a number of threads from 1 to 1024/);
    assert.throws(() => loadSettings({ UV_THREADPOOL_SIZE: '  ' }), /UV_THREADPOOL_SIZE is empty/);
    for (const bad of ['0', '64x', 'sixty-four', '-1', '1025', '5000', '1e2', '0x40']) {
      assert.throws(() => loadSettings({ UV_THREADPOOL_SIZE: bad }), new RegExp(`^Error: UV_THREADPOOL_SIZE must be a number of threads from 1 to 1024 \\(the plugin's default is 64\\), got '${bad}'$`), bad);
    }
  });
  it('scope: local unless set to global', () => {
    assert.equal(loadSettings({}).scope, 'local');
    assert.equal(loadSettings({ SCOPE: 'Global' }).scope, 'global');
  });
  it('metrics: off unless an address is set; host:port, [v6]:port or :port', () => {
    assert.equal(loadSettings({}).metricsAddress, undefined);
    assert.deepEqual(loadSettings({ OSSNAS_METRICS_ADDRESS: '127.0.0.1:9464' }).metricsAddress, { host: '127.0.0.1', port: 9464 });
    assert.deepEqual(loadSettings({ OSSNAS_METRICS_ADDRESS: '[::1]:80' }).metricsAddress, { host: '::1', port: 80 });
    assert.deepEqual(loadSettings({ OSSNAS_METRICS_ADDRESS: ':9464' }).metricsAddress, { host: '', port: 9464 });
    assert.deepEqual(loadSettings({ OSSNAS_METRICS_ADDRESS: 'node-1:9464' }).metricsAddress, { host: 'node-1', port: 9464 });
    for (const bad of ['9464', '127.0.0.1', '127.0.0.1:0', 'h:65536', '::1:9464', 'a b:1', 'h:port']) {
      assert.throws(() => loadSettings({ OSSNAS_METRICS_ADDRESS: bad }), new RegExp(`OSSNAS_METRICS_ADDRESS must be host:port .*got '${bad.replace(/[[\]]/g, '\\$&')}'`), bad);
    }
  });
});

describe('TAP from a run elsewhere', () => {
  it('gives the leaf tests with their outcome and details, not the suites', () => {
    const tap = [
      '# Subtest: suite',
      '    # Subtest: works',
      '    ok 1 - works',
      '      ---',
      '      duration_ms: 3',
      '      ...',
      '    # took 12 ms',
      '    # Subtest: breaks',
      '    not ok 2 - breaks',
      '      ---',
      "      error: 'expected 1, got 2'",
      '      ...',
      '    # Subtest: later',
      '    ok 3 - later # SKIP not here',
      '    1..3',
      'not ok 1 - suite',
      '  ---',
      "  type: 'suite'",
      '  ...',
    ].join('\n');
    const r = parseTap(tap);
    assert.deepEqual(r.map((x) => [x.name, x.ok, x.skipped]), [['works', true, false], ['breaks', false, false], ['later', true, true]]);
    assert.match(r[1]!.detail, /expected 1, got 2/);
    assert.deepEqual(r.map((x) => x.diagnostics), [['took 12 ms'], [], []]);
  });
});
