// type=disk: an existing block device (device=), an ECS cloud disk attached on demand (diskId=,
// see cloud-disk.ts), or a size-limited volume in an image file the plugin keeps in its state
// directory (size=, so it survives upgrades). Formatted only when it holds no filesystem, never
// reformatted, and mounted in the host's mount namespace onto the host path of the mountpoint, so
// the mount outlives the plugin process.
import { access, open, stat } from 'node:fs/promises';
import path from 'node:path';
import { Deadline } from '../../host/deadline.js';
import { CommandError, run, RUN_OVERRUN_MS } from '../../host/exec.js';
import { ensureDir, removeFileQuietly } from '../../host/files.js';
import { reachHostPath, type HostNamespace } from '../../host/hostns.js';
import { BackendError, type Backend, type BackendContext, type MountIntent, type VolumeOptions } from '../types.js';
import { CloudDisks, DETACH_RESERVE_MS } from './cloud-disk.js';
import { DISK_KEYS, fromSpec, toSpec, type DiskSpec } from './options.js';

export function imagePath(stateDir: string, name: string): string {
  return path.join(stateDir, 'disks', `${name}.img`);
}

/** What low-level probing finds on a device or image: a filesystem, a partition table, or neither. */
export interface DiskContent {
  fsType?: string;
  partitionTable?: string;
}

