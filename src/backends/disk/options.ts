// The `type=disk` option table (docs/volumes.md, "Disk volumes"), as a schema.
import { z } from 'zod';
import { canonicalizeKeys, describeIssues, OptionsError, parseBoolean } from '../options.js';
import { PROFILE_NAME, PROFILE_NAME_RULE } from '../profiles.js';

export const DISK_KEYS = [
  'type',
  'size',
  'device',
  'diskId',
  'fsType',
  'mkfsOptions',
  'readonly',
  'detach',
  'forceDetach',
  'ecsCredentials',
] as const;

/** Keys that only a cloud disk (diskId=) takes. */
const CLOUD_ONLY_KEYS = ['detach', 'forceDetach', 'ecsCredentials'] as const;

/** An ECS cloud disk, attached to whichever host mounts it. */
export interface CloudDiskSpec {
  diskId: string;
  /** Detach at the last Unmount (the default), so that another host can attach it. */
  detach: boolean;
  /** Detach it from another instance that holds it, at Mount: that instance's writes are cut off. */
  forceDetach: boolean;
  /** Profile for the ECS API; absent: the plugin-wide one, else the instance's RAM role. */
  ecsCredentials?: string;
}

export type FsType = 'ext4' | 'xfs';

/** An image the plugin keeps (size), an existing block device on the host (device), or a cloud disk (cloud). */
export interface DiskSpec {
  /** bytes, for an image */
  size?: number;
  /** host path of an existing block device */
  device?: string;
  cloud?: CloudDiskSpec;
  fsType: FsType;
  /** argv words for mkfs, already checked against the allow-list */
  mkfsOptions: string[];
  readonly: boolean;
}

/** A path under /dev: no '.' or '..' segments, no characters a mount option could read twice. */
function isDevicePath(p: string): boolean {
  return /^\/dev\/[A-Za-z0-9_.:+\/-]{1,200}$/.test(p) && !p.split('/').some((seg) => seg === '.' || seg === '..');
}

/** ECS disk IDs: 'd-' and lower-case letters and digits (20 today). */
const DISK_ID = /^d-[a-z0-9]{6,40}$/;
const DISK_ID_RULE = "expected an ECS disk ID such as d-bp1g6zv0ce8oghu7k2ef";

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };
const MIN_SIZE: Record<FsType, number> = { ext4: 16 * 2 ** 20, xfs: 300 * 2 ** 20 };

/** '10G', '512M', '1.5T', '10GiB' -> bytes (binary units, as `truncate` and `df -h` use). */
export function parseSize(value: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(value.trim());
  if (!m) throw new Error(`expected a size such as 512M or 10G, got '${value}'`);
  const bytes = Math.floor(Number(m[1]) * UNITS[m[2]!.toUpperCase()]!);
  return bytes - (bytes % 4096);
}

/** mkfs arguments users may add: name -> what its value must look like. */
const MKFS_ALLOWED: Record<FsType, Record<string, RegExp>> = {
  ext4: { '-L': /^[A-Za-z0-9_.-]{1,16}$/, '-m': /^[0-9]{1,2}$/, '-i': /^[0-9]{4,8}$/, '-b': /^(1024|2048|4096)$/, '-N': /^[0-9]{1,10}$/ },
  xfs: { '-L': /^[A-Za-z0-9_.-]{1,12}$/ },
};

export function parseMkfsOptions(text: string, fsType: FsType): string[] {
  const words = text.trim().split(/[ \t]+/).filter(Boolean);
  const allowed = MKFS_ALLOWED[fsType];
  const out: string[] = [];
  for (let i = 0; i < words.length; i += 2) {
    const flag = words[i]!;
    const value = words[i + 1];
    const pattern = allowed[flag];
    if (!pattern) throw new Error(`'${flag}' is not allowed for ${fsType}; allowed: ${Object.keys(allowed).join(' ')}`);
    if (value === undefined || !pattern.test(value)) throw new Error(`'${flag}' needs a value matching ${pattern.source}`);
    out.push(flag, value);
  }
  return out;
}

