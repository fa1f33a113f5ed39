// The printed table: one per N, a row per number, a column per server, then ossnas/rclone and
// ossnas/floor. A ratio reads with the row's "better" column: for ops/s above 1 means ossnas is
// faster; for ms, bytes and RSS above 1 means ossnas is slower or bigger.
import type { Phase } from './client.js';

export interface ServerResult {
  server: string;
  n: number;
  create: Phase;
  getSeq: Phase;
  getC16: Phase;
  pathSeq: Phase;
  pathC16: Phase;
  list: Phase & { bytes: number };
  capabilities: Phase;
  remove: Phase;
  peakRssBytes: number;
  stateBytes: number;
  /** Spawn to listening socket on an empty directory. */
  emptyListenMs: number;
  /** After the creates, the same directory again: spawn to listening, and spawn to a List answered. */
  restartListenMs: number;
  restartReadyMs: number;
  /** How many volumes that first List returned (the floor keeps none). */
  restartVolumes: number;
  loadavg: { before: number[]; after: number[] };
}

type Better = 'higher' | 'lower';
interface Row {
  label: string;
  better: Better;
  value: (r: ServerResult) => number;
  format: (v: number) => string;
}

const ms = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const ops = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const bytes = (v: number) =>
  v >= 2 ** 20 ? `${(v / 2 ** 20).toFixed(1)} MiB` : v >= 1024 ? `${(v / 1024).toFixed(1)} KiB` : `${v} B`;

const ROWS: Row[] = [
  { label: 'Create ops/s (sequential)', better: 'higher', value: (r) => r.create.opsPerSec, format: ops },
  { label: 'Create p50 ms', better: 'lower', value: (r) => r.create.p50Ms, format: ms },
  { label: 'Create p99 ms', better: 'lower', value: (r) => r.create.p99Ms, format: ms },
  { label: 'Get p50 ms (sequential)', better: 'lower', value: (r) => r.getSeq.p50Ms, format: ms },
  { label: 'Get p99 ms (sequential)', better: 'lower', value: (r) => r.getSeq.p99Ms, format: ms },
  { label: 'Get p50 ms (concurrency 16)', better: 'lower', value: (r) => r.getC16.p50Ms, format: ms },
  { label: 'Get p99 ms (concurrency 16)', better: 'lower', value: (r) => r.getC16.p99Ms, format: ms },
  { label: 'Get ops/s (concurrency 16)', better: 'higher', value: (r) => r.getC16.opsPerSec, format: ops },
  { label: 'Path p50 ms (sequential)', better: 'lower', value: (r) => r.pathSeq.p50Ms, format: ms },
  { label: 'Path p99 ms (sequential)', better: 'lower', value: (r) => r.pathSeq.p99Ms, format: ms },
  { label: 'Path p50 ms (concurrency 16)', better: 'lower', value: (r) => r.pathC16.p50Ms, format: ms },
  { label: 'Path p99 ms (concurrency 16)', better: 'lower', value: (r) => r.pathC16.p99Ms, format: ms },
  { label: 'Path ops/s (concurrency 16)', better: 'higher', value: (r) => r.pathC16.opsPerSec, format: ops },
  { label: 'List p50 ms', better: 'lower', value: (r) => r.list.p50Ms, format: ms },
  { label: 'List response bytes', better: 'lower', value: (r) => r.list.bytes, format: bytes },
  { label: 'Capabilities p50 ms', better: 'lower', value: (r) => r.capabilities.p50Ms, format: ms },
  { label: 'Remove ops/s (sequential)', better: 'higher', value: (r) => r.remove.opsPerSec, format: ops },
  { label: 'Remove p50 ms', better: 'lower', value: (r) => r.remove.p50Ms, format: ms },
  { label: 'Remove p99 ms', better: 'lower', value: (r) => r.remove.p99Ms, format: ms },
  { label: 'Peak RSS (VmHWM)', better: 'lower', value: (r) => r.peakRssBytes, format: bytes },
  { label: 'State on disk after N creates', better: 'lower', value: (r) => r.stateBytes, format: bytes },
  { label: 'Start -> listening ms (empty)', better: 'lower', value: (r) => r.emptyListenMs, format: ms },
  { label: 'Start -> listening ms (N in state)', better: 'lower', value: (r) => r.restartListenMs, format: ms },
  { label: 'Start -> List answered ms (N in state)', better: 'lower', value: (r) => r.restartReadyMs, format: ms },
];

function ratio(a: ServerResult | undefined, b: ServerResult | undefined, row: Row): string {
  if (!a || !b) return '-';
  const [x, y] = [row.value(a), row.value(b)];
  if (!Number.isFinite(x) || !Number.isFinite(y) || y === 0) return '-';
  const r = x / y;
  return r >= 100 ? r.toFixed(0) : r >= 0.1 ? r.toFixed(2) : r.toPrecision(2); // 0.0043, not 0.00
}

function pad(cells: string[], widths: number[]): string {
  return cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
}

/** The table for one N, as text. */
export function formatTable(n: number, results: ServerResult[]): string {
  const by = (name: string) => results.find((r) => r.server === name);
  const servers = ['ossnas', 'ossnas-keys', 'rclone', 'floor'].filter((s) => by(s));
  const header = [`N = ${n}`, ...servers, 'ossnas/rclone', 'ossnas/floor', 'better'];
  const body = ROWS.map((row) => [
    row.label,
    ...servers.map((s) => row.format(row.value(by(s)!))),
    ratio(by('ossnas'), by('rclone'), row),
    ratio(by('ossnas'), by('floor'), row),
    row.better,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  const notes = results
    .filter((r) => r.restartVolumes !== (r.server === 'floor' ? 0 : r.n))
    .map((r) => `! ${r.server}: the first List after the restart returned ${r.restartVolumes} volumes, not ${r.n}`);
  return [pad(header, widths), rule, ...body.map((r) => pad(r, widths)), ...notes].join('\n');
}

/**
 * Whether a durable operation costs the same whatever N: Create and Remove ops/s at the largest N
 * over the same at the smallest, per server (target: within 20 %, a ratio of 0.8 or more).
 */
export function formatScaling(results: ServerResult[]): string {
  const ns = [...new Set(results.map((r) => r.n))].sort((a, b) => a - b);
  if (ns.length < 2) return 'Create/Remove at the largest N over the smallest: needs two N';
  const [small, large] = [ns[0]!, ns[ns.length - 1]!];
  const lines = [`Create and Remove ops/s at N=${large} over N=${small} (1.00: the same cost whatever N)`];
  for (const server of [...new Set(results.map((r) => r.server))]) {
    const at = (n: number) => results.find((r) => r.server === server && r.n === n);
    const [a, b] = [at(small), at(large)];
    if (!a || !b) continue;
    const q = (x: number, y: number) => (y > 0 ? (x / y).toFixed(2) : '-');
    lines.push(`  ${server.padEnd(12)} Create ${q(b.create.opsPerSec, a.create.opsPerSec)}  Remove ${q(b.remove.opsPerSec, a.remove.opsPerSec)}`);
  }
  return lines.join('\n');
}
