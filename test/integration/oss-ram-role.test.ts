// OSS volumes that name no credentials, on an ECS instance: real s3fs signs with the STS triple of
// the instance's RAM role, read from the (simulated) metadata service, against an S3 server that
// accepts only that triple. Each mount takes the role's current triple; off ECS, Create says what
// to give instead. Needs root.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fuseClientPid, processesWith } from '../helpers/docker.js';
import { EcsCloud, type SimInstance } from '../helpers/ecs-cloud.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { finishPlugin, startPlugin, type PluginProcess } from '../helpers/plugin-process.js';
import { startS3, type S3Server } from '../helpers/s3.js';

const BUCKET = 'role-bucket';
const ID = 'r'.repeat(64);
const TTL_MS = 9000;

/** The role's triple as any client on the instance reads it (IMDSv2), without the plugin's code. */
async function roleTriple(i: SimInstance): Promise<{ id: string; secret: string; token: string }> {
  const token = await (await fetch(`${i.metadataUrl}/latest/api/token`, { method: 'PUT', headers: { 'X-aliyun-ecs-metadata-token-ttl-seconds': '60' } })).text();
  const get = async (p: string) => (await fetch(`${i.metadataUrl}/latest/meta-data/${p}`, { headers: { 'X-aliyun-ecs-metadata-token': token } })).text();
  const role = (await get('ram/security-credentials/')).trim();
  const c = JSON.parse(await get(`ram/security-credentials/${role}`)) as Record<string, string>;
  return { id: c.AccessKeyId!, secret: c.AccessKeySecret!, token: c.SecurityToken! };
}

describe("OSS volumes with no credentials use the instance's RAM role", { skip: rootSkipReason(), timeout: 180_000 }, () => {
  let cloud: EcsCloud;
  let instance: SimInstance;
  let s3: S3Server;
  let plugin: PluginProcess;
  let cleanup: () => Promise<void>;
  const call = (p: PluginProcess, m: string, a: unknown) => p.client.call(`VolumeDriver.${m}`, a);

  before(async () => {
    const t = await tempDir('ossnas-role-');
    cleanup = t.cleanup;
    cloud = await EcsCloud.start({ dir: path.join(t.dir, 'cloud') });
    instance = await cloud.addInstance('i-rolehost0000000001', { credentialTtlMs: TTL_MS });
    const first = await roleTriple(instance);
    // Only the role's triple signs: a mount that used anything else would be refused.
    s3 = await startS3([BUCKET], { keys: { [first.id]: { secret: first.secret, token: first.token } } });
    plugin = await startPlugin(path.join(t.dir, 'plugin'), { OSSNAS_METADATA_URL: instance.metadataUrl, OSSNAS_MOUNT_TIMEOUT: '10' });
  });
  after(async () => {
    await finishPlugin(plugin);
    await s3?.stop();
    await cloud?.close();
    await cleanup?.();
  });

  it('mounts with the role, and each later mount takes the role\'s current triple', async () => {
    const opts = { type: 'oss', bucket: BUCKET, url: s3.url };
    assert.deepEqual((await call(plugin, 'Create', { Name: 'role', Opts: opts })).json, { Err: '' });
    const st = ((await call(plugin, 'Get', { Name: 'role' })).json.Volume as { Status: Record<string, unknown> }).Status;
    assert.equal(st.credentials, "the instance's RAM role");

    let r = await call(plugin, 'Mount', { Name: 'role', ID });
    assert.equal(r.status, 200, r.text);
    await writeFile(path.join(String(r.json.Mountpoint), 'first.txt'), 'with the first triple\n');
    assert.equal(await s3.getObject(BUCKET, 'first.txt'), 'with the first triple\n');
    await call(plugin, 'Unmount', { Name: 'role', ID });

    // Past the point where the role's triple is renewed (a third of its life before it expires):
    // the server now knows only the new one.
    await new Promise((res) => setTimeout(res, (TTL_MS * 2) / 3 + 500));
    const second = await roleTriple(instance);
    await s3.setKeys({ [second.id]: { secret: second.secret, token: second.token } });
    r = await call(plugin, 'Mount', { Name: 'role', ID });
    assert.equal(r.status, 200, r.text);
    await writeFile(path.join(String(r.json.Mountpoint), 'second.txt'), 'with the renewed triple\n');
    assert.equal(await s3.getObject(BUCKET, 'second.txt'), 'with the renewed triple\n');
    await call(plugin, 'Unmount', { Name: 'role', ID });
    assert.deepEqual(s3.refusals(), [], 'requests the server refused');
    assert.ok(instance.credentialsIssued >= 2);
    for (const secret of [second.secret, second.token]) assert.ok(!plugin.output().includes(secret), 'no role secret in the log');
    assert.deepEqual((await call(plugin, 'Remove', { Name: 'role' })).json, { Err: '' });
  });

  it('client=rclone mounts with the role\'s triple too (in its config file, never its environment)', async () => {
    const now = await roleTriple(instance);
    await s3.setKeys({ [now.id]: { secret: now.secret, token: now.token } });
    const opts = { type: 'oss', bucket: BUCKET, url: s3.url, client: 'rclone' };
    assert.deepEqual((await call(plugin, 'Create', { Name: 'role-rclone', Opts: opts })).json, { Err: '' });
    const r = await call(plugin, 'Mount', { Name: 'role-rclone', ID });
    assert.equal(r.status, 200, r.text);
    await writeFile(path.join(String(r.json.Mountpoint), 'rclone.txt'), 'with the role, by rclone\n');
    assert.ok(await fuseClientPid(String(r.json.Mountpoint)), 'rclone serves the volume');
    for (const secret of [now.secret, now.token]) assert.deepEqual(await processesWith(secret, 'environ'), [], 'a process environment holds the role secret');
    // Uploaded by the time the Unmount is answered.
    assert.deepEqual((await call(plugin, 'Unmount', { Name: 'role-rclone', ID })).json, { Err: '' });
    assert.equal(await s3.getObject(BUCKET, 'rclone.txt'), 'with the role, by rclone\n');
    assert.deepEqual(s3.refusals(), [], 'requests the server refused');
    for (const secret of [now.secret, now.token]) assert.ok(!plugin.output().includes(secret), 'no role secret in the log');
    assert.deepEqual((await call(plugin, 'Remove', { Name: 'role-rclone' })).json, { Err: '' });
  });

  it('off ECS (no metadata service), Create says what to give instead', async () => {
    const off = await startPlugin(path.join(plugin.dir, 'off-ecs'), { OSSNAS_METADATA_URL: 'http://127.0.0.1:9' });
    try {
      const r = await call(off, 'Create', { Name: 'nokeys', Opts: { type: 'oss', bucket: BUCKET, url: s3.url } });
      assert.equal(r.status, 500);
      assert.match(
        String(r.json.Err),
        /credentials are required, and the instance's RAM role cannot stand in for them \(the metadata service at http:\/\/127\.0\.0\.1:9 cannot be reached .*\): give credentials=PROFILE/,
      );
      // A public bucket needs no role.
      const pub = await call(off, 'Create', { Name: 'pub', Opts: { type: 'oss', bucket: BUCKET, url: s3.url, otherOpts: '-o public_bucket=1' } });
      assert.deepEqual(pub.json, { Err: '' });
    } finally {
      await finishPlugin(off);
    }
  });
});
