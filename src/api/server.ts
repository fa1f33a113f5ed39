// The HTTP server on a unix socket. It listens before anything else happens (dockerd gives a
// managed plugin ~12 s, and our target is under a second), and no server timeout can cut a
// slow Mount short: Docker's own deadlines (30 s to 2 min) are the only ones that apply.
import { lstat, mkdir, chmod, unlink } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import Koa from 'koa';
import type { VolumeDriver } from '../driver/driver.js';
import type { Logger } from '../log.js';
import { createRouter, protocolMiddleware } from './routes.js';

export function createApp(ready: Promise<VolumeDriver>, log: Logger): Koa {
  const app = new Koa();
  app.silent = true; // errors are answered and logged by protocolMiddleware
  const router = createRouter(ready);
  app.use(protocolMiddleware(log));
  app.use(router.routes());
  return app;
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

export async function listen(app: Koa, socket: string): Promise<http.Server> {
  await mkdir(path.dirname(socket), { recursive: true, mode: 0o755 });
  await clearStaleSocket(socket);
  const server = http.createServer(app.callback());
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
  await chmod(socket, 0o660);
  return server;
}
