// Reaching a server before asking the kernel to: name resolution and a TCP connect, each with a
// short deadline, so a dead or unreachable server is reported in seconds rather than by a mount
// call that hangs until Docker gives up.
import { lookup } from 'node:dns/promises';
import { connect, isIP } from 'node:net';

export class UnreachableError extends Error {}

function deadline<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UnreachableError(message)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** An IP address for `host` (itself when it is one). */
export async function resolveHost(host: string, timeoutMs: number): Promise<string> {
  if (isIP(host)) return host;
  const found = await deadline(
    lookup(host).catch((err: NodeJS.ErrnoException) => {
      throw new UnreachableError(`cannot resolve ${host}: ${err.code ?? err.message}`);
    }),
    timeoutMs,
    `cannot resolve ${host}: no answer within ${timeoutMs} ms`,
  );
  return found.address;
}

/** Resolves when something accepts a TCP connection on address:port; throws saying what happened. */
export async function probeTcp(address: string, port: number, timeoutMs: number): Promise<void> {
  const socket = connect({ host: address, port });
  try {
    await deadline(
      new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', (err: NodeJS.ErrnoException) => {
          const why = err.code === 'ECONNREFUSED' ? 'refused the connection' : `is unreachable (${err.code ?? err.message})`;
          reject(new UnreachableError(`${address} port ${port} ${why}`));
        });
      }),
      timeoutMs,
      `${address} port ${port} did not answer within ${Math.round(timeoutMs / 100) / 10} s`,
    );
  } finally {
    socket.destroy();
  }
}

/**
 * The probe for an endpoint reached through a proxy: the endpoint's name is the proxy's to
 * resolve (it may not resolve here at all), so this resolves and connects to the proxy, then asks
 * it for the endpoint as the client will: CONNECT host:port for https (a 2xx answer means the
 * tunnel is open), an absolute-URI HEAD for http (any answer but 502/503/504 means the proxy
 * reached the endpoint; 407 that it wants other credentials). Messages name the proxy by
 * `proxyName` (no credentials); `authorization` is sent as Proxy-Authorization.
 */
export async function probeThroughProxy(
  proxy: { host: string; port: number; name: string; authorization?: string },
  target: { host: string; https: boolean },
  timeoutMs: number,
): Promise<void> {
  const started = performance.now();
  const left = () => Math.max(1, timeoutMs - (performance.now() - started));
  const fail = (why: string) => new UnreachableError(`${proxy.name} cannot be reached: ${why}`);
  let address: string;
  try {
    address = await resolveHost(proxy.host.replace(/^\[(.*)\]$/, '$1'), left());
    await probeTcp(address, proxy.port, left());
  } catch (err) {
    throw fail((err as Error).message);
  }
  const auth = proxy.authorization ? `Proxy-Authorization: ${proxy.authorization}\r\n` : '';
  const request = target.https
    ? `CONNECT ${target.host} HTTP/1.1\r\nHost: ${target.host}\r\n${auth}\r\n`
    : `HEAD http://${target.host}/ HTTP/1.1\r\nHost: ${target.host}\r\n${auth}Connection: close\r\n\r\n`;
  const what = target.https ? `CONNECT ${target.host}` : `a request for http://${target.host}/`;
  const socket = connect({ host: address, port: proxy.port });
  let statusLine: string;
  try {
    statusLine = await deadline(
      new Promise<string>((resolve, reject) => {
        let got = '';
        socket.once('connect', () => socket.write(request));
        socket.on('data', (chunk: Buffer) => {
          got += chunk.toString('latin1');
          const end = got.indexOf('\r\n');
          if (end >= 0) resolve(got.slice(0, end));
          else if (got.length > 4096) reject(fail(`it did not answer ${what} with HTTP`));
        });
        socket.once('end', () => reject(fail(`it closed the connection without answering ${what}`)));
        socket.once('error', (err: NodeJS.ErrnoException) => reject(fail(`${err.code ?? err.message} while asking it for ${target.host}`)));
      }),
      left(),
      `${proxy.name} did not answer ${what} within ${Math.round(timeoutMs / 100) / 10} s`,
    );
  } finally {
    socket.destroy();
  }
  const m = /^HTTP\/\d(?:\.\d)? (\d{3})(.*)$/.exec(statusLine);
  if (!m) throw fail(`it did not answer ${what} with HTTP`);
  const status = Number(m[1]);
  const said = `${status}${m[2]!.trimEnd()}`;
  if (status === 407) {
    const creds = proxy.authorization ? 'other credentials' : 'credentials';
    throw new UnreachableError(`${proxy.name} refused ${what}: ${said} (it wants ${creds}: http://user:password@host:port in the setting)`);
  }
  const ok = target.https ? status >= 200 && status < 300 : ![502, 503, 504].includes(status);
  if (!ok) throw new UnreachableError(`${proxy.name} answered ${what} with ${said}: the proxy cannot reach the endpoint or does not allow it`);
}
