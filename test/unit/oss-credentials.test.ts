import assert from 'node:assert/strict';
import { chmod, chown, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { clientRuntime } from '../../src/backends/oss/client-runtime.js';
import { resolveCredentials } from '../../src/backends/oss/credentials.js';
import { parseProfile } from '../../src/backends/profiles.js';
import { clientArgs, credentialHandoff } from '../../src/backends/oss/index.js';
import { toSpec } from '../../src/backends/oss/options.js';
import { OptionsError } from '../../src/backends/options.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';

const SECRET = 'S3cr3tValue/xyz';

describe('credentials profiles', () => {
  it('read akId/akSecret/securityToken in any key spelling, with comments', () => {
    assert.deepEqual(parseProfile('# prod\nAccessKeyId = AKID1\nak_secret=' + SECRET + '\nsecurity-token=TOK\n', 'p'), {
      akId: 'AKID1',
      akSecret: SECRET,
      securityToken: 'TOK',
    });
  });

  it('name what is wrong without showing a value', () => {
    const cases: Array<[string, RegExp]> = [
      ['akId=A\n', /must set both akId and akSecret/],
      ['akId=A\nakSecret\n', /line 2 is not key=value/],
      [`akId=A\npassword=${SECRET}\n`, /line 2 has an unknown key/],
      [`akId=A\nakSecret=${SECRET} more\n`, /akSecret is empty or contains spaces/],
    ];
    for (const [text, re] of cases) {
      assert.throws(
        () => parseProfile(text, 'p'),
        (e: unknown) => e instanceof OptionsError && re.test(e.message) && !e.message.includes(SECRET),
      );
    }
  });

  const dirP = tempDir();
  after(async () => (await dirP).cleanup());

  it('are looked up by name in the credentials directory, with a clear error when missing', async () => {
    const { dir } = await dirP;
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'prod'), `akId=AKID1\nakSecret=${SECRET}\n`, { mode: 0o600 });
    const spec = toSpec({ type: 'oss', bucket: 'b1b', url: 'h', credentials: 'prod' });
    assert.deepEqual(await resolveCredentials(spec, dir), { akId: 'AKID1', akSecret: SECRET });
    const missing = toSpec({ type: 'oss', bucket: 'b1b', url: 'h', credentials: 'nope' });
    await assert.rejects(resolveCredentials(missing, dir), /credentials profile 'nope' not found: no file .*nope/);
  });

  it('are refused when other users can read or change them, naming the mode and the fix', async () => {
    const { dir } = await dirP;
    const spec = toSpec({ type: 'oss', bucket: 'b1b', url: 'h', credentials: 'loose' });
    await writeFile(path.join(dir, 'loose'), `akId=AKID1\nakSecret=${SECRET}\n`);
    for (const mode of [0o644, 0o604, 0o620, 0o602]) {
      await chmod(path.join(dir, 'loose'), mode);
      await assert.rejects(resolveCredentials(spec, dir), (err: Error) => {
        assert.match(err.message, new RegExp(`profile 'loose' can be read or changed by users other than its owner \\(mode 0${mode.toString(8)}\\); on the host: chmod 600`));
        assert.ok(!err.message.includes(SECRET));
        return true;
      });
    }
    await chmod(path.join(dir, 'loose'), 0o400);
    assert.equal((await resolveCredentials(spec, dir))?.akId, 'AKID1');
  });

  it("are refused when another user owns them, naming the owner and the fix, whatever the mode", { skip: rootSkipReason() }, async () => {
    const { dir } = await dirP;
    const spec = toSpec({ type: 'oss', bucket: 'b1b', url: 'h', credentials: 'theirs' });
    const file = path.join(dir, 'theirs');
    await writeFile(file, `akId=AKID1\nakSecret=${SECRET}\n`, { mode: 0o600 });
    for (const [uid, gid] of [[1234, 1234], [65534, 0]] as const) {
      await chown(file, uid, gid);
      await assert.rejects(resolveCredentials(spec, dir), (err: Error) => {
        assert.ok(err instanceof OptionsError);
        assert.match(err.message, new RegExp(`^credentials profile 'theirs' is owned by uid ${uid}, not by root, the plugin's user: .*; on the host: chown root:root on the file \\(${file} in the plugin\\)`));
        assert.ok(!err.message.includes(SECRET));
        return true;
      });
    }
    await chown(file, 0, 1234); // root's, whatever its group (the mode keeps the group out)
    assert.equal((await resolveCredentials(spec, dir))?.akId, 'AKID1');
  });
});

