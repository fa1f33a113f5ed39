// The NO_PROXY matcher against the table measured with curl 7.88.1 and s3fs 1.90 (what the FUSE
// clients do is the oracle: our probe and the ECS API must take the same route), and the proxy
// settings as loadSettings reads and refuses them.
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, it } from 'node:test';
import { probeThroughProxy } from '../../src/host/net.js';
import { bypassesProxy, clientProxyEnv, effectiveNoProxy, parseNoProxy, proxyAuthorization, proxyFor, proxySecrets } from '../../src/proxy.js';
import { loadSettings, SettingsError } from '../../src/settings.js';
import { startForwardProxy } from '../helpers/forward-proxy.js';

const BASE = { OSSNAS_SOCKET: '/run/x.sock' };

describe('NO_PROXY as curl 7.88 reads it', () => {
  // [NO_PROXY, host, direct?] — each row measured with `http_proxy=... no_proxy=X curl http://H:port/`.
  const table: Array<[string, string, boolean]> = [
    ['example.com', 'sub.example.com', true],
    ['example.com', 'example.com', true],
    ['.example.com', 'sub.example.com', true],
    ['.example.com', 'example.com', true],
    ['ample.com', 'example.com', false],
    ['*', 'anything.example.org', true],
    ['*', '10.1.2.3', true],
    ['EXAMPLE.com', 'sub.example.com', true],
    ['example.com', 'SUB.Example.COM', true],
    ['127.0.0.0/8', '127.0.0.1', true],
    ['10.0.0.0/8', '11.0.0.1', false],
    ['foo, localhost', 'localhost', true],
    ['', 'localhost', false],
    ['127.0.0.1', '127.0.0.1', true],
    ['127.0.0.1', '127.0.0.2', false],
    ['::1', '[::1]', true],
    ['fd00::/8', 'fd12::5', true],
    ['fd00::/8', '10.0.0.1', false],
    ['10.0.0.0/8', 'ten.example.com', false],
    ['aliyuncs.com', 'oss-cn-hangzhou-internal.aliyuncs.com', true],
    ['-internal.aliyuncs.com', 'oss-cn-hangzhou-internal.aliyuncs.com', false],
  ];
  for (const [noProxy, host, direct] of table) {
    it(`NO_PROXY='${noProxy}', host ${host}: ${direct ? 'direct' : 'proxied'}`, () => {
      assert.equal(bypassesProxy(host, parseNoProxy('NO_PROXY', noProxy)), direct);
    });
  }

  it("hands '*.example.com' on as '.example.com' (curl 7.88 would ignore it), and refuses entries with a port", () => {
    assert.deepEqual(parseNoProxy('NO_PROXY', ' *.Example.com , foo '), ['.example.com', 'foo']);
    assert.equal(bypassesProxy('a.example.com', parseNoProxy('NO_PROXY', '*.example.com')), true);
    assert.throws(() => parseNoProxy('NO_PROXY', 'foo,127.0.0.1:9000'), /NO_PROXY: entry '127\.0\.0\.1:9000' has a port/);
    assert.throws(() => parseNoProxy('NO_PROXY', 'host.example:80'), /has a port/);
    assert.throws(() => parseNoProxy('NO_PROXY', '[::1]:80'), /has a port/);
    assert.throws(() => parseNoProxy('NO_PROXY', '10.0.0.0/99'), /neither a host name/);
    assert.throws(() => parseNoProxy('NO_PROXY', 'a*b.com'), /'\*' is only accepted/);
    assert.deepEqual(parseNoProxy('NO_PROXY', 'a,*,b'), ['*']);
  });

  it('always lets loopback and the metadata service go direct, unless everything does', () => {
    const list = effectiveNoProxy(['corp.example'], 'http://169.254.9.9:8080');
    assert.deepEqual(list, ['corp.example', 'localhost', '127.0.0.1', '::1', '100.100.100.200', '169.254.9.9']);
    for (const h of ['localhost', '127.0.0.1', '[::1]', '100.100.100.200', '169.254.9.9', 'x.corp.example']) assert.ok(bypassesProxy(h, list), h);
    assert.equal(bypassesProxy('oss-cn-hangzhou.aliyuncs.com', list), false);
    assert.deepEqual(effectiveNoProxy(['*'], 'http://100.100.100.200'), ['*']);
  });

  it('picks the proxy by the scheme, with no fallback from https to the http one (as curl)', () => {
    const s = loadSettings({ ...BASE, HTTP_PROXY: 'http://p1:3128', NO_PROXY: 'internal.example' });
    assert.equal(proxyFor('http://oss.example.com', s.proxy)?.display, 'http://p1:3128');
    assert.equal(proxyFor('https://oss.example.com', s.proxy), undefined);
    assert.equal(proxyFor('http://a.internal.example:9000', s.proxy), undefined);
    assert.equal(proxyFor('http://127.0.0.1:9000', s.proxy), undefined);
    assert.equal(proxyFor('http://100.100.100.200', s.proxy), undefined);
  });
});

