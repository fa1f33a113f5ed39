// An HTTP endpoint as operators write it: a bare host name (https meant, as Alibaba Cloud's pages
// list endpoints) or scheme://host[:port]. OSS volumes' url and the cloud settings both take one.

/** 'oss-cn-hangzhou.aliyuncs.com', 'https://host', 'http://127.0.0.1:9000' -> 'scheme://host[:port]' */
export function normalizeEndpoint(value: string): string {
  const v = value.trim();
  if (!v || /[\s,]/.test(v)) throw new Error('an endpoint such as oss-cn-hangzhou.aliyuncs.com or http://127.0.0.1:9000');
  let u: URL;
  try {
    u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(v) ? v : `https://${v}`);
  } catch {
    // The value is not echoed: a malformed URL can still hold a user:secret@ part.
    throw new Error('not an endpoint; expected a host name or http(s)://host[:port]');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('only http:// and https:// endpoints are accepted');
  if (u.username || u.password) throw new Error('an endpoint must not contain credentials; use the credentials option');
  if ((u.pathname && u.pathname !== '/') || u.search || u.hash) {
    throw new Error('an endpoint is scheme://host[:port] with no path; use the path option for a sub-path');
  }
  return `${u.protocol}//${u.host}`;
}
