// ECS cloud disks (type=disk diskId=d-...): attached to this instance at the first Mount, found by
// serial, and detached after the last Unmount so that the host a task moves to can attach it. The
// control plane is asynchronous (AttachDisk and DetachDisk answer at once; DescribeDisks tells when
// they are done), slow at times, and the only one who knows where a disk is: the plugin keeps no
// record of attachments of its own, it asks. A disk is attached to one instance at a time, and the
// plugin never takes it from another unless the volume says forceDetach=true, and only at a Mount.
import type { Deadline } from '../../host/deadline.js';
import { reachHostPath, type HostNamespace } from '../../host/hostns.js';
import { deviceUsers } from '../../host/mount-users.js';
import { stat } from 'node:fs/promises';
import { cloudAccess, type CloudAccess } from '../cloud/access.js';
import { CloudApiError, type DiskState, type EcsApi } from '../cloud/ecs.js';
import { BackendError, type BackendContext } from '../types.js';
import { findDeviceBySerial, serialOf } from './device-by-id.js';
import type { CloudDiskSpec } from './options.js';

/** One API call's share of a deadline at most: a slow answer leaves time to say so. */
const CALL_CAP_MS = 8000;
/** Kept back while attaching, for a DetachDisk call if what follows fails. */
export const DETACH_RESERVE_MS = 3000;
/** DescribeDisks while waiting: quickly at first (an attach takes seconds), then once a second. */
const POLL_FIRST_MS = 250;
const POLL_MAX_MS = 1000;

