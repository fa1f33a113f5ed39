// A forward HTTP proxy for tests, as squid or tinyproxy serve one: absolute-URI requests
// (`GET http://host:port/path`, what clients send for http:// URLs) forwarded as they are (the Host
// header untouched: S3 and ECS signatures cover it), and CONNECT tunnels (https:// URLs). It
// records each request's method and target, can demand credentials (407 without them), and
// resolves the names in `hostMap` itself, so that a made-up name (s3.proxied.invalid: .invalid
// never resolves, RFC 6761) reaches a local server only through the proxy. Hand-written: the npm
// `proxy` package is not a dependency here, and this is all a test needs.
import { request as httpRequest, createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface ProxyRecord {
  method: string;
  /** host:port asked for. */
  target: string;
  /** The request target as sent: an absolute URI, or host:port for CONNECT. */
  url: string;
  /** Whether the request had the credentials the proxy wants (true when it wants none). */
  authorized: boolean;
}

export interface ForwardProxy {
  port: number;
  /** http://127.0.0.1:PORT */
  url: string;
  /** Every request so far, oldest first. */
  log: ProxyRecord[];
  /** The requests for one host (any port). */
  requestsFor(host: string): ProxyRecord[];
  /** Stops listening and cuts every connection and tunnel. */
  close(): Promise<void>;
}

export interface ForwardProxyOptions {
  /** Host name -> the address the proxy connects to for it (the port is the request's). */
  hostMap?: Record<string, string>;
  /** 'user:password' the proxy wants as Basic Proxy-Authorization. */
  credentials?: string;
}

export async function startForwardProxy(opts: ForwardProxyOptions = {}): Promise<ForwardProxy> {
  const log: ProxyRecord[] = [];
  const open = new Set<Duplex>();
  const track = (s: Duplex) => (open.add(s), s.on('close', () => open.delete(s)), s.on('error', () => undefined));
  const resolve = (host: string) => opts.hostMap?.[host.replace(/^\[|\]$/g, '').toLowerCase()] ?? host.replace(/^\[|\]$/g, '');
  const authorized = (req: IncomingMessage) =>
    !opts.credentials || req.headers['proxy-authorization'] === `Basic ${Buffer.from(opts.credentials).toString('base64')}`;
  const record = (req: IncomingMessage, target: string) => {
    const r = { method: req.method ?? '', target, url: req.url ?? '', authorized: authorized(req) };
    log.push(r);
    return r;
  };

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let u: URL;
    try {
      u = new URL(req.url ?? '');
    } catch {
      res.writeHead(400).end('absolute URI expected\n');
      return;
    }
    const port = Number(u.port) || 80;
    if (!record(req, `${u.hostname}:${port}`).authorized) {
      res.writeHead(407, { 'Proxy-Authenticate': 'Basic realm="test"' }).end();
      return;
    }
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    delete headers['proxy-connection'];
    const upstream = httpRequest({ host: resolve(u.hostname), port, method: req.method, path: u.pathname + u.search, headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (!res.headersSent) res.writeHead(502).end(`proxy: ${err.code ?? err.message}\n`);
      else res.destroy();
    });
    req.pipe(upstream);
  });
  server.on('connection', track);
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    track(client);
    const m = /^(.*):(\d+)$/.exec(req.url ?? '');
    if (!m) return void client.end('HTTP/1.1 400 Bad Request\r\n\r\n');
    if (!record(req, req.url!).authorized) {
      return void client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n\r\n');
    }
    const upstream = connect(Number(m[2]), resolve(m[1]!));
    track(upstream);
    let established = false;
    upstream.once('connect', () => {
      established = true;
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client).pipe(upstream);
    });
    upstream.once('error', () => (established ? client.destroy() : client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n')));
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as { port: number }).port)));
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    log,
    requestsFor: (host) => log.filter((r) => r.target.replace(/:\d+$/, '').replace(/^\[|\]$/g, '') === host),
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        for (const s of open) s.destroy();
        server.closeAllConnections();
      }),
  };
}
