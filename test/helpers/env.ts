// Temporary directories, settings, a quiet logger and free ports for tests.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createLogger, type Logger } from '../../src/log.js';
import type { Settings } from '../../src/settings.js';
import { Writable } from 'node:stream';
import { createServer } from 'node:net';

export async function tempDir(prefix = 'ossnas-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export function testSettings(dir: string, overrides: Partial<Settings> = {}): Settings {
  return {
    socket: path.join(dir, 'plugin.sock'),
    stateDir: path.join(dir, 'state'),
    mountRoot: path.join(dir, 'volumes'),
    credentialsDir: path.join(dir, 'credentials'),
    runDir: path.join(dir, 'run'),
    hostPid: 'auto',
    logLevel: 'debug',
    mountTimeoutMs: 10_000,
    fuseDiskFreeMb: 512,
    shareClients: false,
    ossDefaults: {},
    scope: 'local',
    // Nothing answers there: a test that needs the cloud starts its own control plane (ecs-cloud.ts).
    cloud: { metadataUrl: 'http://127.0.0.1:9', deviceByIdDir: path.join(dir, 'by-id') },
    proxy: { noProxy: ['localhost', '127.0.0.1', '::1', '100.100.100.200'] },
    ...overrides,
  };
}

/** A logger whose lines are kept in memory, so tests can look for leaked secrets in them. */
export function memoryLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { log: createLogger('debug', sink), lines };
}

/** Whether tests that need root (real mounts, dockerd) can run here. In CI they must. */
export function rootSkipReason(): string | false {
  if (process.getuid?.() === 0) return false;
  if (process.env.CI) throw new Error('this test needs root, and CI runs as root: refusing to skip');
  return 'needs root';
}

/** A TCP port on 127.0.0.1 free at this moment, for a server the test starts right after. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}
