import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createBackends, parseVolumeOptions } from '../../src/backends/index.js';
import { OptionsError } from '../../src/backends/options.js';
import { normalizeSubPath } from '../../src/backends/options.js';
import { NO_CREDENTIALS_HELP, normalizeEndpoint, toSpec } from '../../src/backends/oss/options.js';
import { parseOtherOpts, refusedByClient } from '../../src/backends/oss/other-opts.js';
import { SettingsError } from '../../src/settings.js';

const backends = createBackends();
const base = { type: 'oss', bucket: 'photos', url: 'oss-cn-hangzhou.aliyuncs.com', credentials: 'prod' };
const parse = (opts: Record<string, string> | null) => parseVolumeOptions(backends, opts).options;
const fails = (opts: Record<string, string> | null, pattern: RegExp) =>
  assert.throws(() => parse(opts), (e: unknown) => e instanceof OptionsError && pattern.test(e.message));

describe('volume type', () => {
  it('is required, and the message says how to give it', () => {
    fails(null, /option 'type' is required \(one of: oss, nas, disk\)/);
    fails({ bucket: 'x' }, /option 'type' is required/);
  });
  it('unknown types list what is accepted', () => fails({ type: 'ceph' }, /'ceph' is not a volume type; accepted: oss, nas, disk/));
  it('is case-insensitive in key and value', () => {
    const { type: _t, ...rest } = base;
    assert.equal(parse({ ...rest, TYPE: 'OSS' }).type, 'oss');
  });
});

