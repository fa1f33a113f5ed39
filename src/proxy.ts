// Outbound proxies (HTTP_PROXY, HTTPS_PROXY, NO_PROXY): which proxy, if any, a request to a URL
// takes. One matcher for everything that goes out, so that the endpoint probe, the ECS API and
// the FUSE clients always take the same route.
//
// NO_PROXY is matched as libcurl 7.88 (what s3fs and ossfs use) matches it, measured on Debian 12
// with curl 7.88.1 and s3fs 1.90, not as other tools do (npm proxy-from-env, for one, matches
// `example.com` only exactly and has no CIDR): entries are comma-separated and case-insensitive;
// `example.com` and `.example.com` both cover example.com and every name below it, on a label
// boundary (not `badexample.com`); an IP address matches that address and a CIDR (`10.0.0.0/8`)
// the addresses in it; `*` alone means no proxy at all. curl 7.88 never matches an entry with a
// port or a `*.example.com` entry: the first are refused when the settings are read, the second
// are handed on as `.example.com`, which is what they mean.
import { BlockList, isIP } from 'node:net';

/** A proxy from the settings. */
export interface OutboundProxy {
  /** http://[user:password@]host:port, as the operator gave it (credentials included): for the FUSE clients and the agents only. */
  url: string;
  /** http://host:port, no credentials: the form every message uses. */
  display: string;
  /** The setting it came from (HTTP_PROXY, https_proxy...), for messages. */
  from: string;
}

export interface ProxySettings {
  /** For http:// endpoints. */
  http?: OutboundProxy;
  /** For https:// endpoints (curl does not fall back to the http one, nor do we). */
  https?: OutboundProxy;
  /** The NO_PROXY entries in force: the operator's, then ALWAYS_DIRECT and the metadata service's host. */
  noProxy: string[];
}

/**
 * Hosts never reached through a proxy. Loopback because curl 7.88 has no implicit bypass for it;
 * 100.100.100.200 is the ECS metadata service, which answers on the instance's own link only and
 * which no proxy could reach for us.
 */
export const ALWAYS_DIRECT: readonly string[] = ['localhost', '127.0.0.1', '::1', '100.100.100.200'];

/** Thrown with a message that names the setting and never holds the value's credentials. */
export class ProxySettingError extends Error {}

/**
 * A proxy setting's value: http://[user:password@]host:port (a value with no scheme means http://,
 * as curl reads it). The port is required: curl assumes 1080 where a URL parser assumes 80.
 */
export function parseProxyUrl(name: string, value: string): OutboundProxy {
  const v = value.trim();
  const shape = `${name} must be http://[user:password@]host:port (e.g. http://proxy.example.com:3128)`;
  let u: URL;
  try {
    u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(v) ? v : `http://${v}`);
  } catch {
    // Not echoed: a malformed value can still hold a user:password part.
    throw new ProxySettingError(`${shape}; the value given is not a URL`);
  }
  const display = `${u.protocol}//${u.host}`;
  if (u.protocol !== 'http:') {
    throw new ProxySettingError(`${shape}; only http:// proxies are supported (an https:// endpoint is still reached through one, by CONNECT), got ${u.protocol}//`);
  }
  if (!u.hostname) throw new ProxySettingError(`${shape}; the value given has no host`);
  if (!u.port) throw new ProxySettingError(`${shape}; ${display} has no port (curl would assume 1080, other clients 80)`);
  if ((u.pathname && u.pathname !== '/') || u.search || u.hash) throw new ProxySettingError(`${shape}; ${display} is followed by a path`);
  return { url: `${u.protocol}//${u.username || u.password ? `${u.username}:${u.password}@` : ''}${u.host}`, display, from: name };
}

const PORT_ENTRY = /^(?:\[[^\]]*\]|[^:]*):[0-9]*$/;

/** The operator's NO_PROXY as a list of normalised entries. */
export function parseNoProxy(name: string, value: string): string[] {
  const out: string[] = [];
  for (const raw of value.split(',')) {
    let e = raw.trim().toLowerCase();
    if (!e) continue;
    if (e === '*') return ['*'];
    if (PORT_ENTRY.test(e)) {
      throw new ProxySettingError(`${name}: entry '${e}' has a port; list hosts without ports (curl, which the FUSE clients use, never matches an entry with a port)`);
    }
    if (e.startsWith('*.')) e = e.slice(1); // '.example.com': curl 7.88 would ignore '*.example.com'
    if (/[\s/]/.test(e) && !isCidr(e)) {
      throw new ProxySettingError(`${name}: entry '${e}' is neither a host name, an IP address nor an address range such as 10.0.0.0/8`);
    }
    if (e.includes('*')) throw new ProxySettingError(`${name}: entry '${e}': '*' is only accepted alone (no proxy at all) or as a leading '*.'`);
    out.push(e);
  }
  return out;
}

