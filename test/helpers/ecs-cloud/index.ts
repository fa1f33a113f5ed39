// A local stand-in for one Alibaba Cloud region, for tests: the ECS API (AttachDisk, DetachDisk,
// DescribeDisks), checked as the real one checks requests (V3 signatures, keys, STS tokens,
// dates, nonces), each instance's metadata service (IMDSv2, RAM role credentials that rotate),
// and real block devices: an attached disk is a loop device over the disk's image, linked from
// the instance's by-id directory. Each part of this folder says at its head what it simulates.
import path from 'node:path';
import { type ApiContext, type ApiRecord, type FaultMode, serveApi } from './api.js';
import { NonceBook } from './authenticate.js';
import type { DeviceNaming } from './devices.js';
import { Fleet, type SimDisk } from './disks.js';
import { KeyRing } from './keys.js';
import { Listener } from './listener.js';
import { InstanceMetadata, type SimInstance } from './metadata.js';

export type { ApiRecord, FaultMode } from './api.js';
export type { DiskStatus, SimDisk } from './disks.js';
export type { DeviceNaming } from './devices.js';
export type { SimInstance } from './metadata.js';

export interface EcsCloudOptions {
  /** A directory the test owns: disk images (disks/) and instances' by-id directories (instances/<id>/by-id). */
  dir: string;
  /** Default 'cn-hangzhou'. */
  regionId?: string;
  /** Default 'cn-hangzhou-h' (instances and this region's disks are there unless told otherwise). */
  zoneId?: string;
  /** Long-term (RAM user) keys the API accepts, id -> secret. */
  accessKeys?: Record<string, string>;
  /** How long a disk stays Attaching before it is In_use (default 300 ms). */
  attachMs?: number;
  /** How long a disk stays Detaching before it is Available (default 300 ms). */
  detachMs?: number;
}

export interface AddInstanceOptions {
  /** The RAM role attached to the instance (default 'EcsDiskRole'); null for none. */
  roleName?: string | null;
  /** Lifetime of each STS triple its metadata hands out (default 6 h). */
  credentialTtlMs?: number;
  /** The by-id names its disks get: virtio-<serial> (default) or nvme-Alibaba_Cloud_Elastic_Block_Storage_<serial>. */
  naming?: DeviceNaming;
  /** Default: the cloud's zone. */
  zoneId?: string;
}

export interface AddDiskOptions {
  /** Default: 'd-' and 20 random [a-z0-9]. */
  diskId?: string;
  sizeMiB: number;
  /** Default: the id without 'd-'; '' for a disk that has none. */
  serialNumber?: string;
  /** Default: the cloud's region. A disk of another region is invisible to this region's endpoint. */
  regionId?: string;
  /** Default: the cloud's zone for its region, '<region>-a' for another. */
  zoneId?: string;
}

export class Faults {
  delayMs = 0;
  /** When set, only this action's answers are delayed. */
  delayOnly: string | undefined = undefined;
  private current: FaultMode = 'up';

  constructor(private readonly api: Listener) {}

  get mode(): FaultMode {
    return this.current;
  }

  /**
   * 'down' stops listening at once and cuts every connection: a new connection is refused
   * (ECONNREFUSED), while a client that reuses its idle keep-alive connection before noticing the
   * cut gets ECONNRESET, as with a real server going away. 'up' (and 'hang', 'error500') listen
   * again within a tick, on the same port.
   */
  set mode(m: FaultMode) {
    if (!['up', 'down', 'hang', 'error500', 'throttle'].includes(m)) throw new Error(`unknown fault mode ${String(m)}`);
    this.current = m;
    if (m === 'down') this.api.down();
    else this.api.up().catch((err: Error) => console.error(`ecs-cloud: the API could not listen again: ${err.message}`));
  }
}

export class EcsCloud {
  readonly regionId: string;
  readonly zoneId: string;
  /** Every API request, in arrival order, refused ones included. */
  readonly requests: ApiRecord[] = [];
  /** Set at any time: delayMs delays every answer (the work is done first); mode as FaultMode says. */
  readonly faults: Faults;
  private readonly keys: KeyRing;
  private readonly fleet: Fleet;
  private readonly api: Listener;
  private readonly metadata = new Map<string, InstanceMetadata>();
  private closed: Promise<void> | undefined;