/** What Status shows of a cloud disk, as last seen. */
export interface AttachView {
  attachState: string;
  /** Where it is attached ('' when nowhere). */
  instanceId: string;
  /** The host's device node, when attached here and found. */
  device?: string;
  /** Something the operator should know (attached elsewhere, a detach left for later). */
  note?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class CloudDisks {
  private readonly views = new Map<string, AttachView>();

  /** Status's view of a volume's disk, as last seen by this process. */
  view(volume: string): AttachView | undefined {
    return this.views.get(volume);
  }

  private access(ctx: BackendContext): CloudAccess {
    return cloudAccess(ctx.settings.cloud, ctx.settings.credentialsDir, ctx.settings.proxy);
  }

  /** A step's failure, naming the step: the message reaches `docker run`'s output and Status. */
  private async step<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof BackendError) throw err;
      throw new BackendError(`${what}: ${(err as Error).message}`);
    }
  }

  private async api(spec: CloudDiskSpec, ctx: BackendContext, deadline: Deadline, reserve = 0): Promise<{ ecs: EcsApi; me: string }> {
    const cloud = this.access(ctx);
    const timeout = deadline.budget(CALL_CAP_MS, reserve);
    const { instanceId } = await this.step('reading this instance from the ECS metadata service', () => cloud.identity(timeout));
    const profile = cloud.profileFor(spec.ecsCredentials);
    const ecs = await this.step(
      profile ? `reading credentials profile '${profile}' for the ECS API` : "getting the instance RAM role's credentials from the metadata service",
      () => cloud.ecs(spec.ecsCredentials, timeout),
    );
    return { ecs, me: instanceId };
  }

  /**
   * The disk as DescribeDisks shows it now. While waiting (`previous` given), a throttled lookup
   * is not a failure: the wait goes on with what was last seen (ECS limits calls per account, and
   * many hosts waiting at once can reach the limit).
   */
  private async describe(ecs: EcsApi, diskId: string, deadline: Deadline, reserve = 0, previous?: DiskState): Promise<DiskState> {
    const d = await this.step(`looking up disk ${diskId} (DescribeDisks)`, () =>
      ecs.describeDisk(diskId, deadline.budget(CALL_CAP_MS, reserve)).catch((err: unknown) => {
        if (previous && err instanceof CloudApiError && err.code?.startsWith('Throttling')) return previous;
        throw err;
      }),
    );
    if (!d) throw new BackendError(`disk ${diskId} does not exist in region ${ecs.regionId} (DescribeDisks found no such disk)`);
    return d;
  }

  private record(volume: string, d: DiskState, me: string, extra: Partial<AttachView> = {}): void {
    const here = d.instanceId === me && d.status !== 'Available';
    const previous = this.views.get(volume);
    this.views.set(volume, {
      attachState: d.status,
      instanceId: d.instanceId,
      ...(here && previous?.device && { device: previous.device }),
      ...extra,
    });
  }

  /** At Create: the disk exists in this region, when the API can be asked (else the Mount says what is wrong). */
  async check(spec: CloudDiskSpec, ctx: BackendContext, deadline: Deadline): Promise<void> {
    try {
      const { ecs } = await this.api(spec, ctx, deadline);
      await this.describe(ecs, spec.diskId, deadline);
    } catch (err) {
      if (err instanceof BackendError && /does not exist/.test(err.message)) throw err;
      // Not on ECS, the metadata service or the API down: Create records the volume anyway.
      ctx.log.warn({ diskId: spec.diskId, err: (err as Error).message }, 'cloud disk not checked at Create; the API cannot be asked');
    }
  }

  /**
   * Attaches the disk here (unless it is already) and returns the host path of its device.
   * `attachedNow` tells the caller that a failure later in the Mount must detach it again.
   * `mayForce`: a Mount may apply forceDetach; a repair after a restart never does.
   */
  async attach(
    volume: string,
    spec: CloudDiskSpec,
    ctx: BackendContext,
    deadline: Deadline,
    mayForce: boolean,
  ): Promise<{ device: string; attachedNow: boolean }> {
    const { ecs, me } = await this.api(spec, ctx, deadline, DETACH_RESERVE_MS);
    const { diskId } = spec;
    let attachedNow = false;
    let forced = false;
    try {
      let d = await this.describe(ecs, diskId, deadline, DETACH_RESERVE_MS);
      for (let wait = POLL_FIRST_MS; !(d.status === 'In_use' && d.instanceId === me); wait = Math.min(POLL_MAX_MS, wait * 2)) {
        this.record(volume, d, me);
        const elsewhere = d.instanceId !== '' && d.instanceId !== me;
        if (d.status === 'Available' && !attachedNow) {
          try {
            await ecs.attachDisk(diskId, me, deadline.budget(CALL_CAP_MS, DETACH_RESERVE_MS));
          } catch (err) {
            // A refusal attached nothing; a call that got no answer may have reached ECS, and is undone like one that did.
            if (!(err instanceof CloudApiError && err.code)) attachedNow = true;
            throw new BackendError(`attaching disk ${diskId} to this instance ${me} (AttachDisk): ${(err as Error).message}`);
          }
          attachedNow = true;
        } else if (d.status === 'In_use' && elsewhere) {
          if (!(mayForce && spec.forceDetach)) {
            throw new BackendError(
              `disk ${diskId} is attached to instance ${d.instanceId}, not to this one (${me}); a disk is attached to one instance at a time: ` +
                `stop what uses it there first${mayForce ? ' (or create the volume with forceDetach=true, which cuts that instance off the disk)' : ''}`,
            );
          }
          if (!forced) {
            ctx.log.warn({ volume, diskId, from: d.instanceId }, 'forceDetach: detaching the disk from the instance that holds it');
            await this.step(`detaching disk ${diskId} from instance ${d.instanceId} (forceDetach; DetachDisk)`, () =>
              ecs.detachDisk(diskId, d.instanceId, deadline.budget(CALL_CAP_MS, DETACH_RESERVE_MS)),
            );
            forced = true;
          }
        } else if (!['Attaching', 'Detaching', 'In_use', 'Available'].includes(d.status)) {
          throw new BackendError(`disk ${diskId} is ${d.status}; it can be attached only when Available`);
        }
        // Attaching, Detaching (here or elsewhere: a task that moved is still letting go of it), or our own call in flight.
        const why = `disk ${diskId} to be attached here: it is ${d.status}${elsewhere ? ` on instance ${d.instanceId}` : ''}`;
        await this.pause(wait, deadline, DETACH_RESERVE_MS, why);
        d = await this.describe(ecs, diskId, deadline, DETACH_RESERVE_MS, d);
      }
      this.record(volume, d, me);
      const serial = serialOf(diskId, d.serialNumber);
      const ns = await ctx.hostNamespace();
      const dir = ctx.settings.cloud.deviceByIdDir;
      let device: string | undefined;
      for (let wait = 100; !(device = await findDeviceBySerial(ns, dir, serial)); wait = Math.min(POLL_MAX_MS, wait * 2)) {
        await this.pause(wait, deadline, DETACH_RESERVE_MS, `the device of disk ${diskId} to appear in ${dir} (serial ${serial}; ECS says it is attached here)`);
      }
      this.record(volume, d, me, { device });
      return { device, attachedNow };
    } catch (err) {
      if (attachedNow) await this.undoAttach(volume, spec, ctx, deadline);
      throw err;
    }
  }

  /** Waits `ms`, unless that would eat into `reserve`: then the step named by `what` has failed. */
  private async pause(ms: number, deadline: Deadline, reserve: number, what: string): Promise<void> {
    if (deadline.remaining() - reserve < ms) {
      throw new BackendError(`timed out after ${Math.round(deadline.totalMs / 1000)} s (OSSNAS_MOUNT_TIMEOUT) waiting for ${what}`);
    }
    await sleep(ms);
  }

  /**
   * After a Mount failed: the disk it attached goes back (whatever detach= says: the host is left
   * as it was), or is left for the retries to detach. Does not wait for Available.
   */
  async undoAttach(volume: string, spec: CloudDiskSpec, ctx: BackendContext, deadline: Deadline): Promise<void> {
    let me = 'this instance';
    try {
      const api = await this.api(spec, ctx, deadline);
      me = api.me;
      await api.ecs.detachDisk(spec.diskId, me, Math.max(500, Math.min(CALL_CAP_MS, deadline.remaining())));
      this.views.set(volume, { attachState: 'Detaching', instanceId: me });
    } catch (err) {
      this.leftAttached(volume, spec, ctx, me, (err as Error).message);
    }
  }

  /** A detach that could not be done now: Status says so, and the driver settles the volume later. */
  private leftAttached(volume: string, spec: CloudDiskSpec, ctx: BackendContext, me: string, why: string): void {
    const note = `disk ${spec.diskId} may still be attached here (${me}); it is detached later, with backoff: ${why}`;
    this.views.set(volume, { ...(this.views.get(volume) ?? { attachState: 'unknown', instanceId: me }), note });
    ctx.log.warn({ volume, diskId: spec.diskId, err: why }, 'cloud disk left attached for now; detached later');
    ctx.settleLater(volume);
  }

  /**
   * The disk is not needed here any more (no reference, nothing mounted): detach it if it is
   * attached here, unless the volume says detach=false, and wait for Available so that the next
   * host's AttachDisk is accepted. Safe to repeat. Refuses to detach a disk
   * whose filesystem the host still has mounted somewhere (a container that outlived its
   * reference). With `bestEffort`, a failure is left for later instead of thrown: the Unmount
   * itself succeeded.
   */
  async release(volume: string, spec: CloudDiskSpec, ctx: BackendContext, deadline: Deadline, bestEffort: boolean): Promise<void> {
    let me = '';
    try {
      const api = await this.api(spec, ctx, deadline);
      me = api.me;
      let d = await this.describe(api.ecs, spec.diskId, deadline);
      this.record(volume, d, me);
      if (d.status === 'Attaching' && (d.instanceId === '' || d.instanceId === me) && spec.detach) {
        // ECS may not name the instance until the attach is done: it may be ours (a Mount that
        // gave up, or a plugin killed after AttachDisk). DetachDisk is refused until then.
        throw new BackendError(`disk ${spec.diskId} is being attached${d.instanceId ? ' here' : ''}; it is looked at again once that is done`);
      }
      if (d.instanceId !== me || d.status === 'Available' || !spec.detach) return;
      const ns = await ctx.hostNamespace();
      const holders = await this.mountedAnywhere(ns, ctx, serialOf(spec.diskId, d.serialNumber)).catch((err: Error) => [`(unknown: ${err.message})`]);
      if (holders.length > 0) {
        const why = `not detached: its filesystem is still mounted on this host (${holders.slice(0, 3).join(', ')}); detached once nothing holds it`;
        this.record(volume, d, me, { note: why });
        throw new BackendError(`disk ${spec.diskId} is ${why}`);
      }
      let sent = false;
      for (let wait = POLL_FIRST_MS; ; wait = Math.min(POLL_MAX_MS, wait * 2)) {
        if (d.instanceId !== me || d.status === 'Available') return;
        if (d.status === 'In_use' && !sent) {
          await this.step(`detaching disk ${spec.diskId} from this instance (DetachDisk)`, () =>
            api.ecs.detachDisk(spec.diskId, me, deadline.budget(CALL_CAP_MS)),
          );
          sent = true;
          this.views.set(volume, { attachState: 'Detaching', instanceId: me });
        }
        await this.pause(wait, deadline, 0, `disk ${spec.diskId} to be detached (it is ${d.status})`);
        d = await this.describe(api.ecs, spec.diskId, deadline, 0, d);
        this.record(volume, d, me);
      }
    } catch (err) {
      if (!bestEffort) throw err;
      this.leftAttached(volume, spec, ctx, me || 'this instance', (err as Error).message);
    }
  }

  /** A mount found in place after a start: note where the cloud says the disk is. */
  async adopt(volume: string, spec: CloudDiskSpec, ctx: BackendContext, deadline: Deadline): Promise<void> {
    const { ecs, me } = await this.api(spec, ctx, deadline);
    const d = await this.describe(ecs, spec.diskId, deadline);
    const elsewhere = d.instanceId !== '' && d.instanceId !== me;
    const device = elsewhere ? undefined : await findDeviceBySerial(await ctx.hostNamespace(), ctx.settings.cloud.deviceByIdDir, serialOf(spec.diskId, d.serialNumber));
    this.record(volume, d, me, {
      ...(device && { device }),
      ...(elsewhere && {
        note: `mounted here, but ECS says the disk is attached to instance ${d.instanceId}; it was detached from this instance by someone else. Nothing was changed`,
      }),
    });
  }

  /**
   * Who still has the disk's filesystem mounted, in any mount namespace (a container that
   * outlived its reference, or the host): detaching would pull the disk from under them.
   */
  private async mountedAnywhere(ns: HostNamespace, ctx: BackendContext, serial: string): Promise<string[]> {
    const device = await findDeviceBySerial(ns, ctx.settings.cloud.deviceByIdDir, serial);
    if (!device) return [];
    const st = await stat(reachHostPath(ns, device));
    return deviceUsers(`${Math.floor(st.rdev / 256) & 0xfff}:${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}`);
  }
}
