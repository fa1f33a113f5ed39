// The `type=nas` option table (docs/volumes.md, "NAS volumes (NFS)"), as a schema, and the NFS mount options users may
// write. Values are normalised so that one volume written two ways compares equal.
import { isIP } from 'node:net';
import { z } from 'zod';
import { booleanOption, canonicalizeKeys, describeIssues, OptionsError, parsedString, subPathOption } from '../options.js';

export const NAS_KEYS = ['type', 'server', 'path', 'vers', 'options', 'mode', 'readonly'] as const;

export type NfsVersion = '3' | '4.0' | '4.1';

export interface NasSpec {
  /** a host name or an IP address (IPv6 without brackets) */
  server: string;
  /** '/' or '/export/sub' on the server */
  path: string;
  vers: NfsVersion;
  /** NFS mount options, checked against the allow-list; the version's defaults unless given */
  options: string[];
  /** four octal digits, applied to the volume root at mount */
  mode?: string;
  readonly: boolean;
}

/** What the Alibaba Cloud CSI driver mounts with, per version (`options=none` means none of these). */
export const DEFAULT_NFS_OPTIONS: Record<NfsVersion, readonly string[]> = {
  '3': ['nolock', 'proto=tcp', 'rsize=1048576', 'wsize=1048576', 'hard', 'timeo=600', 'retrans=2', 'noresvport'],
  '4.0': ['noresvport'],
  '4.1': ['noresvport'],
};

const NUMBER = /^[0-9]{1,9}$/;

/**
 * Kernel NFS options users may give: name -> what its value must look like (null: a flag).
 * Options ossnas owns are refused with the key to use instead; anything else is refused, so a
 * value can never smuggle in a different server address or an option the kernel would misread.
 */
const ALLOWED: Record<string, RegExp | null> = {
  ...Object.fromEntries(['rsize', 'wsize', 'timeo', 'retrans', 'actimeo', 'acregmin', 'acregmax', 'acdirmin', 'acdirmax'].map((k) => [k, NUMBER])),
  port: /^[0-9]{1,5}$/,
  mountport: /^[0-9]{1,5}$/,
  nconnect: /^([1-9]|1[0-6])$/,
  proto: /^(tcp|tcp6|udp|udp6|rdma)$/,
  mountproto: /^(tcp|tcp6|udp|udp6)$/,
  sec: /^(sys|none|krb5|krb5i|krb5p)(:(sys|none|krb5|krb5i|krb5p))*$/,
  lookupcache: /^(all|none|pos|positive)$/,
  local_lock: /^(none|all|flock|posix)$/,
  ...Object.fromEntries(
    [
      'hard', 'soft', 'softerr', 'intr', 'nointr', 'lock', 'nolock', 'resvport', 'noresvport', 'ac', 'noac', 'cto',
      'nocto', 'sharecache', 'nosharecache', 'rdirplus', 'nordirplus', 'acl', 'noacl', 'fsc', 'nofsc',
      'noatime', 'atime', 'nodiratime', 'relatime', 'norelatime', 'strictatime', 'nosuid', 'nodev', 'noexec',
    ].map((k) => [k, null]),
  ),
};

/** Options that have their own volume option, or that ossnas sets itself. */
const OWNED: Record<string, string> = {
  vers: "use the 'vers' option",
  nfsvers: "use the 'vers' option",
  minorversion: "use the 'vers' option",
  ro: "use the 'readonly' option",
  rw: "use the 'readonly' option",
  addr: 'ossnas resolves the server itself',
  clientaddr: 'ossnas leaves it to the kernel',
  mounthost: "use the 'server' option",
  mountaddr: "use the 'server' option",
  bg: 'ossnas mounts in the foreground, within its deadline',
  fg: 'ossnas mounts in the foreground, within its deadline',
  retry: 'ossnas mounts in the foreground, within its deadline',
};

/** 'hard,timeo=600 , nolock' -> ['hard', 'timeo=600', 'nolock']; 'none' -> []. Throws naming the bad part. */
export function parseNfsOptions(text: string): string[] {
  const trimmed = text.trim();
  if (trimmed.toLowerCase() === 'none') return [];
  const out: string[] = [];
  const seen = new Set<string>();
  for (const part of trimmed.split(',').map((p) => p.trim())) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const name = (eq < 0 ? part : part.slice(0, eq)).toLowerCase();
    const value = eq < 0 ? undefined : part.slice(eq + 1);
    if (name in OWNED) throw new Error(`'${name}' is not accepted here: ${OWNED[name]}`);
    if (!(name in ALLOWED)) {
      throw new Error(`'${name}' is not an NFS option ossnas accepts; accepted: ${Object.keys(ALLOWED).join(', ')} (or 'none')`);
    }
    const pattern = ALLOWED[name];
    if (pattern === null && value !== undefined) throw new Error(`'${name}' takes no value`);
    if (pattern && (value === undefined || !pattern.test(value))) throw new Error(`'${name}' needs a value matching ${pattern.source}`);
    if (seen.has(name)) throw new Error(`'${name}' is given twice`);
    seen.add(name);
    out.push(value === undefined ? name : `${name}=${value}`);
  }
  if (!out.length) throw new Error("give NFS options such as 'hard,timeo=600', or 'none' for no defaults");
  return out;
}

