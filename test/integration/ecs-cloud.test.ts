// The local ECS region (helpers/ecs-cloud) driven by the real Alibaba Cloud SDK: what other tests
// rely on it for — signatures and keys checked as the real API checks them, disks that attach
// as real block devices, the metadata service's tokens and rotating role credentials, faults —
// and that it cleans up after itself. Needs root (loop devices).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { access, open, readFile, readlink, stat } from 'node:fs/promises';
import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import EcsModule, * as $Ecs from '@alicloud/ecs20140526';
import { $OpenApiUtil, OpenApiUtil } from '@alicloud/openapi-core';
import { execa } from 'execa';
import { EcsCloud, type SimInstance } from '../helpers/ecs-cloud.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';

const EcsClient = EcsModule.default;
type Client = InstanceType<typeof EcsClient>;
const AK = { accessKeyId: 'LTAI5tTestKey0001', accessKeySecret: 'test-secret-0001' };

interface Creds {
  accessKeyId: string;
  accessKeySecret: string;
  securityToken?: string;
}

function sdk(host: string, creds: Creds, extra: Record<string, unknown> = {}): Client {
  return new EcsClient(new $OpenApiUtil.Config({ endpoint: host, protocol: 'http', regionId: 'cn-hangzhou', ...creds, ...extra }));
}

const describeDisks = (c: Client, ids?: string[], more: Record<string, unknown> = {}) =>
  c.describeDisks(new $Ecs.DescribeDisksRequest({ regionId: 'cn-hangzhou', ...(ids ? { diskIds: JSON.stringify(ids) } : {}), ...more }));

/** The SDK's error for a refused call: its code and HTTP status, as the plugin will see them. */
async function refusal(p: Promise<unknown>): Promise<{ code?: string; statusCode?: number; name?: string; message: string }> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e as { code?: string; statusCode?: number; name?: string; message: string },
  );
  assert.ok(err, 'expected the call to be refused');
  return err;
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

interface RawAnswer {
  status: number;
  json: Record<string, unknown>;
}

