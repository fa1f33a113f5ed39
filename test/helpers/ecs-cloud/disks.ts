// The region's disks and instances, and the two slow transitions between them. As on ECS, an
// AttachDisk or DetachDisk is accepted or refused at once and done later: the disk shows
// Attaching (Detaching) for a while, then the device appears in (leaves) the instance and the
// disk shows In_use (Available). Refusals follow ECS's rules for which status allows what.
import { randomBytes } from 'node:crypto';
import { mkdir, realpath, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { byIdName, link, loopsOver, plugIn, unlink, unplug, type DeviceNaming } from './devices.js';
import { AcsError } from './wire.js';

export type DiskStatus = 'Available' | 'Attaching' | 'In_use' | 'Detaching';

/** A disk as the test sees it: a copy, taken when asked for. */
export interface SimDisk {
  readonly diskId: string;
  readonly regionId: string;
  readonly zoneId: string;
  /** What DescribeDisks shows; '' for a disk without one (its device is then named after the id). */
  readonly serialNumber: string;
  readonly sizeMiB: number;
  /** The image file (sparse) that holds the disk's data. */
  readonly image: string;
  readonly status: DiskStatus;
  /** The instance it is attached to, from AttachDisk until it is Available again. */
  readonly instanceId?: string;
  /** The loop device standing in for it, while it is plugged into an instance. */
  readonly device?: string;
  /** The by-id link to `device`, while there. */
  readonly link?: string;
  /** ECS's legacy device name (/dev/xvdb…), as DescribeDisks shows it while In_use or Detaching. */
  readonly legacyDevice?: string;
  readonly deleteWithInstance: boolean;
  readonly creationTime: number;
  readonly attachedTime?: number;
  readonly detachedTime?: number;
  /** Why the last transition failed on this machine (losetup, links), if it did. */
  readonly error?: string;
}

export interface InstanceRecord {
  id: string;
  zoneId: string;
  byIdDir: string;
  naming: DeviceNaming;
}

type DiskRecord = { -readonly [K in keyof SimDisk]: SimDisk[K] } & { busy?: Promise<void> };

export interface FleetOptions {
  dir: string;
  regionId: string;
  zoneId: string;
  attachMs: number;
  detachMs: number;
}

const LOWER_ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';
const newDiskId = () => `d-${[...randomBytes(20)].map((b) => LOWER_ALNUM[b % LOWER_ALNUM.length]).join('')}`;
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** ECS's data disk limit for most instance types; the legacy names run /dev/xvdb to /dev/xvdq. */
const MAX_DATA_DISKS = 16;

const notFoundDisk = () => new AcsError('InvalidDiskId.NotFound', 404, 'The specified disk does not exist.');
const wrongStatus = () => new AcsError('IncorrectDiskStatus', 403, 'The current disk status does not support this operation.');

export class Fleet {
  readonly instances = new Map<string, InstanceRecord>();
  private readonly disks = new Map<string, DiskRecord>();
  /** Transitions that failed on this machine; close() reports them. */
  readonly failures: Error[] = [];
  private readonly closing = new AbortController();

  constructor(private readonly opts: FleetOptions) {}

  async addInstance(id: string, naming: DeviceNaming, zoneId = this.opts.zoneId): Promise<InstanceRecord> {
    if (!SAFE_ID.test(id)) throw new Error(`instance id '${id}': letters, digits, '.', '_' and '-' only`);
    if (this.instances.has(id)) throw new Error(`instance ${id} exists already`);
    const byIdDir = path.join(this.opts.dir, 'instances', id, 'by-id');
    await mkdir(byIdDir, { recursive: true });
    const rec: InstanceRecord = { id, zoneId, byIdDir, naming };
    this.instances.set(id, rec);
    return rec;
  }

  async addDisk(o: { diskId?: string; sizeMiB: number; serialNumber?: string; regionId?: string; zoneId?: string }): Promise<SimDisk> {
    const diskId = o.diskId ?? newDiskId();
    if (!SAFE_ID.test(diskId)) throw new Error(`disk id '${diskId}': letters, digits, '.', '_' and '-' only`);
    if (this.disks.has(diskId)) throw new Error(`disk ${diskId} exists already`);
    if (!(Number.isInteger(o.sizeMiB) && o.sizeMiB > 0)) throw new Error(`sizeMiB ${o.sizeMiB}: a positive whole number`);
    const regionId = o.regionId ?? this.opts.regionId;
    const zoneId = o.zoneId ?? (regionId === this.opts.regionId ? this.opts.zoneId : `${regionId}-a`);
    const dir = path.join(this.opts.dir, 'disks');
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, `${diskId}.img`);
    await writeFile(file, '', { mode: 0o600, flag: 'wx' });
    await truncate(file, o.sizeMiB * 2 ** 20);
    const rec: DiskRecord = {
      diskId,
      regionId,
      zoneId,
      serialNumber: o.serialNumber ?? diskId.replace(/^d-/, ''),
      sizeMiB: o.sizeMiB,
      // losetup reports the resolved path: compare like with like.
      image: await realpath(file),
      status: 'Available',
      deleteWithInstance: false,
      creationTime: Date.now(),
    };
    this.disks.set(diskId, rec);
    return this.snapshot(diskId);
  }

  snapshot(diskId: string): SimDisk {
    const d = this.disks.get(diskId);
    if (!d) throw new Error(`no disk ${diskId}`);
    const { busy: _busy, ...copy } = d;
    return copy;
  }

  /** Every disk of a region, as snapshots, in the order they were added. */
  inRegion(regionId: string): SimDisk[] {
    return [...this.disks.values()].filter((d) => d.regionId === regionId).map((d) => this.snapshot(d.diskId));
  }

  /**
   * AttachDisk: refused at once (AcsError) or accepted, the disk then Attaching. The promise is
   * settled when the transition is over, never rejected: the disk's status says how it ended.
   */
  attach(diskId: string, instanceId: string, deleteWithInstance = false): Promise<void> {
    const d = this.visibleDisk(diskId);
    const inst = this.instance(instanceId);
    if (d.zoneId !== inst.zoneId) throw new AcsError('ResourcesNotInSameZone', 403, 'The specified instance and disk are not in the same zone.');
    // Attached to anyone (this instance too), or between states: ECS refuses alike.
    if (d.status !== 'Available') throw wrongStatus();
    const letter = this.freeLetter(instanceId);
    if (!letter) throw new AcsError('InstanceDiskLimitExceeded', 403, 'The amount of the disk on instance in question reach its limits.');
    Object.assign(d, { status: 'Attaching', instanceId, legacyDevice: `/dev/xvd${letter}`, deleteWithInstance, error: undefined });
    return this.transition(d, () => this.finishAttach(d, inst));
  }

  /** DetachDisk: refused at once or accepted, the disk then Detaching; as attach(). */
  detach(diskId: string, instanceId: string): Promise<void> {
    const d = this.visibleDisk(diskId);
    this.instance(instanceId);
    if (d.status === 'Available') throw new AcsError('InvalidDisk.AlreadyDetached', 404, 'The specified disk has already been detached.');
    if (d.instanceId !== instanceId) {
      throw new AcsError('DependencyViolation', 403, 'The specified disk has not been attached on the specified instance.');
    }
    if (d.status !== 'In_use') throw wrongStatus();
    Object.assign(d, { status: 'Detaching', error: undefined });
    return this.transition(d, () => this.finishDetach(d));
  }

  /** Ends every transition and unplugs every disk: no loop device over an image, no link left. */
  async close(): Promise<void> {
    this.closing.abort();
    await Promise.all([...this.disks.values()].map((d) => d.busy));
    for (const d of this.disks.values()) {
      try {
        if (d.link) await unlink(d.link);
        if (d.device) await unplug(d.device, d.image);
        // A device whose record was lost to a failure above still backs the image.
        for (const dev of await loopsOver(d.image)) await unplug(dev, d.image);
      } catch (err) {
        this.failures.push(err as Error);
      }
      Object.assign(d, { status: 'Available', instanceId: undefined, device: undefined, link: undefined, legacyDevice: undefined });
    }
  }

  private visibleDisk(diskId: string): DiskRecord {
    const d = this.disks.get(diskId);
    // The endpoint is the region's: a disk of another region is not there at all.
    if (!d || d.regionId !== this.opts.regionId) throw notFoundDisk();
    return d;
  }

  private instance(instanceId: string): InstanceRecord {
    const inst = this.instances.get(instanceId);
    if (!inst) throw new AcsError('InvalidInstanceId.NotFound', 404, 'The specified InstanceId does not exist.');
    return inst;
  }

  private freeLetter(instanceId: string): string | undefined {
    const used = new Set([...this.disks.values()].filter((d) => d.instanceId === instanceId).map((d) => d.legacyDevice));
    for (let i = 0; i < MAX_DATA_DISKS; i++) {
      const letter = String.fromCharCode('b'.charCodeAt(0) + i);
      if (!used.has(`/dev/xvd${letter}`)) return letter;
    }
    return undefined;
  }

  private transition(d: DiskRecord, work: () => Promise<void>): Promise<void> {
    const done = work().catch((err: Error) => {
      if (this.closing.signal.aborted) return;
      this.failures.push(err);
      d.error = err.message;
      console.error(`ecs-cloud: ${d.diskId}: ${err.message}`);
    });
    d.busy = done.finally(() => (d.busy = undefined));
    return d.busy;
  }

  private async finishAttach(d: DiskRecord, inst: InstanceRecord): Promise<void> {
    try {
      await sleep(this.opts.attachMs, undefined, { signal: this.closing.signal });
      d.device = await plugIn(d.image);
      if (this.closing.signal.aborted) return; // close() unplugs it
      d.link = await link(inst.byIdDir, byIdName(inst.naming, d.serialNumber, d.diskId), d.device);
      if (this.closing.signal.aborted) return;
      Object.assign(d, { status: 'In_use', attachedTime: Date.now() });
    } catch (err) {
      if (this.closing.signal.aborted) return;
      // Undo what was done, so that the disk is Available again, as after a failed attach on ECS.
      if (d.link) await unlink(d.link).catch(() => {});
      if (d.device) await unplug(d.device, d.image).catch(() => {});
      Object.assign(d, { status: 'Available', instanceId: undefined, device: undefined, link: undefined, legacyDevice: undefined });
      throw err;
    }
  }

  private async finishDetach(d: DiskRecord): Promise<void> {
    try {
      await sleep(this.opts.detachMs, undefined, { signal: this.closing.signal });
      // The link goes first, as udev removes it when the device leaves.
      if (d.link) await unlink(d.link);
      d.link = undefined;
      if (d.device) await unplug(d.device, d.image);
      Object.assign(d, { status: 'Available', instanceId: undefined, device: undefined, legacyDevice: undefined, detachedTime: Date.now() });
    } catch (err) {
      if (this.closing.signal.aborted) return;
      // ECS rolls a failed detach back: the disk stays with the instance.
      d.status = 'In_use';
      throw err;
    }
  }
}
