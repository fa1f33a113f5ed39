// One time budget for a whole call. Docker gives up on a plugin call after 30 s (after a plain
// `docker plugin enable`) and never says so; a Mount that finishes later has done its work for
// nobody. So every step of a call (waiting for the volume's lock, probing an endpoint, starting a
// client, mkfs, mount, and stopping what did not finish) takes its time from one deadline, counted
// from the request's arrival, instead of each step having a timeout of its own that adds up.

export class DeadlineExceeded extends Error {}

export class Deadline {
  private constructor(
    /** performance.now() at which the time is up */
    readonly at: number,
    /** The whole budget, for messages. */
    readonly totalMs: number,
  ) {}

  /** `ms` from `from` (performance.now(), e.g. when the request arrived). */
  static after(ms: number, from = performance.now()): Deadline {
    return new Deadline(from + ms, ms);
  }

  remaining(): number {
    return Math.max(0, this.at - performance.now());
  }

  /**
   * How long one step may take: what is left, minus `reserve` for the steps that must still run
   * after it (stopping a client, undoing a mount), at most `cap`. Never below `floor`: a step
   * given no time at all could not even report why.
   */
  budget(cap = Infinity, reserve = 0, floor = 100): number {
    return Math.max(floor, Math.min(cap, this.remaining() - reserve));
  }

  /** Throws DeadlineExceeded, naming the step that could not start, when no time is left. */
  check(step: string): void {
    if (this.remaining() <= 0) {
      throw new DeadlineExceeded(`the call's ${Math.round(this.totalMs / 1000)} s were used up before ${step}`);
    }
  }
}
