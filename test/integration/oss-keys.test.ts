// Do the keys a volume names reach the server intact? The real program as a plain host process,
// real s3fs and rclone, and an S3 server that checks every signature as S3 and OSS do (test/helpers/s3.ts):
// with the right secret (from a profile or inline, signed V4 or V2, or an STS key with its token)
// a mount works and a file written through it lands in the bucket; with the right key id and a
// wrong secret (or token) the Mount fails, says why, and leaves nothing behind. Needs root.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OSS_CLIENTS } from '../../src/backends/oss/options.js';
import { readMounts } from '../../src/host/mountinfo.js';
import { fuseClientPid } from '../helpers/docker.js';
import { rootSkipReason } from '../helpers/env.js';
import { finishPlugin, startPluginInTempDir, writeProfile, type PluginProcess } from '../helpers/plugin-process.js';
import { startS3, type S3Server } from '../helpers/s3.js';

const BUCKET = 'keys-bucket';
const KEY_ID = 'OSSKEYSTESTKEY';
const SECRET = 'Keys-Test-Secret-5b8e1';
const WRONG_SECRET = 'Keys-Test-Secret-5b8e2';
const STS_ID = 'OSSKEYSTESTSTS';
const STS_SECRET = 'Keys-Test-Sts-Secret-9d04';
const STS_TOKEN = 'keys-test-sts-token-31c7';
const ID = 'k'.repeat(64);

for (const client of OSS_CLIENTS) describe(`OSS keys against a server that checks signatures (${client})`, { skip: rootSkipReason(), timeout: 120_000 }, () => {
  const withClient = (opts: Record<string, string>) => ({ type: 'oss', bucket: BUCKET, url: s3.url, ...(client === 'rclone' && { client }), ...opts });
  // rclone signs V4 only: s3fs's sigv2 is not an option of it.
  const forClient = <T>(volumes: Record<string, T>) => Object.fromEntries(Object.entries(volumes).filter(([n]) => client === 's3fs' || !n.endsWith('-v2')));
  let s3: S3Server;
  let plugin: PluginProcess;
  const call = (m: string, a: unknown) => plugin.client.call(`VolumeDriver.${m}`, a);
  const mountpoint = (name: string) => path.join(plugin.mountRoot, name);

  before(async () => {
    s3 = await startS3([BUCKET], { keys: { [KEY_ID]: SECRET, [STS_ID]: { secret: STS_SECRET, token: STS_TOKEN } } });
    plugin = await startPluginInTempDir({ OSSNAS_MOUNT_TIMEOUT: '6' });
    await writeProfile(plugin.credentialsDir, 'right', KEY_ID, SECRET);
    await writeProfile(plugin.credentialsDir, 'wrong', KEY_ID, WRONG_SECRET);
    await writeProfile(plugin.credentialsDir, 'sts-right', STS_ID, STS_SECRET, STS_TOKEN);
    await writeProfile(plugin.credentialsDir, 'sts-wrong-token', STS_ID, STS_SECRET, `${STS_TOKEN}x`);
  });
  after(async () => {
    await finishPlugin(plugin);
    await s3?.stop();
  });

  it('the right secret, from a profile or inline, V4 or V2, or an STS key with its token: mounted, and a file written lands in the bucket', async () => {
    const volumes = forClient<Record<string, string>>({
      'profile-v4': { credentials: 'right' },
      'inline-v4': { akId: KEY_ID, akSecret: SECRET },
      'profile-v2': { credentials: 'right', otherOpts: '-o sigv2' },
      'sts-v4': { credentials: 'sts-right' },
      'sts-v2': { credentials: 'sts-right', otherOpts: '-o sigv2' },
    });
    for (const [name, opts] of Object.entries(volumes)) {
      assert.deepEqual((await call('Create', { Name: name, Opts: withClient(opts) })).json, { Err: '' });
      const r = await call('Mount', { Name: name, ID });
      assert.equal(r.status, 200, `Mount ${name}: ${r.text}`);
      await writeFile(path.join(mountpoint(name), `${name}.txt`), `signed by ${name}\n`);
      // Uploaded by the time the Unmount is answered (rclone uploads after close).
      assert.deepEqual((await call('Unmount', { Name: name, ID })).json, { Err: '' });
      assert.equal(await s3.getObject(BUCKET, `${name}.txt`), `signed by ${name}\n`, name);
      assert.deepEqual((await call('Remove', { Name: name })).json, { Err: '' });
    }
    assert.deepEqual(await s3.keys(BUCKET), Object.keys(volumes).map((n) => `${n}.txt`).sort());
    assert.deepEqual(s3.refusals(), [], 'requests the server refused');
  });

  it(`the right key id with a wrong secret (or token): Mount fails naming the cause, nothing stays mounted, no ${client} runs`, async (t) => {
    const volumes = forClient<{ opts: Record<string, string>; refusedAs: string; keyId: string }>({
      'wrong-profile': { opts: { credentials: 'wrong' }, refusedAs: 'SignatureDoesNotMatch', keyId: KEY_ID },
      'wrong-inline': { opts: { akId: KEY_ID, akSecret: WRONG_SECRET }, refusedAs: 'SignatureDoesNotMatch', keyId: KEY_ID },
      'wrong-profile-v2': { opts: { credentials: 'wrong', otherOpts: '-o sigv2' }, refusedAs: 'SignatureDoesNotMatch', keyId: KEY_ID },
      'wrong-sts-token': { opts: { credentials: 'sts-wrong-token' }, refusedAs: 'InvalidToken', keyId: STS_ID },
    });
    for (const [name, { opts, refusedAs, keyId }] of Object.entries(volumes)) {
      assert.deepEqual((await call('Create', { Name: name, Opts: withClient(opts) })).json, { Err: '' });
      const seen = s3.refusals().length;
      const r = await call('Mount', { Name: name, ID });
      assert.equal(r.status, 500, `Mount ${name} should fail: ${r.text}`);
      const err = String(r.json.Err);
      t.diagnostic(`${name}: ${JSON.stringify(err)}`);
      assert.match(err, new RegExp(`^volume ${name}: mounting bucket ${BUCKET} at ${s3.url} failed: `));
      assert.ok(!err.includes(SECRET) && !err.includes(WRONG_SECRET) && !err.includes(STS_TOKEN), 'the Err holds a secret');
      // The Err says, in the plugin's words, that the endpoint refused these credentials.
      assert.match(err, /\(the endpoint refused the credentials (of profile '[^']+'|given inline \(akId, akSecret\)): check the access key id, the secret/,
        `${name}: the Err does not name refused credentials as the cause`);
      // The server did refuse this key, and for this reason: the secret or token, not the key id.
      const refused = s3.refusals().slice(seen);
      assert.ok(refused.length > 0, `${name}: the server refused nothing`);
      assert.deepEqual([...new Set(refused.map((x) => `${x.code} ${x.accessKeyId}`))], [`${refusedAs} ${keyId}`], name);

      assert.equal((await readMounts()).find((m) => m.mountPoint === mountpoint(name)), undefined, `${name} left mounted`);
      assert.equal(await fuseClientPid(mountpoint(name)), undefined, `a ${client} for ${name} still runs`);
      const st = ((await call('Get', { Name: name })).json.Volume as { Status: Record<string, unknown> }).Status;
      assert.deepEqual([st.mounted, st.refs, st.health], [false, 0, 'error'], name);
      // Docker's Unmount after a failed Mount is harmless.
      assert.deepEqual((await call('Unmount', { Name: name, ID })).json, { Err: '' });
      assert.deepEqual((await call('Remove', { Name: name })).json, { Err: '' });
    }
  });
});