describe('handing keys to the FUSE client', () => {
  const inline = toSpec({ type: 'oss', bucket: 'b1b', url: 'http://127.0.0.1:9000', akId: 'AKID1', akSecret: SECRET });

  it('puts keys in a passwd file for s3fs and ossfs, never in argv', () => {
    const s3 = credentialHandoff('s3fs', inline, { akId: 'AKID1', akSecret: SECRET }, '/run/x');
    assert.equal(s3.file?.text, `AKID1:${SECRET}\n`);
    assert.deepEqual(s3.options, ['passwd_file=/run/x/passwd']);
    const oss = credentialHandoff('ossfs', inline, { akId: 'AKID1', akSecret: SECRET }, '/run/x');
    assert.equal(oss.file?.text, `b1b:AKID1:${SECRET}\n`);
    const argv = clientArgs(inline, '/mnt/volumes/v', s3.options).join(' ');
    assert.ok(!argv.includes(SECRET) && !argv.includes('AKID1'), argv);
  });

  it('gives an STS token to s3fs through its environment, and refuses it for ossfs', () => {
    const h = credentialHandoff('s3fs', inline, { akId: 'AKID1', akSecret: SECRET, securityToken: 'TOK' }, '/run/x');
    assert.equal(h.file, undefined);
    assert.deepEqual(h.env, { AWSACCESSKEYID: 'AKID1', AWSSECRETACCESSKEY: SECRET, AWSSESSIONTOKEN: 'TOK' });
    assert.deepEqual(h.options, ['use_session_token']);
    assert.throws(() => credentialHandoff('ossfs', inline, { akId: 'A', akSecret: 'B', securityToken: 'T' }, '/x'), /needs the s3fs client/);
  });

  it('builds the exact client arguments', () => {
    const spec = toSpec({
      type: 'oss',
      bucket: 'b1b',
      url: 'http://127.0.0.1:9000',
      path: 'team/a',
      credentials: 'p',
      uid: '1000',
      gid: '1000',
      umask: '077',
      readonly: 'true',
      otherOpts: '-o retries=2 -o kernel_cache',
    });
    assert.deepEqual(clientArgs(spec, '/mnt/volumes/v', ['passwd_file=/f']), [
      'b1b:/team/a', '/mnt/volumes/v', '-f',
      '-o', 'url=http://127.0.0.1:9000', '-o', 'allow_other', '-o', 'passwd_file=/f',
      '-o', 'use_path_request_style', '-o', 'uid=1000', '-o', 'gid=1000', '-o', 'umask=077', '-o', 'ro',
      '-o', 'retries=2', '-o', 'kernel_cache',
    ]);
    // A named endpoint uses virtual-hosted requests, as OSS requires.
    const named = toSpec({ type: 'oss', bucket: 'b1b', url: 'oss-cn-hangzhou.aliyuncs.com', credentials: 'p' });
    assert.deepEqual(clientArgs(named, '/m', []), ['b1b', '/m', '-f', '-o', 'url=https://oss-cn-hangzhou.aliyuncs.com', '-o', 'allow_other']);
  });
});

describe("what the FUSE client uses while it serves, outside the plugin's rootfs", () => {
  it('a private tmpdir and a copy of the CA bundle in the state directory, relative to it, copied again when it changes', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const ca = path.join(dir, 'ca.crt');
      await writeFile(ca, 'CERT ONE\n');
      const state = path.join(dir, 'state');
      const r = await clientRuntime(state, ca);
      const fuse = path.join(state, 'fuse');
      assert.deepEqual(r, { cwd: fuse, options: ['tmpdir=tmp'], env: { CURL_CA_BUNDLE: 'ca-certificates.crt' } });
      assert.equal((await stat(path.join(fuse, 'tmp'))).mode & 0o777, 0o700);
      assert.equal((await stat(fuse)).mode & 0o777, 0o700);
      assert.equal(await readFile(`${fuse}/ca-certificates.crt`, 'utf8'), 'CERT ONE\n');
      assert.equal(await clientRuntime(state, ca), r, 'prepared once per process');
      // A later process (another state directory here) copies a changed bundle again.
      await writeFile(ca, 'CERT TWO\n');
      const state2 = path.join(dir, 'state2');
      await mkdir(path.join(state2, 'fuse'), { recursive: true });
      await writeFile(path.join(state2, 'fuse', 'ca-certificates.crt'), 'CERT ONE\n');
      await clientRuntime(state2, ca);
      assert.equal(await readFile(path.join(state2, 'fuse', 'ca-certificates.crt'), 'utf8'), 'CERT TWO\n');
      // No bundle in the rootfs: s3fs is left to its own search.
      assert.deepEqual((await clientRuntime(path.join(dir, 'state3'), path.join(dir, 'none.crt'))).env, {});
    } finally {
      await cleanup();
    }
  });
});
