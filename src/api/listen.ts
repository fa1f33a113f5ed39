// The unix socket, opened before anything heavy is loaded: dockerd disables a managed plugin
// whose socket is not up within ~12 s, and our target is well under a second. Requests that
// arrive before the app is ready wait for it. No server timeout may cut a slow Mount short:
// Docker's own deadlines (30 s to 2 min) are the only ones that apply.
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

export type RequestHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/**
 * When each request that had to wait for the app reached the socket (performance.now()): a call's
 * deadline counts from there, waiting included. A request that finds the app ready reaches it in
 * the same turn, so its arrival is the time the app reads (`now`), and nothing is recorded.
 */
const arrivals = new WeakMap<http.IncomingMessage, number>();

export function arrivalOf(req: http.IncomingMessage, now: number): number {
  return arrivals.get(req) ?? now;
}

/** Removes a stale socket file left by an earlier run; refuses to delete anything else. */
async function clearStaleSocket(socket: string): Promise<void> {
  try {
    const st = await lstat(socket);
    if (!st.isSocket()) throw new Error(`${socket} exists and is not a socket; refusing to replace it`);
    await unlink(socket);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

export async function listen(socket: string, handler: Promise<RequestHandler>): Promise<http.Server> {
  await mkdir(path.dirname(socket), { recursive: true, mode: 0o755 });
  await clearStaleSocket(socket);
  // Once ready, each request goes straight to the app: no promise turn, no WeakMap entry.
  let ready: RequestHandler | undefined;
  void handler.then(
    (h) => (ready = h),
    () => undefined,
  );
  const server = http.createServer((req, res) => {
    if (ready) return ready(req, res);
    arrivals.set(req, performance.now());
    handler.then(
      (h) => h(req, res),
      (err: unknown) => {
        res.statusCode = 500;
        res.end(JSON.stringify({ Err: `ossnas could not start: ${(err as Error).message}` }));
      },
    );
  });
  server.timeout = 0;
  server.requestTimeout = 0;
  // dockerd keeps idle connections forever and may reuse one just as we close it, which can
  // turn into a retried request with an empty body: keep idle connections for a long time.
  server.keepAliveTimeout = 10 * 60 * 1000;
  server.headersTimeout = 60 * 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(socket, 0o600); // dockerd, its only client, runs as root
  return server;
}
