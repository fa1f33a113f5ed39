// OSS volumes behind an HTTP proxy (HTTP_PROXY, NO_PROXY): real s3fs, a real S3 server, the
// program as a plain host process, and a local forward proxy (helpers/forward-proxy.ts). The
// volume's endpoint is a name only the proxy resolves (s3.proxied.invalid), so a mount that works
// can only have gone through the proxy. The proxy wants credentials, which are a secret the
// program must print nowhere. Needs root (FUSE mounts).
import assert from 'node:assert/strict';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readMounts } from '../../src/host/mountinfo.js';
import { fuseClientPid, processesWith } from '../helpers/docker.js';
import { rootSkipReason } from '../helpers/env.js';
import { startForwardProxy, type ForwardProxy } from '../helpers/forward-proxy.js';
import { finishPlugin, startPluginInTempDir, writeProfile, type PluginProcess } from '../helpers/plugin-process.js';
import { startS3, type KeySet, type S3Server } from '../helpers/s3.js';

const AK_ID = 'OSSPROXYTESTKEY';
const SECRET = 'Proxy-Test-Secret-51d0';
const PROXY_USER = 'tester';
const PROXY_PASSWORD = 'Pr0xy-Passw0rd-93b1';
const PROXIED_HOST = 's3.proxied.invalid';
const ID = (n: number) => String(n).repeat(64).slice(0, 64);

async function mountAt(target: string) {
  return (await readMounts()).find((m) => m.mountPoint === target);
}

/** Every file below `dir` (not crossing mounts) whose content holds `needle`. */
async function filesHolding(dir: string, needle: string): Promise<string[]> {
  const hits: string[] = [];
  const mounts = new Set((await readMounts()).map((m) => m.mountPoint));
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      if (mounts.has(p)) continue;
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && (await stat(p)).size < 10_000_000 && (await readFile(p, 'latin1')).includes(needle)) hits.push(p);
    }
  };
  await walk(dir);
  return hits;
}

