// The one client for all three servers, and the statistics. It is the tests' PluginClient
// (test/helpers/docker-client.ts), which speaks as dockerd does: HTTP/1.1 keep-alive, POST, a JSON
// body with a trailing newline and no Content-Type, plugin API v1.2's Accept header. Its agent
// allows 8 connections; here 16, so that 16 calls in flight use 16 connections as dockerd's Go
// transport would (it has no per-host limit).
import { PluginClient } from '../test/helpers/docker-client.js';

export const CONCURRENCY = 16;

export interface Answer {
  ms: number;
  bytes: number;
  json: Record<string, unknown>;
}

export class BenchClient {
  private readonly client: PluginClient;

  constructor(socket: string) {
    this.client = new PluginClient(socket);
    this.client.agent.maxSockets = CONCURRENCY;
  }

  /** One call; a non-200 status or a non-empty Err is an error (a benchmark of failures is no benchmark). */
  async call(method: string, args?: unknown): Promise<Answer> {
    const t0 = performance.now();
    const r = await this.client.call(method, args);
    const ms = performance.now() - t0;
    if (r.status !== 200 || (typeof r.json.Err === 'string' && r.json.Err !== '')) {
      throw new Error(`${method} ${JSON.stringify(args)}: status ${r.status}: ${r.text.slice(0, 300)}`);
    }
    return { ms, bytes: Buffer.byteLength(r.text), json: r.json };
  }

  close(): void {
    this.client.close();
  }
}

export interface Phase {
  calls: number;
  /** Wall time of the whole phase. */
  totalMs: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function summarise(latencies: number[], totalMs: number): Phase {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    calls: latencies.length,
    totalMs,
    opsPerSec: (latencies.length * 1000) / totalMs,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
  };
}

/** `count` calls with `concurrency` in flight at any time (1: one after the other); call(i) returns its latency. */
export async function phase(count: number, concurrency: number, call: (i: number) => Promise<number>): Promise<Phase> {
  const latencies = new Array<number>(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      latencies[i] = await call(i);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return summarise(latencies, performance.now() - t0);
}

/** A reproducible shuffle (mulberry32), so every server is read in the same order. */
export function shuffled<T>(items: readonly T[], seed = 42): T[] {
  let s = seed >>> 0;
  const rand = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
