// client=rclone without a mount: the provider, the config file, the argv, and the cache's
// record of uploads (on real files in a temporary directory).
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { OptionsError } from '../../src/backends/options.js';
import { fromSpec, toSpec } from '../../src/backends/oss/options.js';
import { pendingUploads, rcloneConfig, rcloneMountArgs, rcloneProvider, retireCache, waitForUploads } from '../../src/backends/oss/rclone-client.js';
import { checkOssDefaults } from '../../src/backends/oss/index.js';
import { SettingsError } from '../../src/settings.js';

const base = { type: 'oss', bucket: 'photos', url: 'https://oss-cn-hangzhou.aliyuncs.com', credentials: 'prod' };

describe('client=rclone options', () => {
  it('is stored only for rclone: a volume with no client is an s3fs one', () => {
    assert.equal(toSpec(base).client, 's3fs');
    assert.equal(fromSpec(toSpec({ ...base, client: 's3fs' })).client, undefined);
    assert.equal(fromSpec(toSpec({ ...base, client: 'RClone' })).client, 'rclone');
  });

  it('refuses an unknown client, naming the accepted ones', () => {
    assert.throws(() => toSpec({ ...base, client: 'goofys' }), (e: unknown) => e instanceof OptionsError && /invalid option 'client': expected one of: s3fs, rclone/.test(e.message));
  });

  it("checks otherOpts against the volume's own client", () => {
    assert.equal(toSpec({ ...base, client: 'rclone', otherOpts: 'dir_cache_time=30s,vfs_cache_max_size=2G' }).otherOpts, '-o dir_cache_time=30s -o vfs_cache_max_size=2G');
    assert.throws(() => toSpec({ ...base, client: 'rclone', otherOpts: '-o stat_cache_expire=30' }), /'stat_cache_expire' is not allowed for rclone; allowed: vfs_cache_mode/);
    assert.throws(() => toSpec({ ...base, otherOpts: '-o dir_cache_time=30s' }), /'dir_cache_time' is not allowed for s3fs/);
    assert.throws(() => toSpec({ ...base, client: 'rclone', otherOpts: '-o cache_dir=/etc' }), /'cache_dir' is set by ossnas/);
    assert.throws(() => toSpec({ ...base, client: 'rclone', otherOpts: '-o s3_no_check_bucket' }), /'s3_no_check_bucket' is set by ossnas \(always on: a mount never creates a bucket\)/);
    assert.throws(() => toSpec({ ...base, client: 'rclone', otherOpts: '-o dir_cache_time=soon' }), /'dir_cache_time' needs a value matching/);
    for (const zero of ['0s', '0ms', '0.0s', '0m0s']) {
      assert.throws(() => toSpec({ ...base, client: 'rclone', otherOpts: `-o vfs_write_back=${zero}` }), new RegExp(`'vfs_write_back=${zero}' must be more than 0: rclone 1.60 then loses a file renamed`));
    }
    assert.equal(toSpec({ ...base, client: 'rclone', otherOpts: '-o vfs_write_back=500ms' }).otherOpts, '-o vfs_write_back=500ms');
  });

  it('OSSNAS_DEFAULT_CLIENT is checked and normalised', () => {
    assert.equal(checkOssDefaults({ client: ' RCLONE ' }).client, 'rclone');
    assert.equal(checkOssDefaults({}).client, undefined);
    assert.throws(() => checkOssDefaults({ client: 'ossfs2' }), (e: unknown) => e instanceof SettingsError && /^OSSNAS_DEFAULT_CLIENT must be one of s3fs, rclone/.test(e.message));
  });
});

