// Where an attached ECS disk shows up on the host. The kernel names it in order of arrival
// (/dev/vdb, /dev/nvme1n1), so names can change between attaches; udev also links it by its
// serial number in /dev/disk/by-id (OSSNAS_DEVICE_BY_ID_DIR), which is the disk's own. ECS gives
// the serial in DescribeDisks (SerialNumber); older disks have none, and then the disk ID without
// its 'd-' is the serial.
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import path from 'node:path';
import { reachHostPath, type HostNamespace } from '../../host/hostns.js';

/** A virtio-blk serial holds at most 20 bytes (VIRTIO_BLK_ID_BYTES), and so does NVMe's (SN). */
const SERIAL_BYTES = 20;

export function serialOf(diskId: string, serialNumber: string): string {
  return serialNumber || diskId.replace(/^d-/, '');
}

/** The link names udev makes for an ECS disk: virtio-blk instances, then NVMe ones. */
export function byIdNames(serial: string): string[] {
  const seen = serial.slice(0, SERIAL_BYTES);
  return [`virtio-${seen}`, `nvme-Alibaba_Cloud_Elastic_Block_Storage_${seen}`];
}

/** Follows a link the way the host would (absolute targets from the host's root), to a host path. */
async function resolveOnHost(ns: Pick<HostNamespace, 'pid'>, hostLink: string): Promise<string | undefined> {
  let current = hostLink;
  for (let hops = 0; hops < 8; hops++) {
    const st = await lstat(reachHostPath(ns, current)).catch(() => undefined);
    if (!st) return undefined;
    if (!st.isSymbolicLink()) return current;
    current = path.resolve(path.dirname(current), await readlink(reachHostPath(ns, current)));
  }
  return undefined;
}

/**
 * The host path of the block device whose by-id link names `serial`, or undefined while there is
 * none (udev makes the link a moment after the disk arrives). Known names first; then, as
 * Alibaba's CSI driver does, any link whose name holds the serial.
 */
export async function findDeviceBySerial(ns: Pick<HostNamespace, 'pid'>, byIdDir: string, serial: string): Promise<string | undefined> {
  const known = byIdNames(serial);
  const others = ((await readdir(reachHostPath(ns, byIdDir)).catch(() => [])) as string[]).filter(
    (n) => !known.includes(n) && n.includes(serial) && !/-part[0-9]+$/.test(n),
  );
  for (const name of [...known, ...others]) {
    const device = await resolveOnHost(ns, path.join(byIdDir, name));
    if (device && (await stat(reachHostPath(ns, device)).catch(() => undefined))?.isBlockDevice()) return device;
  }
  return undefined;
}
