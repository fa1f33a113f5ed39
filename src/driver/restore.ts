// Start-up and retries: the work the driver does for held volumes when no call asks for it.
// After a start, every volume containers still hold must serve again, a few at a time, while
// calls are answered; a repair that fails is tried again with backoff, one timer per volume.

/** What a restore after start found, by volume name. */
export interface RestoreReport {
  adopted: string[];
  remounted: string[];
  failed: string[];
  /**
   * Mounted, but no container holds them: left by a crash between a mount and its record, or
   * held only by references that were stale at the start (containers that died with the node).
   */
  released: string[];
  ms: number;
}

export type RepairOutcome = 'adopted' | 'remounted' | 'failed' | 'released' | 'idle';

/** What the restore asks of the driver: each step runs under the volume's own lock. */
export interface Restorable {
  /**
   * Volumes with references, volumes mounted with none, and volumes with neither whose backend
   * may still hold something for them outside the host (a cloud disk attached here).
   */
  restorePlan(): Promise<{ held: string[]; stray: string[]; unsettled: string[] }>;
  repair(name: string): Promise<RepairOutcome>;
  releaseStray(name: string): Promise<'released' | 'idle'>;
}

/**
 * Repairs every held volume, undoes every stray mount and settles what idle volumes hold, at most `concurrency` at a time.
 * Repairs that fail are retried by the driver's RetrySchedule.
 */
export async function restore(driver: Restorable, concurrency: number): Promise<RestoreReport> {
  const t0 = performance.now();
  const { held, stray, unsettled } = await driver.restorePlan();
  const report: RestoreReport = { adopted: [], remounted: [], failed: [], released: [], ms: 0 };
  const jobs = [
    ...held.map((name) => async () => {
      const outcome = await driver.repair(name);
      if (outcome !== 'idle') report[outcome].push(name);
    }),
    ...stray.map((name) => async () => {
      if ((await driver.releaseStray(name)) === 'released') report.released.push(name);
    }),
    // repair() settles a volume that nothing holds; one that fails is retried like a repair.
    ...unsettled.map((name) => async () => {
      if ((await driver.repair(name)) === 'failed') report.failed.push(name);
    }),
  ];
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) await jobs[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, worker));
  report.ms = Math.round(performance.now() - t0);
  return report;
}

/** Backoff for repairs that failed: 2 s, 4 s, ... up to a minute. */
const FIRST_RETRY_MS = 2000;
const MAX_RETRY_MS = 60_000;

/**
 * At most one pending retry per volume: a volume whose mount is lost again while a retry waits
 * keeps that one retry (with its backoff), instead of starting a second chain of timers.
 */
export class RetrySchedule {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly attempts = new Map<string, number>();
  private closed = false;

  constructor(private readonly run: (name: string) => void) {}

  /** Schedules the next attempt for `name`, unless one is pending already. */
  failed(name: string): void {
    if (this.closed || this.timers.has(name)) return;
    const attempt = (this.attempts.get(name) ?? 0) + 1;
    this.attempts.set(name, attempt);
    const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.min(attempt - 1, 10));
    const timer = setTimeout(() => {
      this.timers.delete(name);
      this.run(name);
    }, delay);
    timer.unref();
    this.timers.set(name, timer);
  }

  /** The volume serves (or is gone): its backoff starts again from the first delay next time. */
  succeeded(name: string): void {
    this.attempts.delete(name);
    clearTimeout(this.timers.get(name));
    this.timers.delete(name);
  }

  attempt(name: string): number {
    return this.attempts.get(name) ?? 0;
  }

  get pending(): number {
    return this.timers.size;
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}