describe('rclone mount', () => {
  it('speaks Alibaba to OSS endpoints and Other to any other S3 server', () => {
    assert.equal(rcloneProvider('https://oss-cn-hangzhou.aliyuncs.com'), 'Alibaba');
    assert.equal(rcloneProvider('https://oss-cn-hangzhou-internal.aliyuncs.com'), 'Alibaba');
    assert.equal(rcloneProvider('http://127.0.0.1:9000'), 'Other');
    assert.equal(rcloneProvider('https://aliyuncs.com.example.org'), 'Other');
  });

  it('keeps the keys in the config file, never in argv, and never lets a mount create a bucket', () => {
    const spec = toSpec({ ...base, client: 'rclone', path: '/team/a', uid: '1000', umask: '027', readonly: 'true', otherOpts: '-o dir_cache_time=1m -o no_modtime' });
    const creds = { akId: 'AKIDEXAMPLE', akSecret: 'secret-value-123', securityToken: 'token-value-456' };
    const config = rcloneConfig(spec, creds);
    assert.match(config, /^\[ossnas\]\ntype = s3\nprovider = Alibaba\nendpoint = https:\/\/oss-cn-hangzhou\.aliyuncs\.com\nenv_auth = false\nno_check_bucket = true\n/);
    assert.match(config, /access_key_id = AKIDEXAMPLE\nsecret_access_key = secret-value-123\nsession_token = token-value-456\n$/);
    assert.doesNotMatch(rcloneConfig(spec, undefined), /access_key_id|secret/);

    const argv = rcloneMountArgs(spec, '/mnt/volumes/v', '/run/ossnas/oss/v/rclone.conf', 'rclone/v');
    assert.deepEqual(argv.slice(0, 3), ['mount', 'ossnas:photos/team/a', '/mnt/volumes/v']);
    for (const secret of Object.values(creds)) assert.ok(!argv.join(' ').includes(secret));
    assert.ok(argv.includes('--read-only') && argv.includes('--uid=1000') && argv.includes('--umask=0027'));
    // The volume's own flags come after the defaults, so that rclone takes them.
    assert.ok(argv.indexOf('--dir-cache-time=1m') > argv.indexOf('--dir-cache-time=10s'));
    assert.equal(argv.at(-1), '--no-modtime');
  });

  it('a public bucket (-o public_bucket=1, as for s3fs): no keys in the config, even from a profile, and no flag for rclone', () => {
    const spec = toSpec({ ...base, client: 'rclone', otherOpts: '-o public_bucket=1 -o dir_cache_time=1m' });
    assert.equal(spec.ramRole, false);
    assert.doesNotMatch(rcloneConfig(spec, { akId: 'AKIDEXAMPLE', akSecret: 'secret-value-123' }), /access_key_id|secret_access_key|AKIDEXAMPLE/);
    const argv = rcloneMountArgs(spec, '/mnt/volumes/v', '/run/ossnas/oss/v/rclone.conf', 'rclone/v');
    assert.ok(!argv.some((a) => a.includes('public')), argv.join(' '));
    assert.equal(argv.at(-1), '--dir-cache-time=1m');
  });
});

describe("rclone's write cache", () => {
  const dirs: string[] = [];
  after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));
  const cacheWith = async (files: Record<string, boolean>) => {
    const root = await mkdtemp(path.join(tmpdir(), 'ossnas-rclone-'));
    dirs.push(root);
    for (const [name, dirty] of Object.entries(files)) {
      const meta = path.join(root, 'vol', 'vfsMeta', 'ossnas', 'bucket', name);
      await mkdir(path.dirname(meta), { recursive: true });
      // As rclone 1.60 writes it (indented JSON).
      await writeFile(meta, JSON.stringify({ ModTime: '2026-12-03T02:18:07Z', Size: 2, Fingerprint: '', Dirty: dirty }, null, '\t'));
    }
    return root;
  };

  it('counts the files written and not uploaded yet, in every directory', async () => {
    const root = await cacheWith({ 'a.txt': true, 'deep/b.txt': true, 'c.txt': false });
    assert.equal(await pendingUploads(path.join(root, 'vol')), 2);
    assert.equal(await pendingUploads(path.join(root, 'missing')), 0);
  });

  it('stops waiting when the client is gone, and says how many are left', async () => {
    const root = await cacheWith({ 'a.txt': true });
    assert.equal(await waitForUploads(path.join(root, 'vol'), 60_000, () => false), 1);
  });

  it("a removed volume's cache is deleted when clean, and kept aside (never deleted) when not", async () => {
    const clean = await cacheWith({ 'a.txt': false });
    assert.equal(await retireCache(clean, 'vol'), undefined);
    assert.deepEqual(await readdir(clean), []);

    const dirty = await cacheWith({ 'a.txt': true });
    const kept = await retireCache(dirty, 'vol');
    assert.match(String(kept), /\/\.kept\/vol\.\d{4}-/);
    assert.equal(await pendingUploads(String(kept)), 1);
    await assert.rejects(retireCache(dirty, '../x'), /not a volume's cache/);
  });
});
