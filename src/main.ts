// Entry point, the same for the managed plugin and a plain host process. Order matters: the
// socket listens first (only node:http is loaded by then), the app and state load right after,
// and calls that arrive meanwhile wait for them.
import type http from 'node:http';
import { listen, type RequestHandler } from './api/listen.js';
import { loadSettings, SettingsError, type Settings } from './settings.js';
import type { VolumeDriver } from './driver/driver.js';
import type { Logger } from './log.js';

const STOP_DEADLINE_MS = 8000; // dockerd sends SIGKILL 10 s after SIGTERM

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

async function main(): Promise<void> {
  // Everything this process creates (state, credential files) is private unless chmod'ed.
  process.umask(0o077);

  let settings: Settings;
  try {
    settings = loadSettings();
    // Checked before listening (which costs loading the option code): a plugin that answered the
    // handshake and then exited would leave `docker plugin enable` looking successful.
    if (settings.ossDefaults.url || settings.ossDefaults.credentials) {
      (await import('./backends/oss/index.js')).checkOssDefaults(settings.ossDefaults);
    }
    if (settings.cloud.ecsCredentials) {
      (await import('./backends/profiles.js')).checkProfileSetting('OSSNAS_ECS_CREDENTIALS', settings.cloud.ecsCredentials);
    }
  } catch (err) {
    if (err instanceof SettingsError) {
      console.error(`ossnas: bad setting: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }

  const handler = deferred<RequestHandler>();
  const server = await listen(settings.socket, handler.promise);

  const [{ createLogger }, { exitOnUncaught }, { createApp }, { createBackends }, { VolumeDriver }, metricsModule] = await Promise.all([
    import('./log.js'),
    import('./fatal.js'),
    import('./api/server.js'),
    import('./backends/index.js'),
    import('./driver/driver.js'),
    // prom-client only for those who asked for metrics.
    settings.metricsAddress ? import('./api/metrics.js') : undefined,
  ]);
  const log = createLogger(settings.logLevel);
  // Logged, then exit: see fatal.ts for why that is safe and what repairs the state.
  exitOnUncaught(log);
  log.info({ socket: settings.socket, mountRoot: settings.mountRoot, stateDir: settings.stateDir }, 'listening');

  const ready = deferred<VolumeDriver>();
  let driver: VolumeDriver | undefined;
  const metrics = metricsModule?.createMetrics(() => driver?.census(), log);
  handler.resolve(createApp(ready.promise, log, metrics?.observeCall).callback());
  if (metrics && settings.metricsAddress) void metrics.serve(settings.metricsAddress);
  try {
    driver = await VolumeDriver.open(settings, createBackends(settings.ossDefaults), log);
  } catch (err) {
    // Answering calls without state would tell Docker that volumes do not exist, and Docker
    // would forget them. Better to stop: Docker sees a dead plugin, keeps its volumes, retries.
    if (err instanceof SettingsError) log.fatal(`bad setting: ${err.message}; exiting`);
    else log.fatal({ err }, 'cannot load state; exiting');
    ready.reject(err);
    server.close();
    process.exit(1);
  }
  ready.resolve(driver);
  log.info({ volumes: driver.list().length }, 'state loaded');
  // The spawn helper that starts every process (host/spawner.ts), now rather than at the first
  // Mount: the one fork of the plugin Node makes, while the plugin is idle.
  void import('./host/spawner.js')
    .then((m) => m.startSpawnHelper())
    .catch((err: Error) => log.error({ err: err.message }, 'the spawn helper did not start; mounts will fail until it does'));
  // In the background: calls are answered meanwhile (a held volume's Mount waits for its repair).
  void driver.restore().then((r) => {
    metrics?.observeRestore(r);
    const counts = { adopted: r.adopted.length, remounted: r.remounted.length, failed: r.failed.length, released: r.released.length };
    if (Object.values(counts).some((n) => n > 0)) {
      log.info({ ...counts, ms: r.ms, failedVolumes: r.failed.slice(0, 20) }, 'mounts of held volumes restored after start');
    }
  });

  installStopHandlers(server, driver, log);
}

function installStopHandlers(server: http.Server, driver: VolumeDriver, log: Logger): void {
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
    driver.close();
    server.close(() => {
      void driver
        .flush()
        .then(async () => (await import('./host/tmpfs.js')).releaseMemoryDirs())
        .finally(() => process.exit(0));
    });
    // dockerd keeps its connection alive: close each as soon as its call in flight is answered.
    server.closeIdleConnections();
    setInterval(() => server.closeIdleConnections(), 50).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

void main();
