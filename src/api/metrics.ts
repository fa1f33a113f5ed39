// Prometheus metrics on an HTTP listener of their own, for operators who ask for it with
// OSSNAS_METRICS_ADDRESS. main.ts imports this module (and with it prom-client) only then, so a
// plugin without metrics neither loads nor listens for them. Labels are bounded sets (call names,
// volume types, health): never volume names or options, which may be many or secret.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Census, RestoreReport } from '../driver/driver.js';
import type { Logger } from '../log.js';
import type { ListenAddress } from '../settings.js';
import type { CallObserver } from './routes.js';

export interface Metrics {
  observeCall: CallObserver;
  observeRestore(report: RestoreReport): void;
  /** Starts the listener; a failure is logged and leaves the plugin serving volumes without metrics. */
  serve(address: ListenAddress): Promise<AddressInfo | undefined>;
  close(): Promise<void>;
}

/** Protocol calls take from well under a millisecond (Get, List) to the mount timeout (Mount). */
const CALL_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** `census` is undefined until the state is loaded. */
export function createMetrics(census: () => Census | undefined, log: Logger): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const calls = new Counter({
    name: 'ossnas_calls_total',
    help: 'Plugin protocol calls answered, by call and outcome (ok, or failed: any answer other than 200)',
    labelNames: ['call', 'outcome'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'ossnas_call_duration_seconds',
    help: 'Time to answer a plugin protocol call, by call',
    labelNames: ['call'],
    buckets: CALL_BUCKETS,
    registers: [registry],
  });
  const gauge = (name: string, help: string, labelNames: string[] = []) =>
    new Gauge({ name, help, labelNames, registers: [registry] });
  const volumes = gauge('ossnas_volumes', 'Volumes in state, by type', ['type']);
  const mounted = gauge('ossnas_volumes_mounted', 'Volumes whose backend is mounted, by type', ['type']);
  const byHealth = gauge('ossnas_volumes_by_health', "Volumes by Status health (ok: mounted; idle: not mounted; error: last mount failed or was lost)", ['health']);
  const refs = gauge('ossnas_mount_references', 'Mount references held by containers, over every volume');
  const restoreSeconds = gauge('ossnas_restore_duration_seconds', 'Time the restore of held volumes after start took (0 until it has finished)');
  const restored = gauge('ossnas_restore_volumes', 'Volumes handled by the restore after start, by result', ['result']);

  /** Gauges are set from state at each scrape, so they cannot drift from what Status shows. */
  const countVolumes = (): void => {
    const c = census();
    if (!c) return;
    for (const g of [volumes, mounted, byHealth]) g.reset();
    for (const [type, n] of Object.entries(c.volumes)) volumes.set({ type }, n);
    for (const [type, n] of Object.entries(c.mounted)) mounted.set({ type }, n);
    for (const [health, n] of Object.entries(c.health)) byHealth.set({ health }, n);
    refs.set(c.refs);
  };

  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('ossnas serves metrics at GET /metrics only\n');
      return;
    }
    countVolumes();
    registry.metrics().then(
      (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
      (err: Error) => {
        log.error({ err }, 'metrics could not be collected');
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`metrics could not be collected: ${err.message}\n`);
      },
    );
  });

  return {
    observeCall(call, status, seconds) {
      calls.inc({ call, outcome: status === 200 ? 'ok' : 'failed' });
      duration.observe({ call }, seconds);
    },
    observeRestore(report) {
      restoreSeconds.set(report.ms / 1000);
      for (const result of ['adopted', 'remounted', 'failed', 'released'] as const) restored.set({ result }, report[result].length);
    },
    serve(address) {
      return new Promise((resolve) => {
        const failed = (err: Error) => {
          log.error({ err, host: address.host, port: address.port }, 'metrics listener could not start; serving volumes without it');
          resolve(undefined);
        };
        server.once('error', failed);
        // '' listens on every interface, as `:port` means for other daemons.
        server.listen(address.port, address.host || undefined, () => {
          server.off('error', failed);
          const bound = server.address() as AddressInfo;
          log.info({ host: bound.address, port: bound.port }, 'metrics listening at /metrics');
          resolve(bound);
        });
      });
    },
    close() {
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