function isCidr(entry: string): boolean {
  const m = /^(.+)\/([0-9]{1,3})$/.exec(entry);
  if (!m) return false;
  const family = isIP(m[1]!.replace(/^\[|\]$/g, ''));
  return family !== 0 && Number(m[2]) <= (family === 4 ? 32 : 128);
}

/** The NO_PROXY in force: the operator's entries, then what is always direct (none when the operator said '*'). */
export function effectiveNoProxy(operator: string[], metadataUrl: string): string[] {
  if (operator.includes('*')) return ['*'];
  const metadataHost = new URL(metadataUrl).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return [...new Set([...operator, ...ALWAYS_DIRECT, metadataHost])];
}

/** Whether NO_PROXY exempts `host` (a name or an IP address, IPv6 with or without brackets). */
export function bypassesProxy(host: string, noProxy: readonly string[]): boolean {
  const h = host.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase();
  const family = isIP(h);
  for (const raw of noProxy) {
    if (raw === '*') return true;
    const entry = raw.replace(/^\./, '').replace(/\.$/, '');
    if (!entry) continue;
    if (family !== 0) {
      const slash = entry.indexOf('/');
      const addr = (slash < 0 ? entry : entry.slice(0, slash)).replace(/^\[|\]$/g, '');
      const entryFamily = isIP(addr);
      if (entryFamily !== family) continue;
      const list = new BlockList();
      const type = family === 4 ? 'ipv4' : 'ipv6';
      if (slash < 0) list.addAddress(addr, type);
      else list.addSubnet(addr, Number(entry.slice(slash + 1)), type);
      if (list.check(h, type)) return true;
    } else if (!entry.includes('/') && (h === entry || h.endsWith(`.${entry}`))) {
      return true;
    }
  }
  return false;
}

/** The proxy a request to `url` goes through, or undefined: direct. */
export function proxyFor(url: string, settings: ProxySettings | undefined): OutboundProxy | undefined {
  if (!settings) return undefined;
  const u = new URL(url);
  const proxy = u.protocol === 'https:' ? settings.https : u.protocol === 'http:' ? settings.http : undefined;
  if (!proxy || bypassesProxy(u.hostname, settings.noProxy)) return undefined;
  return proxy;
}

/**
 * What a FUSE client's environment needs for the proxies: libcurl's own variables, lowercase
 * (libcurl ignores an uppercase HTTP_PROXY on purpose, against httpoxy), whatever case the
 * operator used. Nothing when no proxy is set.
 */
export function clientProxyEnv(settings: ProxySettings | undefined): Record<string, string> {
  if (!settings || (!settings.http && !settings.https)) return {};
  return {
    ...(settings.http && { http_proxy: settings.http.url }),
    ...(settings.https && { https_proxy: settings.https.url }),
    no_proxy: settings.noProxy.join(','),
  };
}

/** The proxies' credentials, in every form they may be printed in, for scrubbing text that leaves the plugin. */
export function proxySecrets(settings: ProxySettings | undefined): string[] {
  const out = new Set<string>();
  for (const p of [settings?.http, settings?.https]) {
    if (!p) continue;
    const u = new URL(p.url);
    if (!u.username && !u.password) continue;
    out.add(p.url);
    out.add(`${u.username}:${u.password}`);
    // As libcurl sends them, and prints them with s3fs's -o curldbg: Basic Proxy-Authorization.
    out.add(proxyAuthorization(p)!.replace(/^Basic /, ''));
    // The user name alone is not scrubbed: a short common one ('proxy') would blank ordinary words.
    if (u.password) {
      out.add(u.password);
      out.add(decoded(u.password));
    }
  }
  return [...out];
}

/** The Proxy-Authorization header value for a proxy URL with credentials, or undefined. */
export function proxyAuthorization(proxy: OutboundProxy): string | undefined {
  const u = new URL(proxy.url);
  if (!u.username && !u.password) return undefined;
  return `Basic ${Buffer.from(`${decoded(u.username)}:${decoded(u.password)}`).toString('base64')}`;
}

/** A URL's user or password part as sent: percent-escapes decoded (a malformed one is taken as it is). */
function decoded(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

/** How a message names the proxy a request went through: "proxy http://p:3128 (from HTTPS_PROXY)". */
export function describeProxy(proxy: OutboundProxy): string {
  return `proxy ${proxy.display} (from ${proxy.from})`;
}
