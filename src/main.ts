// Entry point, the same for the managed plugin and a plain host process. Order matters: the
// socket listens first, state loads right after, and calls wait for it.
import type http from 'node:http';
import { createApp, listen } from './api/server.js';
import { createBackends } from './backends/index.js';
import { VolumeDriver } from './driver/driver.js';
import { createLogger } from './log.js';
import { loadSettings, SettingsError } from './settings.js';

const STOP_DEADLINE_MS = 8000; // dockerd sends SIGKILL 10 s after SIGTERM

async function main(): Promise<void> {
  // Everything this process creates (state, credential files) is private unless chmod'ed.
  process.umask(0o077);

  let settings;
  try {
    settings = loadSettings();
  } catch (err) {
    if (err instanceof SettingsError) {
      console.error(`ossnas: bad setting: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(settings.logLevel);
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));

  const backends = createBackends();
  let resolveReady!: (d: VolumeDriver) => void;
  let rejectReady!: (e: unknown) => void;
  const ready = new Promise<VolumeDriver>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  ready.catch(() => undefined);

  const server = await listen(createApp(ready, log), settings.socket);
  log.info({ socket: settings.socket, mountRoot: settings.mountRoot, stateDir: settings.stateDir }, 'listening');

  let driver: VolumeDriver;
  try {
    driver = await VolumeDriver.open(settings, backends, log);
  } catch (err) {
    // Answering calls without state would tell Docker that volumes do not exist, and Docker
    // would forget them. Better to stop: Docker sees a dead plugin, keeps its volumes, retries.
    log.fatal({ err }, 'cannot load state; exiting');
    rejectReady(err);
    server.close();
    process.exit(1);
  }
  resolveReady(driver);
  log.info({ volumes: driver.list().length }, 'state loaded');

  installStopHandlers(server, driver, log);
}

function installStopHandlers(server: http.Server, driver: VolumeDriver, log: ReturnType<typeof createLogger>): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping: finishing calls in flight; mounts stay in place');
    const force = setTimeout(() => {
      log.warn('calls still in flight at the stop deadline; exiting anyway');
      process.exit(0);
    }, STOP_DEADLINE_MS);
    force.unref();
    server.close(() => {
      void driver.flush().finally(() => process.exit(0));
    });
    server.closeIdleConnections();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

void main();
