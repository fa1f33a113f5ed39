// The guest side of an attached disk: a loop device over the disk's image stands in for the
// virtio-blk or NVMe device, and a link in the instance's by-id directory stands in for the one
// udev makes in /dev/disk/by-id. Links point at the absolute /dev/loopN (udev's are relative,
// ../../vdb, which only works from within /dev).
//
// Loop devices have no serial, so a plugin looking in /sys/block/<dev>/serial finds nothing here:
// the by-id link is the only way to the device, as on a kernel where udev did its job.
import { execa } from 'execa';
import { rm, symlink } from 'node:fs/promises';
import path from 'node:path';

export type DeviceNaming = 'virtio' | 'nvme';

/** virtio-blk and NVMe both give the guest at most 20 bytes of serial. */
const SERIAL_BYTES = 20;

/**
 * The by-id name the guest's udev gives the disk: from its serial, or, for a disk that has none,
 * from its id without 'd-' (the serial ECS gives such a disk's device).
 */
export function byIdName(naming: DeviceNaming, serialNumber: string, diskId: string): string {
  const serial = (serialNumber || diskId.replace(/^d-/, '')).slice(0, SERIAL_BYTES);
  return naming === 'nvme' ? `nvme-Alibaba_Cloud_Elastic_Block_Storage_${serial}` : `virtio-${serial}`;
}

/** A new loop device over `image`; its path. */
export async function plugIn(image: string): Promise<string> {
  return (await execa('losetup', ['--find', '--show', image])).stdout.trim();
}

export async function link(byIdDir: string, name: string, device: string): Promise<string> {
  const at = path.join(byIdDir, name);
  await rm(at, { force: true });
  await symlink(device, at);
  return at;
}

export async function unlink(at: string): Promise<void> {
  await rm(at, { force: true });
}

/**
 * Frees the loop device, if it is still the one over `image` (a device freed meanwhile may have
 * been taken by someone else since). If something still holds it open (a mount), the kernel only
 * marks it to be freed at the last close, and it stays until then: unlike ECS's hot-unplug, which
 * yanks the disk from under a mounted filesystem, the simulation never breaks a mount.
 */
export async function unplug(device: string, image: string): Promise<void> {
  const back = await execa('losetup', ['--list', '--noheadings', '--output', 'BACK-FILE', device], { reject: false });
  if (back.exitCode !== 0 || back.stdout.trim() !== image) return;
  const r = await execa('losetup', ['--detach', device], { reject: false });
  // Freed between the two commands is what we wanted too.
  if (r.exitCode !== 0 && !/No such device/i.test(r.stderr)) throw new Error(`losetup --detach ${device}: ${r.stderr}`);
}

/** The loop devices over `image`, for the sweep at close. */
export async function loopsOver(image: string): Promise<string[]> {
  const r = await execa('losetup', ['--list', '--noheadings', '--output', 'NAME', '--associated', image], { reject: false });
  return r.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
}
