// The ECS API through a proxy. Alibaba Cloud's SDK declares proxy options (Config and
// RuntimeOptions httpProxy/httpsProxy/noProxy) but ignores them: @darabonba/typescript 1.0.5's
// doAction hands httpx.request only timeouts, TLS options and (with keepAlive) a plain agent,
// never a proxy agent, and neither the environment nor Node's global agents reach httpx's own
// (measured: no request at the proxy with any of them). Upstream: aliyun/darabonba-openapi#134
// "The httpProxy setting doesn't work" (open), aliyun/alibabacloud-typescript-sdk#5.
//
// So this module wraps the request function of the httpx instance the SDK calls, once, and the
// wrapper adds an agent only to requests made inside withProxy(), that is inside one of our ECS
// calls (an AsyncLocalStorage scope): anything else that uses httpx in this process is left as it
// was. A request that already has an agent keeps it. When a later SDK honours its own options,
// this can go.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Agent } from 'node:http';
import { createRequire } from 'node:module';
import type { OutboundProxy } from '../../proxy.js';

type Request = (url: string, opts?: Record<string, unknown>) => Promise<unknown>;

const scope = new AsyncLocalStorage<Agent>();
let installed: Promise<void> | undefined;

function install(): Promise<void> {
  installed ??= (async () => {
    // The httpx that @darabonba/typescript itself resolves (it reads its exports through live getters).
    const dara = createRequire(import.meta.url).resolve('@darabonba/typescript');
    const httpx = createRequire(dara)('httpx') as { request: Request };
    if (typeof httpx.request !== 'function') throw new Error('the SDK has changed: httpx.request is not a function, so no proxy can be set for the ECS API');
    const plain = httpx.request;
    httpx.request = function (this: unknown, url: string, opts?: Record<string, unknown>) {
      const agent = scope.getStore();
      return plain.call(this, url, agent && !opts?.agent ? { ...opts, agent } : opts);
    };
  })();
  return installed;
}

const agents = new Map<string, Agent>();

/** One agent per proxy and scheme, kept: it holds the tunnels' keep-alive connections. */
async function agentFor(proxy: OutboundProxy, https: boolean): Promise<Agent> {
  const key = `${https ? 'https' : 'http'} ${proxy.url}`;
  let agent = agents.get(key);
  if (!agent) {
    // https: a CONNECT tunnel, TLS end to end (the certificate checked is the endpoint's);
    // http: absolute-URI requests, which proxies accept on any port (many refuse CONNECT but to 443).
    agent = https
      ? new (await import('https-proxy-agent')).HttpsProxyAgent(proxy.url, { keepAlive: true })
      : new (await import('http-proxy-agent')).HttpProxyAgent(proxy.url, { keepAlive: true });
    agents.set(key, agent);
  }
  return agent;
}

/** Runs `fn` (ECS SDK calls to `endpoint`) with its requests sent through `proxy`; without one, as it is. */
export async function withProxy<T>(proxy: OutboundProxy | undefined, endpoint: string, fn: () => Promise<T>): Promise<T> {
  if (!proxy) return fn();
  await install();
  const agent = await agentFor(proxy, new URL(endpoint).protocol === 'https:');
  return scope.run(agent, fn);
}
