// One volume's mount: what condition it is in, and the steps that change it. This is the one
// place that answers "is this volume mounted, serving, unresponsive or dead?", from the mount
// table and a statfs probe, and so the one place that decides whether a mount may be replaced.
// The driver decides *when* (from references, under the volume's lock) and records the outcome.
//
// The rule: a mount is replaced only when it is provably dead (its FUSE connection is gone).
// An unresponsive mount is a stopped client or a frozen NFS server whose containers' I/O waits
// and resumes; replacing it would put two clients with two caches on one volume, lose track of
// the first, and (for NFS) abort the I/O of the containers that hold it.
import { ensureDir } from '../host/files.js';
import type { Deadline } from '../host/deadline.js';
import type { Probe } from '../host/probe.js';
import { lazyUnmount } from '../host/unmount.js';
import { BackendError, type Backend, type BackendContext, type MountIntent, type VolumeOptions } from '../backends/index.js';

export type MountCondition =
  | { kind: 'absent' }
  | { kind: 'serving' }
  | { kind: 'unresponsive'; reason: string }
  | { kind: 'dead'; reason: string };

/** What a volume's mount asks of the host; tests give a double that agrees with their fake backend. */
export interface MountHost {
  isMountpoint(path: string): Promise<boolean>;
  /** Whether the mount at path answers; only a dead one may be replaced. */
  probe(path: string, timeoutMs: number): Promise<Probe>;
}

/** How long a held mount may take to answer a probe before it counts as unresponsive (and is kept). */
const PROBE_MS = 2000;

export class VolumeMount {
  constructor(
    readonly name: string,
    readonly options: VolumeOptions,
    readonly target: string,
    private readonly backend: Backend,
    private readonly ctx: BackendContext,
    private readonly host: MountHost,
  ) {}

  async condition(deadline: Deadline): Promise<MountCondition> {
    if (!(await this.host.isMountpoint(this.target))) return { kind: 'absent' };
    const p = await this.host.probe(this.target, deadline.budget(PROBE_MS));
    if (p.state === 'serving') return { kind: 'serving' };
    return { kind: p.state, reason: p.reason };
  }

  /**
   * Makes the volume serve at its mountpoint: a serving or unresponsive mount is kept, a dead one
   * is detached and replaced, an absent one is mounted. `made` when this call made a new mount
   * (which the caller undoes if it cannot keep a reference to it).
   */
  async ensure(deadline: Deadline): Promise<{ made: boolean; found: MountCondition }> {
    const found = await this.condition(deadline);
    if (found.kind === 'serving' || found.kind === 'unresponsive') return { made: false, found };
    await this.replace(found, deadline);
    return { made: true, found };
  }

  /** After a start or a lost mount: adopt a mount that is still there, or mount it again. */
  async repair(deadline: Deadline): Promise<{ outcome: 'adopted' | 'remounted'; found: MountCondition }> {
    const found = await this.condition(deadline);
    if (found.kind === 'serving' || found.kind === 'unresponsive') {
      await this.backend
        .adopt?.(this.name, this.options, this.target, this.ctx)
        .catch((err: Error) => this.ctx.log.warn({ volume: this.name, err: err.message }, 'adopted mount is not watched'));
      return { outcome: 'adopted', found };
    }
    await this.replace(found, deadline, 'repair');
    return { outcome: 'remounted', found };
  }

  /** Unmounts: the last reference went. */
  async release(deadline: Deadline): Promise<void> {
    await this.backend.unmount(this.name, this.options, this.target, this.ctx, deadline);
  }

  /** Mounts a volume found absent, or dead: that one is detached first. */
  private async replace(found: MountCondition, deadline: Deadline, intent: MountIntent = 'mount'): Promise<void> {
    if (found.kind === 'dead') {
      // Nothing left to flush: its client is gone. Containers that held it keep a dead mount of
      // their own (they must be restarted); new ones get the new mount.
      await this.backend.unmount(this.name, this.options, this.target, this.ctx, deadline).catch(() => lazyUnmount(this.target));
    }
    await this.mountNew(deadline, intent);
  }

  /**
   * Mounts, then checks that the mount is where containers will look: a kernel mount made in the
   * host's namespace reaches ours only through mount propagation, which a host can break (dockerd
   * started with MountFlags=slave). A mount that is not there is undone, not handed out.
   */
  private async mountNew(deadline: Deadline, intent: MountIntent): Promise<void> {
    await ensureDir(this.target, 0o755);
    await this.backend.mount(this.name, this.options, this.target, this.ctx, deadline, intent);
    // About 1 ms of a Mount (a read of the mount table) that a FUSE mount does not need.
    if (this.backend.mountsInOwnNamespace || (await this.host.isMountpoint(this.target))) return;
    await this.backend.unmount(this.name, this.options, this.target, this.ctx, deadline).catch((err: Error) =>
      this.ctx.log.warn({ volume: this.name, err: err.message }, 'a mount that did not appear at the mountpoint could not be undone'),
    );
    throw new BackendError(
      `the mount succeeded but does not appear at ${this.target}, so it was undone; the plugin's mounts do not propagate ` +
        "(is dockerd running with MountFlags=slave, or the mount root not shared?)",
    );
  }
}