const schema = z
  .object({
    type: z.literal('disk'),
    size: z.string().optional(),
    device: z.string().optional(),
    fsType: z.enum(['ext4', 'xfs'], { error: "expected 'ext4' or 'xfs'" }).optional(),
    mkfsOptions: z.string().optional(),
    readonly: z.string().optional(),
    diskId: z.string().regex(DISK_ID, DISK_ID_RULE).optional(),
    detach: z.string().optional(),
    forceDetach: z.string().optional(),
    ecsCredentials: z.string().regex(PROFILE_NAME, PROFILE_NAME_RULE).optional(),
  })
  .superRefine((o, ctx) => {
    const sources = (['size', 'device', 'diskId'] as const).filter((k) => o[k] !== undefined);
    if (sources.length > 1) {
      ctx.addIssue({ code: 'custom', path: [sources[1]!], message: `give one of size, device or diskId, not ${sources.join(' and ')}` });
    }
    if (o.device !== undefined && !isDevicePath(o.device)) {
      ctx.addIssue({ code: 'custom', path: ['device'], message: 'expected a device path such as /dev/vdb or /dev/disk/by-id/...' });
    }
    if (sources.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['size'],
        message: 'give size=10G (an image file the plugin keeps), device=/dev/... or diskId=d-... (an ECS cloud disk)',
      });
    }
    for (const k of CLOUD_ONLY_KEYS) {
      if (o[k] !== undefined && o.diskId === undefined) ctx.addIssue({ code: 'custom', path: [k], message: 'only a cloud disk (diskId=) takes it' });
    }
  });

export function toSpec(raw: Record<string, string>): DiskSpec {
  const options = canonicalizeKeys(raw, DISK_KEYS, 'type=disk');
  const result = schema.safeParse(options);
  if (!result.success) throw new OptionsError(describeIssues(result.error, options));
  const o = result.data;
  const fsType: FsType = o.fsType ?? 'ext4';
  let size: number | undefined;
  if (o.size !== undefined) {
    try {
      size = parseSize(o.size);
    } catch (e) {
      throw new OptionsError(`invalid option 'size': ${(e as Error).message}`);
    }
    if (size < MIN_SIZE[fsType]) {
      throw new OptionsError(`invalid option 'size': ${fsType} needs at least ${MIN_SIZE[fsType] / 2 ** 20}M`);
    }
  }
  let mkfsOptions: string[] = [];
  try {
    if (o.mkfsOptions) mkfsOptions = parseMkfsOptions(o.mkfsOptions, fsType);
  } catch (e) {
    throw new OptionsError(`invalid option 'mkfsOptions': ${(e as Error).message}`);
  }
  const flag = (key: 'readonly' | 'detach' | 'forceDetach', fallback: boolean): boolean => {
    const value = o[key] === undefined ? fallback : parseBoolean(o[key]);
    if (value === undefined) throw new OptionsError(`invalid option '${key}': expected true or false, got '${o[key]}'`);
    return value;
  };
  const readonly = flag('readonly', false);
  let source: Pick<DiskSpec, 'size' | 'device' | 'cloud'>;
  if (size !== undefined) source = { size };
  else if (o.device !== undefined) source = { device: o.device };
  else {
    source = {
      cloud: {
        diskId: o.diskId!,
        detach: flag('detach', true),
        forceDetach: flag('forceDetach', false),
        ...(o.ecsCredentials !== undefined && { ecsCredentials: o.ecsCredentials }),
      },
    };
  }
  return { ...source, fsType, mkfsOptions, readonly };
}

export function fromSpec(spec: DiskSpec): Record<string, string> {
  const out: Record<string, string> = { type: 'disk' };
  if (spec.size !== undefined) out.size = String(spec.size);
  if (spec.device !== undefined) out.device = spec.device;
  if (spec.cloud) {
    out.diskId = spec.cloud.diskId;
    out.detach = String(spec.cloud.detach);
    out.forceDetach = String(spec.cloud.forceDetach);
    if (spec.cloud.ecsCredentials !== undefined) out.ecsCredentials = spec.cloud.ecsCredentials;
  }
  out.fsType = spec.fsType;
  out.readonly = String(spec.readonly);
  if (spec.mkfsOptions.length) out.mkfsOptions = spec.mkfsOptions.join(' ');
  return out;
}