function raw(port: number, url: string, headers: IncomingHttpHeaders): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: url, headers: { ...headers, connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * A request signed as the SDK signs (with the SDK's own signer, on the client's side), with
 * whatever date, version or action a test wants to see refused.
 */
function signedHeaders(o: { creds: Creds; host: string; query: Record<string, string>; action?: string; version?: string; date?: string; nonce?: string }): IncomingHttpHeaders {
  const headers: Record<string, string> = {
    host: o.host,
    'x-acs-action': o.action ?? 'DescribeDisks',
    'x-acs-version': o.version ?? '2014-05-26',
    'x-acs-date': o.date ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    'x-acs-signature-nonce': o.nonce ?? createHash('sha256').update(String(Math.random())).digest('hex'),
    'x-acs-content-sha256': createHash('sha256').update('').digest('hex'),
  };
  if (o.creds.securityToken) {
    headers['x-acs-accesskey-id'] = o.creds.accessKeyId;
    headers['x-acs-security-token'] = o.creds.securityToken;
  }
  const forSigner = { method: 'POST', pathname: '/', query: o.query, headers } as unknown as Parameters<typeof OpenApiUtil.getAuthorization>[0];
  headers.authorization = OpenApiUtil.getAuthorization(forSigner, 'ACS3-HMAC-SHA256', headers['x-acs-content-sha256']!, o.creds.accessKeyId, o.creds.accessKeySecret);
  return headers;
}

const toUrl = (query: Record<string, string>) => `/?${new URLSearchParams(query).toString().replace(/\+/g, '%20')}`;

/** The requests the SDK sends, taken by a server that only records them, for replaying by hand. */
async function captureSdkRequests(creds: Creds, calls: (c: Client) => Promise<unknown>): Promise<Array<{ url: string; headers: IncomingHttpHeaders }>> {
  const seen: Array<{ url: string; headers: IncomingHttpHeaders }> = [];
  const server = createServer((req, res) => {
    seen.push({ url: req.url!, headers: req.headers });
    req.resume();
    res.setHeader('content-type', 'application/json;charset=utf-8');
    res.end('{"RequestId":"captured","TotalCount":0,"PageNumber":1,"PageSize":10,"Disks":{"Disk":[]}}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    await calls(sdk(`127.0.0.1:${(server.address() as { port: number }).port}`, creds));
  } finally {
    server.closeAllConnections();
    server.close();
  }
  return seen;
}

async function metadataGet(inst: SimInstance, p: string, token?: string): Promise<{ status: number; text: string }> {
  const r = await fetch(inst.metadataUrl + p, { headers: token === undefined ? {} : { 'X-aliyun-ecs-metadata-token': token } });
  return { status: r.status, text: await r.text() };
}

async function metadataToken(inst: SimInstance, ttl = '60'): Promise<{ status: number; text: string }> {
  const r = await fetch(`${inst.metadataUrl}/latest/api/token`, { method: 'PUT', headers: { 'X-aliyun-ecs-metadata-token-ttl-seconds': ttl } });
  return { status: r.status, text: await r.text() };
}

/** The role credentials the way a client gets them: token, role name, then the triple. */
async function roleCredentials(inst: SimInstance): Promise<Creds & { expiration: string }> {
  const token = (await metadataToken(inst)).text;
  const role = (await metadataGet(inst, '/latest/meta-data/ram/security-credentials/', token)).text.trim();
  const r = await metadataGet(inst, `/latest/meta-data/ram/security-credentials/${role}`, token);
  assert.equal(r.status, 200);
  const d = JSON.parse(r.text) as Record<string, string>;
  assert.equal(d.Code, 'Success');
  assert.match(d.Expiration!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  return { accessKeyId: d.AccessKeyId!, accessKeySecret: d.AccessKeySecret!, securityToken: d.SecurityToken!, expiration: d.Expiration! };
}

const loopsOver = async (image: string) => (await execa('losetup', ['-j', image])).stdout.trim();

describe('ECS cloud simulator', { skip: rootSkipReason(), timeout: 180_000 }, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let cloud: EcsCloud;
  let one: SimInstance;
  let two: SimInstance;
  let client: Client;
  const port = () => Number(new URL(cloud.endpoint).port);

  before(async () => {
    tmp = await tempDir('ossnas-ecs-cloud-');
    cloud = await EcsCloud.start({ dir: tmp.dir, accessKeys: { [AK.accessKeyId]: AK.accessKeySecret }, attachMs: 200, detachMs: 200 });
    one = await cloud.addInstance('i-one');
    two = await cloud.addInstance('i-two');
    client = sdk(cloud.host, AK);
  });
  after(async () => {
    await cloud?.close();
    await tmp?.cleanup();
  });

  it('answers AK-signed DescribeDisks as ECS does: filters, regions, unknown ids', async () => {
    const d = await cloud.addDisk({ sizeMiB: 64 });
    assert.match(d.diskId, /^d-[a-z0-9]{20}$/);
    const far = await cloud.addDisk({ sizeMiB: 16, regionId: 'cn-beijing' });

    const r = await describeDisks(client, [d.diskId]);
    assert.match(r.body!.requestId!, /^[0-9A-F-]{36}$/);
    assert.equal(r.body!.totalCount, 1);
    const disk = r.body!.disks!.disk![0]!;
    assert.deepEqual(
      [disk.diskId, disk.regionId, disk.zoneId, disk.status, disk.instanceId, disk.device, disk.serialNumber, disk.size, disk.category, disk.portable],
      [d.diskId, 'cn-hangzhou', 'cn-hangzhou-h', 'Available', '', '', d.diskId.slice(2), 1, 'cloud_essd', true],
    );
    assert.deepEqual(disk.attachments?.attachment, []);

    assert.equal((await describeDisks(client, ['d-nosuchdisk'])).body!.totalCount, 0, 'an unknown id is an empty list, not an error');
    const here = (await describeDisks(client)).body!.disks!.disk!.map((x) => x.diskId);
    assert.ok(here.includes(d.diskId) && !here.includes(far.diskId), 'another region\'s disk is not listed');
    const there = await client.describeDisks(new $Ecs.DescribeDisksRequest({ regionId: 'cn-beijing', diskIds: JSON.stringify([far.diskId]) }));
    assert.deepEqual(there.body!.disks!.disk!.map((x) => x.diskId), [far.diskId], 'it is listed in its own region');
    assert.equal((await describeDisks(client, [d.diskId], { status: 'In_use' })).body!.totalCount, 0, 'filters are ANDed');
    assert.equal((await describeDisks(client, [d.diskId], { status: 'Available' })).body!.totalCount, 1);

    const total = (await describeDisks(client)).body!.totalCount!;
    const page2 = (await describeDisks(client, undefined, { pageSize: 1, pageNumber: 2 })).body!;
    assert.deepEqual([page2.totalCount, page2.pageNumber, page2.pageSize, page2.disks!.disk!.length], [total, 2, 1, total >= 2 ? 1 : 0]);

    const missing = await refusal(client.describeDisks(new $Ecs.DescribeDisksRequest({})));
    assert.deepEqual([missing.code, missing.statusCode], ['MissingParameter', 400]);
  });

  it('refuses a wrong secret, an unknown key, a query changed after signing, a replayed nonce, a stale date', async () => {
    const d = await cloud.addDisk({ sizeMiB: 16 });
    const wrong = await refusal(describeDisks(sdk(cloud.host, { ...AK, accessKeySecret: 'not-the-secret' }), [d.diskId]));
    assert.deepEqual([wrong.code, wrong.statusCode], ['SignatureDoesNotMatch', 400]);
    const unknown = await refusal(describeDisks(sdk(cloud.host, { accessKeyId: 'LTAI5tNobody', accessKeySecret: 'x' }), [d.diskId]));
    assert.deepEqual([unknown.code, unknown.statusCode], ['InvalidAccessKeyId.NotFound', 404]);

    // Two requests signed by the SDK, never sent to the cloud: one altered, one replayed.
    const [tamper, replay] = await captureSdkRequests(AK, async (c) => {
      await describeDisks(c, [d.diskId]);
      await describeDisks(c, [d.diskId]);
    });
    const altered = tamper!.url.replace(encodeURIComponent(d.diskId), encodeURIComponent('d-someoneelses'));
    assert.notEqual(altered, tamper!.url);
    let a = await raw(port(), altered, tamper!.headers);
    assert.deepEqual([a.status, a.json.Code], [400, 'SignatureDoesNotMatch']);
    assert.equal(a.json.HostId, 'ecs.cn-hangzhou.aliyuncs.com');
    assert.deepEqual(Object.keys(a.json).sort(), ['Code', 'HostId', 'Message', 'Recommend', 'RequestId']);
    a = await raw(port(), replay!.url, replay!.headers);
    assert.equal(a.status, 200, JSON.stringify(a.json));
    a = await raw(port(), replay!.url, replay!.headers);
    assert.deepEqual([a.status, a.json.Code], [400, 'SignatureNonceUsed']);

    const query = { RegionId: 'cn-hangzhou' };
    const old = new Date(Date.now() - 20 * 60_000).toISOString().replace(/\.\d+Z$/, 'Z');
    a = await raw(port(), toUrl(query), signedHeaders({ creds: AK, host: cloud.host, query, date: old }));
    assert.deepEqual([a.status, a.json.Code], [400, 'InvalidTimeStamp.Expired']);
    a = await raw(port(), toUrl(query), signedHeaders({ creds: AK, host: cloud.host, query, version: '2016-04-28' }));
    assert.deepEqual([a.status, a.json.Code], [400, 'InvalidVersion']);
    a = await raw(port(), toUrl(query), signedHeaders({ creds: AK, host: cloud.host, query, action: 'DeleteDisk' }));
    assert.deepEqual([a.status, a.json.Code], [404, 'InvalidAction.NotFound']);
    a = await raw(port(), toUrl(query), signedHeaders({ creds: AK, host: cloud.host, query }));
    assert.equal(a.status, 200, 'the hand-signed request itself is fine');

    const noAuth = signedHeaders({ creds: AK, host: cloud.host, query });
    delete noAuth.authorization;
    a = await raw(port(), toUrl(query), noAuth);
    assert.deepEqual([a.status, a.json.Code], [400, 'IncompleteSignature']);
    // A nonce left out of SignedHeaders could be changed at will, and replays with it.
    const unsignedNonce = signedHeaders({ creds: AK, host: cloud.host, query });
    unsignedNonce.authorization = String(unsignedNonce.authorization).replace('x-acs-signature-nonce;', '');
    a = await raw(port(), toUrl(query), unsignedNonce);
    assert.deepEqual([a.status, a.json.Code], [400, 'IncompleteSignature']);

    const codes = cloud.requests.filter((r) => r.accessKeyId === 'LTAI5tNobody').map((r) => r.code);
    assert.deepEqual(codes, ['InvalidAccessKeyId.NotFound'], 'refused requests are recorded with their code');
  });

  it('attaches a disk as a real block device linked from the instance, and detaches it', async () => {
    const d = await cloud.addDisk({ sizeMiB: 48 });
    const attach = await client.attachDisk(new $Ecs.AttachDiskRequest({ instanceId: one.id, diskId: d.diskId, deleteWithInstance: false }));
    assert.ok(attach.body!.requestId);
    assert.equal(cloud.disk(d.diskId).status, 'Attaching', 'answered at once, done later');

    const disk = await until('the disk In_use', async () => {
      const x = (await describeDisks(client, [d.diskId])).body!.disks!.disk![0]!;
      return x.status === 'In_use' ? x : undefined;
    });
    assert.equal(disk.instanceId, one.id);
    assert.equal(disk.device, '/dev/xvdb');
    assert.deepEqual(disk.attachments!.attachment!.map((x) => [x.instanceId, x.device]), [[one.id, '/dev/xvdb']]);

    const link = path.join(one.byIdDir, `virtio-${d.serialNumber}`);
    const device = await readlink(link);
    assert.match(device, /^\/dev\/loop\d+$/);
    assert.equal(cloud.disk(d.diskId).device, device);
    assert.ok((await stat(link)).isBlockDevice());
    assert.equal((await execa('blockdev', ['--getsize64', link])).stdout.trim(), String(48 * 2 ** 20));
    // Written through the device, read in the image: it is the disk's storage.
    const fh = await open(link, 'r+');
    try {
      await fh.write(Buffer.from('through the loop device'), 0, undefined, 4096);
      await fh.sync();
    } finally {
      await fh.close();
    }
    const img = await readFile(d.image);
    assert.equal(img.subarray(4096, 4096 + 23).toString(), 'through the loop device');

    const busy = await refusal(client.attachDisk(new $Ecs.AttachDiskRequest({ instanceId: two.id, diskId: d.diskId })));
    assert.deepEqual([busy.name, busy.code, busy.statusCode], ['ClientError', 'IncorrectDiskStatus', 403]);
    const elsewhere = await refusal(client.detachDisk(new $Ecs.DetachDiskRequest({ instanceId: two.id, diskId: d.diskId })));
    assert.deepEqual([elsewhere.code, elsewhere.statusCode], ['DependencyViolation', 403]);
    const nodisk = await refusal(client.attachDisk(new $Ecs.AttachDiskRequest({ instanceId: one.id, diskId: 'd-nosuchdisk' })));
    assert.deepEqual([nodisk.code, nodisk.statusCode], ['InvalidDiskId.NotFound', 404]);
    const otherZone = await cloud.addDisk({ sizeMiB: 16, zoneId: 'cn-hangzhou-k' });
    const zone = await refusal(client.attachDisk(new $Ecs.AttachDiskRequest({ instanceId: one.id, diskId: otherZone.diskId })));
    assert.deepEqual([zone.code, zone.statusCode], ['ResourcesNotInSameZone', 403]);
    const noinst = await refusal(client.attachDisk(new $Ecs.AttachDiskRequest({ instanceId: 'i-nosuch', diskId: d.diskId })));
    assert.deepEqual([noinst.code, noinst.statusCode], ['InvalidInstanceId.NotFound', 404]);

    await client.detachDisk(new $Ecs.DetachDiskRequest({ instanceId: one.id, diskId: d.diskId }));
    const between = await refusal(client.detachDisk(new $Ecs.DetachDiskRequest({ instanceId: one.id, diskId: d.diskId })));
    assert.deepEqual([between.code, between.statusCode], ['IncorrectDiskStatus', 403], 'while Detaching');
    await until('the disk Available', async () => {
      const x = (await describeDisks(client, [d.diskId])).body!.disks!.disk![0]!;
      return x.status === 'Available' ? x : undefined;
    });
    await assert.rejects(access(link), /ENOENT/);
    assert.equal(await loopsOver(d.image), '', 'the loop device is freed');
    const again = await refusal(client.detachDisk(new $Ecs.DetachDiskRequest({ instanceId: one.id, diskId: d.diskId })));
    assert.deepEqual([again.code, again.statusCode], ['InvalidDisk.AlreadyDetached', 404]);
    assert.deepEqual([cloud.disk(d.diskId).instanceId, cloud.disk(d.diskId).device], [undefined, undefined]);

    // And again: a disk goes back and forth, to another instance too.
    await cloud.attachTo(d.diskId, two.id);
    assert.equal(await readlink(path.join(two.byIdDir, `virtio-${d.serialNumber}`)), cloud.disk(d.diskId).device);
    await cloud.detachFrom(d.diskId, two.id);
  });

  it('names NVMe devices as udev does, and a disk without a serial after its id', async () => {
    const nvme = await cloud.addInstance('i-nvme', { naming: 'nvme' });
    const d = await cloud.addDisk({ sizeMiB: 16, serialNumber: '' });
    await cloud.attachTo(d.diskId, nvme.id);
    assert.equal(cloud.disk(d.diskId).serialNumber, '');
    const link = path.join(nvme.byIdDir, `nvme-Alibaba_Cloud_Elastic_Block_Storage_${d.diskId.slice(2)}`);
    assert.equal(await readlink(link), cloud.disk(d.diskId).device);
    const shown = (await describeDisks(client, [d.diskId])).body!.disks!.disk![0]!;
    assert.deepEqual([shown.serialNumber, shown.status, shown.instanceId], ['', 'In_use', nvme.id]);
    await cloud.detachFrom(d.diskId, nvme.id);
    await assert.rejects(access(link), /ENOENT/);
  });

  it('serves metadata only with an IMDSv2 token', async () => {
    assert.equal((await metadataGet(one, '/latest/meta-data/instance-id')).status, 403, 'no token');
    assert.equal((await metadataGet(one, '/latest/meta-data/instance-id', 'made-up')).status, 401, 'unknown token');
    for (const ttl of ['0', '21601', 'x']) assert.equal((await metadataToken(one, ttl)).status, 400, `ttl ${ttl}`);
    const noTtl = await fetch(`${one.metadataUrl}/latest/api/token`, { method: 'PUT' });
    assert.equal(noTtl.status, 400);

    const token = (await metadataToken(one, '1')).text;
    assert.deepEqual(await metadataGet(one, '/latest/meta-data/instance-id', token), { status: 200, text: 'i-one' });
    assert.deepEqual(await metadataGet(one, '/latest/meta-data/region-id', token), { status: 200, text: 'cn-hangzhou' });
    assert.deepEqual(await metadataGet(one, '/latest/meta-data/zone-id', token), { status: 200, text: 'cn-hangzhou-h' });
    assert.equal((await metadataGet(one, '/latest/meta-data/ram/security-credentials/', token)).text, 'EcsDiskRole');
    assert.equal((await metadataGet(one, '/latest/meta-data/ram/security-credentials/OtherRole', token)).status, 404);
    await sleep(1100);
    assert.equal((await metadataGet(one, '/latest/meta-data/instance-id', token)).status, 401, 'expired token');

    const roleless = await cloud.addInstance('i-norole', { roleName: null });
    const t2 = (await metadataToken(roleless)).text;
    assert.equal((await metadataGet(roleless, '/latest/meta-data/ram/security-credentials/', t2)).status, 404);

    roleless.stopMetadata();
    await sleep(50); // for fetch's pool to see its idle keep-alive connection closed
    const refused = await refusal(fetch(`${roleless.metadataUrl}/latest/api/token`, { method: 'PUT' }));
    assert.equal((refused as { cause?: { code?: string } }).cause?.code, 'ECONNREFUSED', refused.message);
    await roleless.startMetadata();
    assert.equal((await metadataToken(roleless)).status, 200);
  });

  it('rotates role credentials before they expire; the API takes each triple until its Expiration', async () => {
    const inst = await cloud.addInstance('i-rotating', { credentialTtlMs: 6000 });
    const first = await roleCredentials(inst);
    assert.match(first.accessKeyId, /^STS\./);
    assert.equal((await roleCredentials(inst)).accessKeyId, first.accessKeyId, 'the same triple while fresh');
    assert.equal(inst.credentialsIssued, 1);

    const viaFirst = sdk(cloud.host, first);
    await describeDisks(viaFirst, []);
    const call = cloud.requests.at(-1)!;
    assert.deepEqual([call.accessKeyId, call.securityToken, call.code], [first.accessKeyId, first.securityToken, 'OK']);

    const noToken = await refusal(describeDisks(sdk(cloud.host, { accessKeyId: first.accessKeyId, accessKeySecret: first.accessKeySecret }), []));
    assert.equal(noToken.code, 'InvalidSecurityToken.Malformed');

    // Within a third of its life of the Expiration, the metadata service hands out a new one.
    const expires = Date.parse(first.expiration);
    await sleep(Math.max(0, expires - 6000 / 3 - Date.now()) + 100);
    const second = await roleCredentials(inst);
    assert.notEqual(second.accessKeyId, first.accessKeyId);
    assert.ok(inst.credentialsIssued >= 2);
    const mixed = await refusal(describeDisks(sdk(cloud.host, { ...second, securityToken: first.securityToken }), []));
    assert.deepEqual([mixed.code, mixed.statusCode], ['InvalidSecurityToken.MismatchWithAccessKey', 400]);

    await sleep(Math.max(0, expires - Date.now()) + 100);
    const expired = await refusal(describeDisks(viaFirst, []));
    assert.deepEqual([expired.code, expired.statusCode], ['InvalidSecurityToken.Expired', 400]);
    // What the metadata service serves now works (the second triple, or a newer one).
    const current = await roleCredentials(inst);
    assert.notEqual(current.accessKeyId, first.accessKeyId);
    await describeDisks(sdk(cloud.host, current), []);
  });

  it('delays, refuses connections, hangs and fails on demand', async (t) => {
    t.after(() => {
      cloud.faults.mode = 'up';
      cloud.faults.delayMs = 0;
    });
    cloud.faults.delayMs = 400;
    const started = Date.now();
    await describeDisks(client, []);
    assert.ok(Date.now() - started >= 400, 'delayed');
    cloud.faults.delayMs = 0;

    cloud.faults.mode = 'down';
    // Down cuts the client's idle keep-alive connection too; it sees that at its next read of the
    // socket. A call made before then, on that connection, would get ECONNRESET instead.
    await sleep(50);
    const down = await refusal(describeDisks(client, []));
    assert.equal(down.code, 'ECONNREFUSED', down.message);
    cloud.faults.mode = 'up';
    await describeDisks(client, []);

    cloud.faults.mode = 'hang';
    const hung = await refusal(describeDisks(sdk(cloud.host, AK, { readTimeout: 500 }), []));
    assert.match(`${hung.name} ${hung.message}`, /timeout/i);
    assert.equal(cloud.requests.at(-1)!.code, 'NoAnswer');

    cloud.faults.mode = 'error500';
    const failed = await refusal(describeDisks(client, []));
    assert.deepEqual([failed.name, failed.code, failed.statusCode], ['ServerError', 'InternalError', 500]);

    cloud.faults.mode = 'up';
    await describeDisks(client, []);
  });
});

describe('ECS cloud simulator: close()', { skip: rootSkipReason(), timeout: 60_000 }, () => {
  it('leaves no loop device over an image and no link, even with an attach under way', async (t) => {
    const tmp = await tempDir('ossnas-ecs-cloud-');
    t.after(() => tmp.cleanup());
    const cloud = await EcsCloud.start({ dir: tmp.dir, accessKeys: { [AK.accessKeyId]: AK.accessKeySecret }, attachMs: 100 });
    const inst = await cloud.addInstance('i-closing');
    const attached = await cloud.addDisk({ sizeMiB: 16 });
    const attaching = await cloud.addDisk({ sizeMiB: 16 });
    await cloud.attachTo(attached.diskId, inst.id);
    const c = sdk(cloud.host, AK);
    await c.attachDisk(new $Ecs.AttachDiskRequest({ instanceId: inst.id, diskId: attaching.diskId }));
    assert.notEqual(await loopsOver(attached.image), '');

    await cloud.close();
    for (const d of [attached, attaching]) assert.equal(await loopsOver(d.image), '', `${d.diskId} unplugged`);
    assert.deepEqual((await execa('ls', ['-A', inst.byIdDir])).stdout, '');
    await assert.rejects(describeDisks(c, []), (e: { code?: string }) => e.code === 'ECONNREFUSED');
  });
});