describe('proxy settings', () => {
  it('reads HTTP_PROXY, HTTPS_PROXY and NO_PROXY (uppercase winning, lowercase accepted), none by default', () => {
    assert.deepEqual(loadSettings(BASE).proxy, { noProxy: ['localhost', '127.0.0.1', '::1', '100.100.100.200'] });
    const s = loadSettings({ ...BASE, HTTPS_PROXY: 'proxy.example:3128', https_proxy: 'http://other:1', http_proxy: 'http://low:8080/', no_proxy: '.corp' });
    assert.deepEqual(s.proxy.https, { url: 'http://proxy.example:3128', display: 'http://proxy.example:3128', from: 'HTTPS_PROXY' });
    assert.deepEqual(s.proxy.http, { url: 'http://low:8080', display: 'http://low:8080', from: 'http_proxy' });
    assert.deepEqual(s.proxy.noProxy, ['.corp', 'localhost', '127.0.0.1', '::1', '100.100.100.200']);
  });

  it('refuses a bad value naming the setting, and never echoes its credentials', () => {
    const bad: Array<[Record<string, string>, RegExp]> = [
      [{ HTTP_PROXY: 'https://user:Sekr1t-pw@proxy:3128' }, /^HTTP_PROXY must be http:\/\/\[user:password@\]host:port .*only http:\/\/ proxies/],
      [{ HTTPS_PROXY: 'socks5://user:Sekr1t-pw@proxy:1080' }, /^HTTPS_PROXY must be .*only http:\/\/ proxies/],
      [{ HTTPS_PROXY: 'http://user:Sekr1t-pw@proxy' }, /^HTTPS_PROXY must be .*http:\/\/proxy has no port/],
      [{ HTTP_PROXY: 'http://user:Sekr1t-pw@proxy:3128/path' }, /^HTTP_PROXY must be .*followed by a path/],
      [{ HTTP_PROXY: 'http://user:Sekr1t-pw@pro xy:3128' }, /^HTTP_PROXY must be .*not a URL/],
      [{ http_proxy: 'http://user:Sekr1t-pw@[::1:3128' }, /^http_proxy must be .*not a URL/],
      [{ NO_PROXY: 'a.example,b.example:443' }, /^NO_PROXY: entry 'b\.example:443' has a port/],
    ];
    for (const [env, re] of bad) {
      const err = (() => {
        try {
          loadSettings({ ...BASE, ...env });
        } catch (e) {
          return e as Error;
        }
        return undefined;
      })();
      assert.ok(err instanceof SettingsError, JSON.stringify(env));
      assert.match(err.message, re);
      assert.ok(!err.message.includes('Sekr1t'), `the message echoes the password: ${err.message}`);
    }
  });

  it('gives the FUSE client lowercase variables only, and lists the credentials for scrubbing', () => {
    const s = loadSettings({ ...BASE, HTTP_PROXY: 'http://user:p%40ss-word@proxy:3128', NO_PROXY: 'corp' });
    assert.deepEqual(clientProxyEnv(s.proxy), {
      http_proxy: 'http://user:p%40ss-word@proxy:3128',
      no_proxy: 'corp,localhost,127.0.0.1,::1,100.100.100.200',
    });
    assert.deepEqual(clientProxyEnv(loadSettings(BASE).proxy), {});
    const secrets = proxySecrets(s.proxy);
    const basic = Buffer.from('user:p@ss-word').toString('base64');
    for (const v of ['p%40ss-word', 'p@ss-word', 'user:p%40ss-word', 'http://user:p%40ss-word@proxy:3128', basic]) assert.ok(secrets.includes(v), v);
    assert.ok(!secrets.includes('user'), 'a user name alone would blank ordinary words');
    assert.equal(proxyAuthorization(s.proxy.http!), `Basic ${Buffer.from('user:p@ss-word').toString('base64')}`);
    assert.equal(s.proxy.http!.display, 'http://proxy:3128');
  });
});

describe('the endpoint probe through a proxy', () => {
  it('asks the proxy for the endpoint (CONNECT for https, an absolute URI for http) and names the proxy when it fails', async () => {
    const endpoint = createServer((s) => s.end());
    await new Promise<void>((r) => endpoint.listen(0, '127.0.0.1', r));
    const port = (endpoint.address() as { port: number }).port;
    const proxy = await startForwardProxy({ hostMap: { 'oss.proxied.invalid': '127.0.0.1' }, credentials: 'u:Probe-Pass-1' });
    const name = `proxy ${proxy.url} (from HTTPS_PROXY)`;
    const via = (authorization?: string) => ({ host: '127.0.0.1', port: proxy.port, name, ...(authorization && { authorization }) });
    const good = `Basic ${Buffer.from('u:Probe-Pass-1').toString('base64')}`;
    const refusal = (p: Promise<void>) => p.then(() => 'resolved', (e: Error) => e.message);
    try {
      await probeThroughProxy(via(good), { host: `oss.proxied.invalid:${port}`, https: true }, 10_000);
      assert.deepEqual(proxy.log.map((x) => [x.method, x.url, x.authorized]), [['CONNECT', `oss.proxied.invalid:${port}`, true]]);

      // http: an absolute URI; any answer of the endpoint's counts, the proxy's 502 does not.
      endpoint.close();
      assert.equal(
        await refusal(probeThroughProxy(via(good), { host: `oss.proxied.invalid:${port}`, https: false }, 10_000)),
        `${name} answered a request for http://oss.proxied.invalid:${port}/ with 502 Bad Gateway: the proxy cannot reach the endpoint or does not allow it`,
      );
      assert.equal(
        await refusal(probeThroughProxy(via(good), { host: `oss.proxied.invalid:${port}`, https: true }, 10_000)),
        `${name} answered CONNECT oss.proxied.invalid:${port} with 502 Bad Gateway: the proxy cannot reach the endpoint or does not allow it`,
      );
      assert.match(await refusal(probeThroughProxy(via(), { host: `oss.proxied.invalid:${port}`, https: true }, 10_000)), new RegExp(`^${name.replace(/[().]/g, '\\$&')} refused CONNECT .*: 407 Proxy Authentication Required \\(it wants credentials`));
    } finally {
      await proxy.close();
      endpoint.close();
    }
    assert.equal(
      await refusal(probeThroughProxy(via(good), { host: 'oss.proxied.invalid:443', https: true }, 10_000)),
      `${name} cannot be reached: 127.0.0.1 port ${proxy.port} refused the connection`,
    );
  });
});