describe('OSS volumes through an HTTP proxy', { skip: rootSkipReason(), timeout: 180_000 }, () => {
  let s3: S3Server;
  let proxy: ForwardProxy;
  let plugin: PluginProcess;
  const others: PluginProcess[] = [];
  const call = (p: PluginProcess, m: string, a: unknown) => p.client.call(`VolumeDriver.${m}`, a);
  const proxiedUrl = () => `http://${PROXIED_HOST}:${s3.port}`;
  const proxySetting = () => `http://${PROXY_USER}:${PROXY_PASSWORD}@127.0.0.1:${proxy.port}`;
  const createProxied = (p: PluginProcess, name: string) =>
    call(p, 'Create', { Name: name, Opts: { type: 'oss', bucket: 'bucket-px', url: proxiedUrl(), credentials: 'local', otherOpts: '-o use_path_request_style' } });

  /** A second program with other proxy settings, stopped with the suite. */
  async function otherPlugin(env: Record<string, string>): Promise<PluginProcess> {
    const p = await startPluginInTempDir({ OSSNAS_MOUNT_TIMEOUT: '8', ...env });
    others.push(p);
    await writeProfile(p.credentialsDir, 'local', AK_ID, SECRET);
    return p;
  }

  before(async () => {
    s3 = await startS3(['bucket-px'], { keys: { [AK_ID]: SECRET } satisfies KeySet });
    proxy = await startForwardProxy({ hostMap: { [PROXIED_HOST]: '127.0.0.1' }, credentials: `${PROXY_USER}:${PROXY_PASSWORD}` });
    plugin = await startPluginInTempDir({ OSSNAS_MOUNT_TIMEOUT: '8', HTTP_PROXY: proxySetting(), NO_PROXY: 'unrelated.example' });
    await writeProfile(plugin.credentialsDir, 'local', AK_ID, SECRET);
  });
  after(async () => {
    for (const p of others) await finishPlugin(p);
    await finishPlugin(plugin);
    await proxy?.close();
    await s3?.stop();
  });

  it('mounts a bucket whose endpoint only the proxy can reach; the data is in the bucket, the requests went through the proxy', async () => {
    assert.deepEqual((await createProxied(plugin, 'px')).json, { Err: '' });
    const r = await call(plugin, 'Mount', { Name: 'px', ID: ID(1) });
    assert.equal(r.status, 200, r.text);
    const mp = String(r.json.Mountpoint);
    assert.equal((await mountAt(mp))?.fsType, 'fuse.s3fs');

    await writeFile(path.join(mp, 'through-proxy.txt'), 'written through the proxy\n');
    assert.equal(await s3.getObject('bucket-px', 'through-proxy.txt'), 'written through the proxy\n');

    const seen = proxy.requestsFor(PROXIED_HOST);
    // The probe's absolute-URI HEAD, then s3fs's own requests (its bucket check, the PUT of the file).
    assert.ok(seen.some((x) => x.method === 'HEAD' && x.url === `${proxiedUrl()}/`), JSON.stringify(seen));
    assert.ok(seen.some((x) => x.method === 'PUT' && x.url.startsWith(`${proxiedUrl()}/bucket-px/through-proxy.txt`)), JSON.stringify(seen));
    assert.ok(seen.every((x) => x.authorized), 'a request came without the proxy credentials');

    // libcurl reads the lowercase names only (it ignores an uppercase HTTP_PROXY): the client has those.
    const pid = await fuseClientPid(mp);
    assert.ok(pid);
    const env = (await readFile(`/proc/${pid}/environ`, 'latin1')).split('\0');
    assert.ok(env.includes(`http_proxy=${proxySetting()}`), env.join(' '));
    assert.ok(env.includes('no_proxy=unrelated.example,localhost,127.0.0.1,::1,100.100.100.200'), env.join(' '));
    assert.ok(!env.some((e) => e.startsWith('HTTP_PROXY=')), env.join(' '));

    assert.deepEqual((await call(plugin, 'Unmount', { Name: 'px', ID: ID(1) })).json, { Err: '' });
    assert.equal(await mountAt(mp), undefined);
  });

  it('client=rclone goes through the same proxy: its bucket check and its uploads, with the proxy credentials', async () => {
    const opts = { type: 'oss', bucket: 'bucket-px', url: proxiedUrl(), credentials: 'local', client: 'rclone', path: '/rclone' };
    assert.deepEqual((await call(plugin, 'Create', { Name: 'px-rclone', Opts: opts })).json, { Err: '' });
    const before = proxy.requestsFor(PROXIED_HOST).length;
    const r = await call(plugin, 'Mount', { Name: 'px-rclone', ID: ID(1) });
    assert.equal(r.status, 200, r.text);
    const mp = String(r.json.Mountpoint);
    assert.equal((await mountAt(mp))?.fsType, 'fuse.rclone');
    await writeFile(path.join(mp, 'through-proxy.txt'), 'rclone through the proxy\n');
    assert.deepEqual((await call(plugin, 'Unmount', { Name: 'px-rclone', ID: ID(1) })).json, { Err: '' });
    assert.equal(await s3.getObject('bucket-px', 'rclone/through-proxy.txt'), 'rclone through the proxy\n');
    const seen = proxy.requestsFor(PROXIED_HOST).slice(before);
    assert.ok(seen.some((x) => x.method === 'GET' && x.url.startsWith(`${proxiedUrl()}/bucket-px`)), `the bucket check: ${JSON.stringify(seen)}`);
    assert.ok(seen.some((x) => x.method === 'PUT' && x.url.startsWith(`${proxiedUrl()}/bucket-px/rclone/through-proxy.txt`)), JSON.stringify(seen));
    assert.ok(seen.every((x) => x.authorized), 'a request came without the proxy credentials');
    assert.deepEqual((await call(plugin, 'Remove', { Name: 'px-rclone' })).json, { Err: '' });
  });

  it('reaches an endpoint NO_PROXY covers (127.0.0.1, always direct) without the proxy', async () => {
    const before = proxy.log.length;
    assert.deepEqual(
      (await call(plugin, 'Create', { Name: 'direct', Opts: { type: 'oss', bucket: 'bucket-px', url: s3.url, credentials: 'local' } })).json,
      { Err: '' },
    );
    const r = await call(plugin, 'Mount', { Name: 'direct', ID: ID(2) });
    assert.equal(r.status, 200, r.text);
    const mp = String(r.json.Mountpoint);
    await writeFile(path.join(mp, 'direct.txt'), 'direct\n');
    assert.equal(await s3.getObject('bucket-px', 'direct.txt'), 'direct\n');
    assert.deepEqual((await call(plugin, 'Unmount', { Name: 'direct', ID: ID(2) })).json, { Err: '' });
    assert.deepEqual(proxy.log.slice(before), [], 'a request for a NO_PROXY endpoint went to the proxy');
  });

  it('says which proxy wants other credentials, and which NO_PROXY sends the endpoint direct', async () => {
    const wrong = await otherPlugin({ HTTP_PROXY: `http://${PROXY_USER}:not-the-password@127.0.0.1:${proxy.port}` });
    await createProxied(wrong, 'px');
    let r = await call(wrong, 'Mount', { Name: 'px', ID: ID(3) });
    assert.equal(r.status, 500, r.text);
    assert.match(
      String(r.json.Err),
      new RegExp(`endpoint ${proxiedUrl()} is not reachable: proxy http://127\\.0\\.0\\.1:${proxy.port} \\(from HTTP_PROXY\\) refused a request for ${proxiedUrl()}/: 407`),
    );
    assert.ok(!wrong.output().includes('not-the-password') && !String(r.json.Err).includes('not-the-password'));

    const direct = await otherPlugin({ HTTP_PROXY: proxySetting(), NO_PROXY: '.invalid' });
    await createProxied(direct, 'px');
    r = await call(direct, 'Mount', { Name: 'px', ID: ID(4) });
    assert.equal(r.status, 500, r.text);
    assert.match(String(r.json.Err), new RegExp(`endpoint ${proxiedUrl()} is not reachable: cannot resolve ${PROXIED_HOST}`));
  });

  it("scrubs the proxy credentials from the client's own output (-o curldbg prints its request headers)", async () => {
    await call(plugin, 'Create', {
      Name: 'chatty',
      Opts: { type: 'oss', bucket: 'bucket-px', url: proxiedUrl(), credentials: 'local', otherOpts: '-o use_path_request_style -o curldbg' },
    });
    const r = await call(plugin, 'Mount', { Name: 'chatty', ID: ID(6) });
    assert.equal(r.status, 200, r.text);
    const mp = String(r.json.Mountpoint);
    await writeFile(path.join(mp, 'chatty.txt'), 'x\n');
    const pid = await fuseClientPid(mp);
    assert.ok(pid);
    // Its death is reported with the tail of what it printed.
    process.kill(pid, 'SIGKILL');
    for (let i = 0; !/"volume":"chatty","reason":"mount lost: s3fs was killed by SIGKILL/.test(plugin.output()); i++) {
      if (i > 600) assert.fail(`no 'mount lost' line: ${plugin.output().slice(-3000)}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    const line = plugin.output().split('\n').find((l) => l.includes('"volume":"chatty","reason":"mount lost'))!;
    assert.match(line, /Proxy-Authorization: Basic \[redacted\]/i, `the client printed no proxy credentials, so this proves nothing: ${line}`);
    for (const secret of [PROXY_PASSWORD, Buffer.from(`${PROXY_USER}:${PROXY_PASSWORD}`).toString('base64')]) assert.ok(!line.includes(secret), line);
    await call(plugin, 'Unmount', { Name: 'chatty', ID: ID(6) });
  });

  it('with the proxy gone, Mount fails naming the proxy, and leaves nothing mounted or running', async () => {
    await proxy.close();
    const r = await call(plugin, 'Mount', { Name: 'px', ID: ID(5) });
    assert.equal(r.status, 500, r.text);
    assert.match(
      String(r.json.Err),
      new RegExp(
        `endpoint ${proxiedUrl()} is not reachable: proxy http://127\\.0\\.0\\.1:${proxy.port} \\(from HTTP_PROXY\\) cannot be reached: ` +
          `127\\.0\\.0\\.1 port ${proxy.port} refused the connection; check HTTP_PROXY and NO_PROXY`,
      ),
    );
    const mp = path.join(plugin.mountRoot, 'px');
    assert.equal(await mountAt(mp), undefined);
    assert.equal(await fuseClientPid(mp), undefined);
    const st = (await call(plugin, 'Get', { Name: 'px' })).json.Volume as { Status: Record<string, unknown> };
    assert.equal(st.Status.mounted, false);
  });

  it('prints the proxy password nowhere: output, errors, Status, argv, files', async () => {
    const texts = [plugin.output(), ...others.map((p) => p.output())];
    for (const p of [plugin, ...others]) {
      for (const v of ((await call(p, 'List', {})).json.Volumes as Array<{ Name: string }>) ?? []) {
        texts.push(JSON.stringify((await call(p, 'Get', { Name: v.Name })).json));
      }
    }
    for (const t of texts) assert.ok(!t.includes(PROXY_PASSWORD), `the password is in: ${t.slice(0, 2000)}`);
    assert.ok(texts.join('').includes(`proxy http://127.0.0.1:${proxy.port} (from HTTP_PROXY)`), 'the proxy is named somewhere');
    assert.deepEqual(await processesWith(PROXY_PASSWORD), [], 'a process argv holds the password');
    for (const p of [plugin, ...others]) assert.deepEqual(await filesHolding(p.dir, PROXY_PASSWORD), []);
  });
});