describe('oss options', () => {
  it('normalises to a canonical map with defaults written out', () => {
    assert.deepEqual(parse(base), {
      type: 'oss',
      bucket: 'photos',
      url: 'https://oss-cn-hangzhou.aliyuncs.com',
      path: '/',
      credentials: 'prod',
      readonly: 'false',
    });
  });

  it('treats snake_case, kebab-case, camelCase and any case as one key', () => {
    const a = parse({ ...base, read_only: 'TRUE', other_opts: '-o retries=3' } as never);
    const b = parse({ ...base, 'read-only': 'true', OtherOpts: 'retries=3' } as never);
    const c = parse({ ...base, readOnly: 'yes', otheropts: '-oretries=3' } as never);
    assert.deepEqual(a, b);
    assert.deepEqual(a, c);
    assert.equal(a.readonly, 'true');
    assert.equal(a.otherOpts, '-o retries=3');
  });

  it('refuses a key given twice in two spellings', () =>
    fails({ ...base, readonly: 'true', read_only: 'false' }, /'readonly' is given twice \(as 'readonly' and 'read_only'\)/));

  it('names an unknown key and lists the accepted ones', () =>
    fails({ ...base, buckt: 'x' }, /unknown option 'buckt' for type=oss; accepted options: type, bucket, url/));

  it('names missing required keys', () => {
    const { bucket: _b, ...noBucket } = base;
    fails(noBucket, /option 'bucket' is required/);
    const { url: _u, ...noUrl } = base;
    fails(noUrl, /option 'url' is required: the endpoint/);
  });

  it('checks bucket names', () => fails({ ...base, bucket: 'Bad_Bucket' }, /invalid option 'bucket': a bucket name is 3-63/));

  it('normalises endpoints and refuses what cannot be one', () => {
    assert.equal(normalizeEndpoint('oss-cn-hangzhou.aliyuncs.com'), 'https://oss-cn-hangzhou.aliyuncs.com');
    assert.equal(normalizeEndpoint('http://127.0.0.1:9000/'), 'http://127.0.0.1:9000');
    assert.equal(normalizeEndpoint('HTTPS://Example.COM'), 'https://example.com');
    assert.throws(() => normalizeEndpoint('ftp://host'), /only http/);
    assert.throws(() => normalizeEndpoint('http://ak:sk@host'), /must not contain credentials/);
    assert.throws(() => normalizeEndpoint('http://host/bucket'), /no path/);
    assert.throws(() => normalizeEndpoint('host,allow_root'), /endpoint/);
    fails({ ...base, url: 'http://a:b@h' }, /invalid option 'url': an endpoint must not contain credentials/);
  });

  it('normalises sub-paths and refuses escapes', () => {
    assert.equal(normalizeSubPath(''), '/');
    assert.equal(normalizeSubPath('/'), '/');
    assert.equal(normalizeSubPath('a/b/'), '/a/b');
    assert.equal(normalizeSubPath('//a//b'), '/a/b');
    assert.throws(() => normalizeSubPath('/a/../b'), /'\.' or '\.\.'/);
    assert.throws(() => normalizeSubPath('/a,allow_root'), /commas/);
    assert.throws(() => normalizeSubPath('/a\nb'), /control/);
    fails({ ...base, path: '../etc' }, /invalid option 'path'/);
  });

  it('checks uid, gid, umask and readonly values', () => {
    fails({ ...base, uid: 'root' }, /invalid option 'uid': expected a whole number/);
    fails({ ...base, gid: '-1' }, /invalid option 'gid'/);
    fails({ ...base, umask: '999' }, /invalid option 'umask': expected an octal mask/);
    fails({ ...base, readonly: 'maybe' }, /invalid option 'readonly': expected true or false, got 'maybe'/);
    const p = parse({ ...base, uid: '1000', gid: '100', umask: '22', readonly: '1' });
    assert.deepEqual([p.uid, p.gid, p.umask, p.readonly], ['1000', '100', '022', 'true']);
  });

  it('wants credentials, one way only', () => {
    const { credentials: _c, ...none } = base;
    // None at all: the instance's RAM role, which Create checks with the metadata service.
    const { credentials: _p, ...sameWithout } = parse(base);
    assert.deepEqual(parse(none), sameWithout);
    assert.equal(toSpec(parse(none)).ramRole, true);
    assert.equal(toSpec(parse(base)).ramRole, false);
    assert.equal(toSpec(parse({ ...none, otherOpts: '-o public_bucket=1' })).ramRole, false);
    fails({ ...base, akId: 'AK', akSecret: 'SK' }, /either credentials=PROFILE or akId\/akSecret, not both/);
    fails({ ...none, akId: 'AK' }, /invalid option 'akSecret'|option 'akSecret' is required/);
    fails({ ...none, akId: 'AK', akSecret: 'S K' }, /invalid option 'akSecret': must not contain spaces/);
    assert.equal(parse({ ...none, akId: 'AKID1', akSecret: 'SECRET1' }).akSecret, 'SECRET1');
    assert.equal(parse({ ...none, otherOpts: '-o public_bucket=1' }).otherOpts, '-o public_bucket=1');
  });

  it('takes the CSI spellings of credential keys only as documented', () =>
    fails({ ...base, accessKeySecret: 'x' }, /unknown option 'accessKeySecret'/));
});

