// The ECS API through an HTTP proxy (HTTP_PROXY), and the metadata service never through it: the
// real program as a plain host process, the local control plane (helpers/ecs-cloud) behind a name
// only the proxy resolves (ecs.proxied.invalid), so an API call that is answered went through the
// proxy, and a cloud disk volume created, attached, mounted and detached that way. Needs root
// (loop devices).
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { EcsCloud, type SimInstance } from '../helpers/ecs-cloud.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { startForwardProxy, type ForwardProxy } from '../helpers/forward-proxy.js';
import { finishPlugin, startPlugin, type PluginProcess } from '../helpers/plugin-process.js';

const ECS_HOST = 'ecs.proxied.invalid';
const ID = (n: number) => String(n).padStart(64, 'e');

describe('the ECS API through an HTTP proxy, the metadata service directly', { skip: rootSkipReason(), timeout: 300_000 }, () => {
  let cloud: EcsCloud;
  let inst: SimInstance;
  let proxy: ForwardProxy;
  let host: PluginProcess;
  let cleanup: () => Promise<void>;
  const call = (m: string, args: unknown) => host.client.call(`VolumeDriver.${m}`, args);
  const apiUrl = () => `http://${ECS_HOST}:${new URL(cloud.endpoint).port}`;

  before(async () => {
    const t = await tempDir('ossnas-cloud-proxy-');
    cleanup = t.cleanup;
    cloud = await EcsCloud.start({ dir: path.join(t.dir, 'cloud') });
    inst = await cloud.addInstance('i-proxied00000000001');
    proxy = await startForwardProxy({ hostMap: { [ECS_HOST]: '127.0.0.1' } });
    host = await startPlugin(path.join(t.dir, 'host'), {
      OSSNAS_METADATA_URL: inst.metadataUrl,
      OSSNAS_ECS_ENDPOINT: apiUrl(),
      OSSNAS_DEVICE_BY_ID_DIR: inst.byIdDir,
      OSSNAS_MOUNT_TIMEOUT: '15',
      HTTP_PROXY: proxy.url,
      HTTPS_PROXY: proxy.url,
    });
  });
  after(async () => {
    await finishPlugin(host);
    await proxy?.close();
    await cloud?.close();
    await cleanup?.();
  });

  it('creates, attaches, mounts and detaches a cloud disk with every API call through the proxy, and none to the metadata service', async () => {
    const disk = await cloud.addDisk({ sizeMiB: 64 });
    assert.deepEqual((await call('Create', { Name: 'db', Opts: { type: 'disk', diskId: disk.diskId } })).json, { Err: '' });
    let r = await call('Mount', { Name: 'db', ID: ID(1) });
    assert.equal(r.status, 200, r.text);
    const mp = String(r.json.Mountpoint);
    assert.equal(cloud.disk(disk.diskId).instanceId, inst.id);
    await writeFile(path.join(mp, 'rows.txt'), 'through the proxy\n');
    assert.equal(await readFile(path.join(mp, 'rows.txt'), 'utf8'), 'through the proxy\n');
    r = await call('Unmount', { Name: 'db', ID: ID(1) });
    assert.deepEqual(r.json, { Err: '' });
    assert.equal(cloud.disk(disk.diskId).status, 'Available');

    const actions = cloud.requests.map((x) => x.action);
    for (const a of ['DescribeDisks', 'AttachDisk', 'DetachDisk']) assert.ok(actions.includes(a), actions.join(' '));
    // Each request the API answered came through the proxy, as an absolute URI for the made-up name.
    const viaProxy = proxy.requestsFor(ECS_HOST);
    assert.equal(viaProxy.length, cloud.requests.length, JSON.stringify(proxy.log));
    assert.ok(viaProxy.every((x) => x.url.startsWith(`${apiUrl()}/`)), JSON.stringify(viaProxy));
    // The instance's identity and its role's keys came from the metadata service, directly.
    assert.deepEqual(proxy.log.filter((x) => x.target !== `${ECS_HOST}:${new URL(cloud.endpoint).port}`), []);
    assert.ok(cloud.requests.every((x) => x.securityToken), 'the calls were signed with the RAM role keys from the metadata service');
  });

  it('reaches an https API through HTTPS_PROXY by CONNECT', async () => {
    // A TLS front for the API with a certificate for the made-up name, trusted through NODE_EXTRA_CA_CERTS.
    const dir = path.join(host.dir, 'tls');
    await mkdir(dir, { recursive: true });
    const [key, cert] = [path.join(dir, 'key.pem'), path.join(dir, 'cert.pem')];
    await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${ECS_HOST}`, '-addext', `subjectAltName=DNS:${ECS_HOST}`]);
    const front = createHttpsServer({ key: await readFile(key), cert: await readFile(cert) }, (req, res) => {
      const up = httpRequest({ host: '127.0.0.1', port: Number(new URL(cloud.endpoint).port), method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    const frontPort = (front.address() as { port: number }).port;
    const tlsHost = await startPlugin(path.join(dir, 'host'), {
      OSSNAS_METADATA_URL: inst.metadataUrl,
      OSSNAS_ECS_ENDPOINT: `https://${ECS_HOST}:${frontPort}`,
      OSSNAS_DEVICE_BY_ID_DIR: inst.byIdDir,
      HTTPS_PROXY: proxy.url, // and no HTTP_PROXY: an https endpoint takes this one
      NODE_EXTRA_CA_CERTS: cert,
    });
    try {
      const [logBefore, apiBefore] = [proxy.log.length, cloud.requests.length];
      // Refused for a reason only the API can give: DescribeDisks was answered.
      const r = await tlsHost.client.call('VolumeDriver.Create', { Name: 'nope', Opts: { type: 'disk', diskId: 'd-nosuchdisk0000000000' } });
      assert.match(String(r.json.Err), /disk d-nosuchdisk0000000000 does not exist in region cn-hangzhou/, tlsHost.output());
      assert.deepEqual(cloud.requests.slice(apiBefore).map((x) => x.action), ['DescribeDisks']);
      const tunnels = proxy.log.slice(logBefore);
      assert.ok(tunnels.length >= 1, 'no request reached the proxy');
      assert.deepEqual(tunnels.filter((x) => x.method !== 'CONNECT' || x.url !== `${ECS_HOST}:${frontPort}`), [], JSON.stringify(tunnels));
    } finally {
      await finishPlugin(tlsHost);
      front.closeAllConnections();
      front.close();
    }
  });

  it('with the proxy gone, the calls fail naming the proxy, and nothing is attached', async () => {
    await proxy.close();
    const disk = await cloud.addDisk({ sizeMiB: 16 });
    const named = new RegExp(
      `ECS DescribeDisks failed: the API at ${apiUrl().replace(/\./g, '\\.')} through proxy http://127\\.0\\.0\\.1:${proxy.port} \\(from HTTP_PROXY\\) cannot be reached \\(ECONNREFUSED\\)`,
    );
    // Create records a volume whose disk it cannot look up (see cloud-disk.ts), saying why in the log.
    assert.deepEqual((await call('Create', { Name: 'late', Opts: { type: 'disk', diskId: disk.diskId } })).json, { Err: '' });
    assert.match(host.output(), named);
    const r = await call('Mount', { Name: 'late', ID: ID(2) });
    assert.equal(r.status, 500, r.text);
    assert.match(String(r.json.Err), named);
    assert.equal(cloud.disk(disk.diskId).status, 'Available');
  });
});