  private constructor(opts: EcsCloudOptions) {
    this.regionId = opts.regionId ?? 'cn-hangzhou';
    this.zoneId = opts.zoneId ?? 'cn-hangzhou-h';
    this.keys = new KeyRing({ ...opts.accessKeys });
    this.fleet = new Fleet({
      dir: path.resolve(opts.dir),
      regionId: this.regionId,
      zoneId: this.zoneId,
      attachMs: opts.attachMs ?? 300,
      detachMs: opts.detachMs ?? 300,
    });
    const ctx: ApiContext = {
      regionId: this.regionId,
      keys: this.keys,
      nonces: new NonceBook(),
      fleet: this.fleet,
      faults: undefined!,
      requests: this.requests,
    };
    this.api = new Listener((req, res) => {
      serveApi(req, res, ctx).catch(() => res.destroy());
    });
    this.faults = new Faults(this.api);
    ctx.faults = this.faults;
  }

  static async start(opts: EcsCloudOptions): Promise<EcsCloud> {
    const cloud = new EcsCloud(opts);
    await cloud.api.up();
    return cloud;
  }

  /** 'http://127.0.0.1:PORT'. */
  get endpoint(): string {
    return this.api.url;
  }

  /** '127.0.0.1:PORT': what the SDK's Config.endpoint takes (with protocol: 'http'). */
  get host(): string {
    return `127.0.0.1:${this.api.port}`;
  }

  async addInstance(id: string, opts: AddInstanceOptions = {}): Promise<SimInstance> {
    const inst = await this.fleet.addInstance(id, opts.naming ?? 'virtio', opts.zoneId);
    const meta = await InstanceMetadata.start({
      id,
      regionId: this.regionId,
      zoneId: inst.zoneId,
      byIdDir: inst.byIdDir,
      roleName: opts.roleName === undefined ? 'EcsDiskRole' : opts.roleName,
      credentialTtlMs: opts.credentialTtlMs ?? 6 * 3600_000,
      keys: this.keys,
    });
    this.metadata.set(id, meta);
    return meta;
  }

  addDisk(opts: AddDiskOptions): Promise<SimDisk> {
    return this.fleet.addDisk(opts);
  }

  /** The disk now (a copy). */
  disk(diskId: string): SimDisk {
    return this.fleet.snapshot(diskId);
  }

  /** As if someone else called AttachDisk: refused as the API would refuse it (an Error with code), else resolves once In_use. */
  async attachTo(diskId: string, instanceId: string): Promise<void> {
    await this.fleet.attach(diskId, instanceId);
    const d = this.disk(diskId);
    if (d.status !== 'In_use' || d.instanceId !== instanceId) throw new Error(`attach of ${diskId} to ${instanceId} failed: ${d.error ?? d.status}`);
  }

  /** As if someone else called DetachDisk; resolves once Available. */
  async detachFrom(diskId: string, instanceId: string): Promise<void> {
    await this.fleet.detach(diskId, instanceId);
    const d = this.disk(diskId);
    if (d.status !== 'Available') throw new Error(`detach of ${diskId} from ${instanceId} failed: ${d.error ?? d.status}`);
  }

  /**
   * Stops every server (connections in progress are cut, hanging ones too), ends transitions in
   * flight, and unplugs every disk: no loop device over an image and no link remains (a device
   * still mounted goes at its unmount, see devices.ts). Throws, after cleaning up, if a transition
   * failed on this machine during the cloud's life.
   */
  close(): Promise<void> {
    this.closed ??= (async () => {
      await this.api.close();
      await Promise.all([...this.metadata.values()].map((m) => m.close()));
      await this.fleet.close();
      if (this.fleet.failures.length) {
        throw new AggregateError(this.fleet.failures, `ecs-cloud: ${this.fleet.failures.length} transition(s) failed: ${this.fleet.failures.map((e) => e.message).join('; ')}`);
      }
    })();
    return this.closed;
  }
}