describe('otherOpts allow-list', () => {
  it('accepts the CSI form, -oX and bare comma lists', () => {
    assert.deepEqual(parseOtherOpts('-o max_stat_cache_size=1000 -o kernel_cache,retries=2 -ostat_cache_expire=60'), [
      { name: 'max_stat_cache_size', value: '1000' },
      { name: 'kernel_cache' },
      { name: 'retries', value: '2' },
      { name: 'stat_cache_expire', value: '60' },
    ]);
  });
  it('refuses options ossnas owns, naming the key to use instead', () => {
    assert.throws(() => parseOtherOpts('-o uid=0'), /'uid' is set by ossnas \(use the 'uid' option\)/);
    assert.throws(() => parseOtherOpts('-o passwd_file=/etc/shadow'), /'passwd_file' is set by ossnas/);
    assert.throws(() => parseOtherOpts('allow_other'), /'allow_other' is set by ossnas \(always on\)/);
  });
  it('refuses what is not on the list, and lists what is', () =>
    assert.throws(() => parseOtherOpts('-o use_cache=/'), /'use_cache' is not allowed for s3fs; allowed: connect_timeout/));
  it('checks values', () => {
    assert.throws(() => parseOtherOpts('-o retries=many'), /'retries' needs a value/);
    assert.throws(() => parseOtherOpts('-o kernel_cache=1'), /'kernel_cache' takes no value/);
    assert.throws(() => parseOtherOpts('-o'), /has no value/);
    assert.throws(() => parseOtherOpts('--foreground'), /only '-o name\[=value\]'/);
    assert.throws(() => parseOtherOpts('-o retries=1 -o retries=2'), /given twice/);
  });
  it('reports through the volume option name', () =>
    fails({ ...base, otherOpts: '-o dev' }, /invalid option 'otherOpts': 'dev' is not allowed/));
  it('names the options only ossfs takes when the plugin mounts with s3fs', () => {
    assert.match(String(refusedByClient('s3fs', '-o retries=2 -o readdir_optimize')), /'readdir_optimize' is an option of ossfs, and this plugin mounts with s3fs, which refuses it/);
    assert.equal(refusedByClient('ossfs', '-o readdir_optimize'), undefined);
    assert.equal(refusedByClient('s3fs', '-o retries=2'), undefined);
    assert.equal(refusedByClient('s3fs', ''), undefined);
  });
  it('refuses what the shipped s3fs 1.90 does not know', () => {
    for (const o of ['free_space_ratio=10', 'region=us-east-1', 'compat_dir', 'disable_noobj_cache']) {
      assert.throws(() => parseOtherOpts(`-o ${o}`), /is not allowed/, o);
    }
  });
});

describe('error messages never echo a secret', () => {
  it('a malformed endpoint with credentials in it is refused without repeating it', () => {
    assert.throws(
      () => parse({ ...base, url: 'http://AKID:TopSecret99@[bad' }),
      (e: unknown) => e instanceof OptionsError && /invalid option 'url'/.test(e.message) && !e.message.includes('TopSecret99'),
    );
  });
});

describe('plugin-wide OSS defaults (OSSNAS_DEFAULT_URL, OSSNAS_DEFAULT_CREDENTIALS)', () => {
  const withDefaults = createBackends({ url: 'http://127.0.0.1:9000/', credentials: 'team' });
  const parseWith = (opts: Record<string, string>) => parseVolumeOptions(withDefaults, opts).options;

  it('fill in the endpoint and the profile, so a volume names only its bucket', () => {
    const o = parseWith({ type: 'oss', bucket: 'photos' });
    assert.deepEqual([o.url, o.credentials], ['http://127.0.0.1:9000', 'team']);
  });

  it('never override what the volume gives, and add no profile to inline keys or a public bucket', () => {
    assert.deepEqual(parseWith({ ...base }).url, 'https://oss-cn-hangzhou.aliyuncs.com');
    assert.equal(parseWith({ ...base }).credentials, 'prod');
    const inline = parseWith({ type: 'oss', bucket: 'photos', akId: 'id123456', akSecret: 'secret123456' });
    assert.equal(inline.credentials, undefined);
    assert.equal(parseWith({ type: 'oss', bucket: 'photos', otherOpts: '-o public_bucket=1' }).credentials, undefined);
  });

  it('without them, the messages say how to set them', () => {
    fails({ type: 'oss', bucket: 'photos', credentials: 'prod' }, /option 'url' is required: .*OSSNAS_DEFAULT_URL/);
    assert.equal(NO_CREDENTIALS_HELP.includes('docker plugin set ossnas OSSNAS_DEFAULT_CREDENTIALS=PROFILE'), true);
  });

  it('a default that is not valid stops the plugin with the setting named', () => {
    assert.throws(() => createBackends({ url: 'ftp://x' }), (e: unknown) => e instanceof SettingsError && /^OSSNAS_DEFAULT_URL: only http/.test(e.message));
    assert.throws(() => createBackends({ credentials: '../etc/passwd' }), (e: unknown) => e instanceof SettingsError && /^OSSNAS_DEFAULT_CREDENTIALS: expected a profile name/.test(e.message));
  });
});