/** A DNS name or an IP address; IPv6 may come in brackets. Returned without brackets. */
export function normalizeServer(value: string): string {
  const v = value.trim();
  const bare = v.startsWith('[') && v.endsWith(']') ? v.slice(1, -1) : v;
  if (isIP(bare)) return bare.toLowerCase();
  if (v.includes(':/') || v.includes('/')) throw new Error("a server is a host name or IP address; give the export path in the 'path' option");
  if (!/^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/.test(v)) {
    throw new Error('expected a host name such as xxx.cn-hangzhou.nas.aliyuncs.com or an IP address');
  }
  return v.replace(/\.$/, '').toLowerCase();
}

const VERSIONS: Record<string, NfsVersion> = { '3': '3', '4': '4.0', '4.0': '4.0', '4.1': '4.1' };

const schema = z.object({
  type: z.literal('nas'),
  server: parsedString(normalizeServer, z.string({ error: 'the NFS server, a host name or IP address (the export path goes in path)' })),
  path: subPathOption.optional(),
  vers: z
    .string()
    .transform((v) => v.trim().replace(/^v/i, ''))
    .pipe(z.enum(Object.keys(VERSIONS) as [string, ...string[]], { error: "expected 3, 4.0 or 4.1 ('4' means 4.0)" }))
    .transform((v) => VERSIONS[v]!)
    .optional(),
  options: parsedString(parseNfsOptions).optional(),
  mode: z
    .string()
    .regex(/^0?[0-7]{3,4}$/, 'expected an octal mode such as 0755 or 775')
    .transform((v) => Number.parseInt(v, 8).toString(8).padStart(4, '0'))
    .optional(),
  readonly: booleanOption.optional(),
});

export function toSpec(raw: Record<string, string>): NasSpec {
  const options = canonicalizeKeys(raw, NAS_KEYS, 'type=nas');
  const result = schema.safeParse(options);
  if (!result.success) throw new OptionsError(describeIssues(result.error, options));
  const o = result.data;
  const vers = o.vers ?? '3';
  const readonly = o.readonly ?? false;
  if (o.mode !== undefined && readonly) {
    throw new OptionsError("option 'mode' cannot be applied to a readonly volume; drop one of them");
  }
  return {
    server: o.server,
    path: o.path ?? '/',
    vers,
    options: o.options ?? [...DEFAULT_NFS_OPTIONS[vers]],
    ...(o.mode !== undefined && { mode: o.mode }),
    readonly,
  };
}

/** The normalised option map kept in state; defaults are written out so equal volumes compare equal. */
export function fromSpec(spec: NasSpec): Record<string, string> {
  const out: Record<string, string> = {
    type: 'nas',
    server: spec.server,
    path: spec.path,
    vers: spec.vers,
    options: spec.options.length ? spec.options.join(',') : 'none',
    readonly: String(spec.readonly),
  };
  if (spec.mode !== undefined) out.mode = spec.mode;
  return out;
}

/** `server:/path` as the kernel wants it (IPv6 in brackets). */
export function nfsSource(spec: Pick<NasSpec, 'server' | 'path'>): string {
  return `${isIP(spec.server) === 6 ? `[${spec.server}]` : spec.server}:${spec.path}`;
}

/**
 * The `mount` arguments for a volume: `-i` skips the mount.nfs helper (the host needs no
 * nfs-common; the kernel does the mount protocol itself), so the resolved address goes in `addr=`.
 * `-c` keeps mount from resolving the target path, which would hang on a dead server's mount.
 */
export function nfsMountArgs(spec: NasSpec, address: string, target: string, exportPath = spec.path): string[] {
  const source = nfsSource({ server: spec.server, path: exportPath });
  const opts = [`vers=${spec.vers}`, ...spec.options, spec.readonly ? 'ro' : 'rw', `addr=${address}`];
  return ['-i', '-c', '-t', spec.vers === '3' ? 'nfs' : 'nfs4', '-o', opts.join(','), source, target];
}

/** The TCP port the server's NFS service listens on: 2049 unless `port=` says otherwise. */
export function nfsPort(spec: NasSpec): number {
  const given = spec.options.find((o) => o.startsWith('port='));
  const n = given ? Number(given.slice(5)) : 0;
  return n > 0 ? n : 2049;
}