/** `blkid -p -o export` output as DiskContent. */
export function parseBlkid(text: string): DiskContent {
  const fields = Object.fromEntries(text.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  return { ...(fields.TYPE && { fsType: fields.TYPE }), ...(fields.PTTYPE && { partitionTable: fields.PTTYPE }) };
}

/**
 * What `file` holds. blkid exits 2 both when it finds nothing and when it cannot read the device
 * (then it says why on stderr): only the silent case means empty, because "empty" leads to mkfs.
 */
async function contentOf(file: string, shown: string, deadline: Deadline, reserve = 0): Promise<DiskContent> {
  try {
    return parseBlkid(await run('blkid', ['-p', '-o', 'export', file], { timeoutMs: deadline.budget(10_000, RUN_OVERRUN_MS + reserve) }));
  } catch (err) {
    if (err instanceof CommandError && err.exitCode === 2 && !err.stderr.trim()) return {};
    throw new BackendError(`cannot tell what ${shown} holds, so it is not touched: ${(err as Error).message}`);
  }
}

export function mkfsArgs(spec: DiskSpec, file: string): [string, string[]] {
  return spec.fsType === 'ext4'
    ? ['mkfs.ext4', ['-q', '-F', ...spec.mkfsOptions, file]]
    : ['mkfs.xfs', ['-q', ...spec.mkfsOptions, file]];
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(() => true, () => false);
}

export class DiskBackend implements Backend {
  readonly type = 'disk';
  readonly keys = DISK_KEYS;
  readonly localFilesystem = true;
  private readonly clouds = new CloudDisks();

  parse(options: Record<string, string>): VolumeOptions {
    return fromSpec(toSpec(options));
  }

  /**
   * A device is one volume's: two would format it twice, or mount one filesystem twice. One device
   * has many names (/dev/vdb, /dev/disk/by-id/..., /dev//vdb): its device number tells it apart.
   * A device that is not there (yet) is known by its path, and Create refuses it anyway.
   */
  async exclusiveUse(options: VolumeOptions, ctx: BackendContext): Promise<{ key: string; shown: string } | undefined> {
    const { device, cloud } = toSpec(options);
    if (cloud) return { key: `ECS disk ${cloud.diskId}`, shown: `cloud disk ${cloud.diskId}` };
    if (!device) return undefined;
    const shown = `device ${path.posix.normalize(device)}`;
    const node = await ctx
      .hostNamespace()
      .then((ns) => this.deviceNode(device, ns))
      .catch(() => undefined);
    const st = node === undefined ? undefined : await stat(node).catch(() => undefined);
    return { key: st?.isBlockDevice() ? `block device ${st.rdev}` : shown, shown };
  }

  /** A cloud disk must exist in this region, when the API can be asked (a host off ECS, or a control plane that is down, records the volume anyway). */
  async check(options: VolumeOptions, ctx: BackendContext, deadline: Deadline): Promise<void> {
    const spec = toSpec(options);
    if (spec.cloud) {
      await this.clouds.check(spec.cloud, ctx, deadline);
      return;
    }
    if (!spec.device) return;
    try {
      await this.deviceNode(spec.device, await ctx.hostNamespace());
    } catch (err) {
      throw err instanceof BackendError ? err : new BackendError((err as Error).message);
    }
  }

  describe(options: VolumeOptions): Record<string, unknown> {
    const spec = toSpec(options);
    let source: Record<string, unknown>;
    if (spec.cloud) {
      const { diskId, detach, forceDetach, ecsCredentials } = spec.cloud;
      source = { diskId, detach, forceDetach, ...(ecsCredentials && { ecsCredentials }) };
    } else if (spec.device) source = { device: spec.device };
    else source = { size: `${Math.round(spec.size! / 2 ** 20)}M` };
    return { ...source, fsType: spec.fsType, readonly: spec.readonly };
  }

  /** A cloud disk's attachment as last seen: attachState, instanceId, device, and a note when something is off. */
  observed(name: string, options: VolumeOptions): Record<string, unknown> | undefined {
    return options.diskId === undefined ? undefined : { ...this.clouds.view(name) };
  }

  /**
   * Our path to the host's device node (the plugin's own /dev holds only what config.json
   * declares; the host's is reached through the target's root), after checking it is a block device.
   */
  private async deviceNode(device: string, ns: HostNamespace): Promise<string> {
    const local = reachHostPath(ns, device);
    const st = await stat(local).catch(() => undefined);
    if (!st) throw new BackendError(`device ${device} does not exist on the host`);
    if (!st.isBlockDevice()) throw new BackendError(`device ${device} is not a block device`);
    return local;
  }

  /**
   * Formats `node` only when it holds neither a filesystem nor a partition table (a whole disk
   * whose partitions hold the data looks empty to a filesystem probe); a different filesystem is
   * an error.
   */
  private async formatIfEmpty(node: string, shown: string, spec: DiskSpec, deadline: Deadline, reserve = 0): Promise<void> {
    const { fsType: found, partitionTable } = await contentOf(node, shown, deadline, reserve);
    if (partitionTable && !found) {
      throw new BackendError(
        `${shown} holds a ${partitionTable} partition table; it is never formatted (give one of its partitions, or a device that holds a filesystem)`,
      );
    }
    if (!found) {
      const [cmd, args] = mkfsArgs(spec, node);
      await run(cmd, args, { timeoutMs: deadline.budget(Infinity, RUN_OVERRUN_MS + reserve) });
    } else if (found !== spec.fsType) {
      throw new BackendError(
        `${shown} holds a ${found} filesystem, not ${spec.fsType}; it is never reformatted (create the volume with fsType=${found} to use it)`,
      );
    }
  }

  /** Creates the sparse image (0600) if missing and formats it if it has no filesystem; never reformats. */
  private async prepareImage(name: string, spec: DiskSpec, ctx: BackendContext, deadline: Deadline): Promise<string> {
    const img = imagePath(ctx.settings.stateDir, name);
    if (!(await exists(img))) {
      await ensureDir(path.dirname(img), 0o700);
      const fh = await open(img, 'wx', 0o600);
      try {
        await fh.truncate(spec.size);
      } finally {
        await fh.close();
      }
    }
    await this.formatIfEmpty(img, `image ${img}`, spec, deadline);
    return img;
  }

  async mount(
    name: string,
    options: VolumeOptions,
    target: string,
    ctx: BackendContext,
    deadline: Deadline,
    intent: MountIntent = 'mount',
  ): Promise<void> {
    const spec = toSpec(options);
    if (spec.cloud) {
      // forceDetach is the Mount's to apply: a repair after a restart never takes a disk from another instance.
      const attached = await this.clouds.attach(name, spec.cloud, ctx, deadline, intent === 'mount');
      try {
        await this.mountDevice(attached.device, `disk ${spec.cloud.diskId} (${attached.device})`, spec, target, ctx, deadline, attached.attachedNow ? DETACH_RESERVE_MS : 0);
      } catch (err) {
        if (attached.attachedNow) await this.clouds.undoAttach(name, spec.cloud, ctx, deadline);
        throw err;
      }
      return;
    }
    const stepMs = (cap = Infinity) => deadline.budget(cap, RUN_OVERRUN_MS);
    try {
      const ns = await ctx.hostNamespace();
      if (spec.device) {
        await this.mountDevice(spec.device, `device ${spec.device}`, spec, target, ctx, deadline);
        return;
      }
      const img = await this.prepareImage(name, spec, ctx, deadline);
      const [hostImg, hostTarget] = [await ns.hostPath(img), await ns.hostPath(target)];
      // A container may still hold the image through a loop device of an earlier mount (the
      // plugin was disabled with -f, which unmounts our side only). Mounting the image through a
      // second loop device would put two ext4/xfs instances on one image: reuse the device.
      const attached = (await ns.run('losetup', ['-n', '-O', 'NAME', '-j', hostImg], { timeoutMs: stepMs(10_000) }))
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean);
      const args = attached[0]
        ? ['-t', spec.fsType, ...(spec.readonly ? ['-o', 'ro'] : []), attached[0], hostTarget]
        : ['-t', spec.fsType, '-o', spec.readonly ? 'loop,ro' : 'loop', hostImg, hostTarget];
      await ns.run('mount', args, { timeoutMs: stepMs() });
    } catch (err) {
      if (err instanceof BackendError) throw err;
      throw new BackendError(`mounting ${spec.device ? `device ${spec.device}` : 'the disk image'} failed: ${(err as Error).message}`);
    }
  }

  /** Formats a block device if it is blank, and mounts it; `reserve` is kept back for what the caller must undo on failure. */
  private async mountDevice(
    device: string,
    shown: string,
    spec: DiskSpec,
    target: string,
    ctx: BackendContext,
    deadline: Deadline,
    reserve = 0,
  ): Promise<void> {
    try {
      const ns = await ctx.hostNamespace();
      await this.formatIfEmpty(await this.deviceNode(device, ns), shown, spec, deadline, reserve);
      const ro = spec.readonly ? ['-o', 'ro'] : [];
      await ns.run('mount', ['-t', spec.fsType, ...ro, device, await ns.hostPath(target)], { timeoutMs: deadline.budget(Infinity, RUN_OVERRUN_MS + reserve) });
    } catch (err) {
      if (err instanceof BackendError) throw err;
      throw new BackendError(`mounting ${shown} failed: ${(err as Error).message}`);
    }
  }

  async unmount(name: string, options: VolumeOptions, target: string, ctx: BackendContext, deadline: Deadline): Promise<void> {
    const { cloud } = toSpec(options);
    try {
      const ns = await ctx.hostNamespace();
      // The loop device was attached with autoclear: it goes away with the mount.
      await ns.run('umount', [await ns.hostPath(target)], { timeoutMs: deadline.budget() });
    } catch (err) {
      throw new BackendError(`unmounting ${target} failed: ${(err as Error).message}`);
    }
    // The mount is gone, which is what the caller asked: a detach that fails now is done later.
    if (cloud) await this.clouds.release(name, cloud, ctx, deadline, true);
  }

  needsSettle(options: VolumeOptions): boolean {
    return options.diskId !== undefined;
  }

  /** A cloud disk that no reference needs is detached (after a crash between AttachDisk and the mount, or a detach left for later). */
  async settle(name: string, options: VolumeOptions, ctx: BackendContext, deadline: Deadline): Promise<void> {
    const { cloud } = toSpec(options);
    if (cloud) await this.clouds.release(name, cloud, ctx, deadline, false);
  }

  /** A cloud disk mounted by an earlier process: Status shows where ECS says it is. */
  async adopt(name: string, options: VolumeOptions, _target: string, ctx: BackendContext): Promise<void> {
    const { cloud } = toSpec(options);
    if (cloud) await this.clouds.adopt(name, cloud, ctx, Deadline.after(ctx.settings.mountTimeoutMs));
  }

  /** Deletes the image the plugin made for a size= volume; a device's data is never touched. */
  async remove(name: string, options: VolumeOptions, ctx: BackendContext): Promise<void> {
    if (toSpec(options).size !== undefined) await removeFileQuietly(imagePath(ctx.settings.stateDir, name));
  }
}
