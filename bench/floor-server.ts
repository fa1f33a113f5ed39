// The floor for any Node plugin: a bare node:http server on a unix socket that answers the
// volume protocol from an in-memory Map. No framework, no validation beyond what the protocol
// needs, no persistence, no logging. Usage: node floor-server.js SOCKET MOUNT_ROOT
import { unlink } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

interface Volume {
  Name: string;
  Mountpoint: string;
  CreatedAt: string;
}

const [socket, mountRoot] = process.argv.slice(2);
if (!socket || !mountRoot) {
  console.error('usage: floor-server SOCKET MOUNT_ROOT');
  process.exit(2);
}
const CONTENT_TYPE = 'application/vnd.docker.plugins.v1+json';
const volumes = new Map<string, Volume>();

type Body = { Name?: unknown; Opts?: unknown };
type Answer = [number, unknown];

function handle(url: string, body: Body): Answer {
  const name = typeof body.Name === 'string' ? body.Name : '';
  const found = volumes.get(name);
  const notFound: Answer = [500, { Err: `volume ${name} not found` }];
  switch (url) {
    case '/Plugin.Activate':
      return [200, { Implements: ['VolumeDriver'] }];
    case '/VolumeDriver.Capabilities':
      return [200, { Capabilities: { Scope: 'local' } }];
    case '/VolumeDriver.List':
      return [200, { Volumes: [...volumes.values()], Err: '' }];
    case '/VolumeDriver.Create':
      if (!name) return [400, { Err: 'Name is required' }];
      if (!found) volumes.set(name, { Name: name, Mountpoint: path.join(mountRoot!, name), CreatedAt: new Date().toISOString() });
      return [200, { Err: '' }];
    case '/VolumeDriver.Remove':
      if (!found) return notFound;
      volumes.delete(name);
      return [200, { Err: '' }];
    case '/VolumeDriver.Get':
      return found ? [200, { Volume: found, Err: '' }] : notFound;
    case '/VolumeDriver.Path':
    case '/VolumeDriver.Mount':
      return found ? [200, { Mountpoint: found.Mountpoint, Err: '' }] : notFound;
    case '/VolumeDriver.Unmount':
      return found ? [200, { Err: '' }] : notFound;
    default:
      return [404, { Err: `${url} is not implemented` }];
  }
}

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    let answer: Answer;
    try {
      const text = Buffer.concat(chunks).toString('utf8');
      const body: unknown = text.trim() ? JSON.parse(text) : {};
      answer = typeof body === 'object' && body !== null ? handle(req.url ?? '', body as Body) : [400, { Err: 'body must be an object' }];
    } catch {
      answer = [400, { Err: 'request body is not valid JSON' }];
    }
    const data = JSON.stringify(answer[1]);
    res.writeHead(answer[0], { 'Content-Type': CONTENT_TYPE, 'Content-Length': Buffer.byteLength(data) });
    res.end(data);
  });
});
server.keepAliveTimeout = 10 * 60 * 1000; // dockerd keeps its connections, as ossnas allows
server.requestTimeout = 0;

await unlink(socket).catch(() => undefined);
server.listen(socket);
process.on('SIGTERM', () => server.close(() => process.exit(0)).closeAllConnections());
