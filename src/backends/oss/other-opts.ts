// `otherOpts`: extra `-o` options for the volume's FUSE client, only from that client's
// allow-list, so no volume option can change the mount target, the credentials, or the plugin's
// own choices (allow_other, uid, ...). One grammar for both clients: s3fs's `-o name=value`, which
// rclone's own mount helper also takes (`-o vfs_cache_mode=writes` for `--vfs-cache-mode writes`).
import { OptionsError } from '../options.js';
import { RCLONE_ALLOWED, RCLONE_OWNED, RCLONE_REFUSED } from './rclone-opts.js';

/** The client that serves an OSS volume (the volume option `client`). */
export type OssClientName = 's3fs' | 'rclone';

const NUMBER = /^[0-9]{1,12}$/;
const FLAG = null;

/**
 * name -> accepted value (regex), or null for a flag that takes no value. Each was tried on the
 * s3fs the plugin ships (Debian's 1.90); options of later s3fs versions (free_space_ratio,
 * region, compat_dir, disable_noobj_cache) are refused by it ("fuse: unknown option"), so they
 * are not here. A few are ossfs's alone: see OSSFS_ONLY.
 */
const ALLOWED: Record<string, RegExp | null> = {
  connect_timeout: NUMBER,
  readwrite_timeout: NUMBER,
  retries: NUMBER,
  multipart_size: NUMBER,
  multipart_copy_size: NUMBER,
  singlepart_copy_limit: NUMBER,
  parallel_count: NUMBER,
  multireq_max: NUMBER,
  max_dirty_data: NUMBER,
  max_stat_cache_size: NUMBER,
  stat_cache_expire: NUMBER,
  stat_cache_interval_expire: NUMBER,
  ensure_diskfree: NUMBER,
  list_object_max_keys: NUMBER,
  mp_umask: /^0?[0-7]{1,3}$/,
  dbglevel: /^(crit|critical|err|error|warn|warning|info|information|debug|dbg)$/,
  endpoint: /^[a-z0-9-]{1,64}$/,
  storage_class: /^[A-Za-z_]{1,32}$/,
  default_acl: /^[a-z-]{1,40}$/,
  ssl_verify_hostname: /^[01]$/,
  public_bucket: /^1$/,
  nomultipart: FLAG,
  enable_noobj_cache: FLAG,
  use_path_request_style: FLAG,
  sigv2: FLAG,
  sigv4: FLAG,
  listobjectsv2: FLAG,
  complement_stat: FLAG,
  notsup_compat_dir: FLAG,
  nocopyapi: FLAG,
  norenameapi: FLAG,
  noxmlns: FLAG,
  nonempty: FLAG,
  kernel_cache: FLAG,
  enable_content_md5: FLAG,
  use_xattr: FLAG,
  no_check_certificate: FLAG,
  curldbg: FLAG,
  readdir_optimize: FLAG,
};

/** Options only Alibaba's ossfs accepts: with s3fs, a volume that asks for them is refused at Create. */
const OSSFS_ONLY = new Set(['readdir_optimize']);

/** Why `client` cannot mount with these options (canonical `-o a=1 -o b` text), or undefined. */
export function refusedByClient(client: 's3fs' | 'ossfs', otherOpts: string): string | undefined {
  if (client === 'ossfs' || !otherOpts) return undefined;
  const names = parseOtherOpts(otherOpts).map((o) => o.name).filter((n) => OSSFS_ONLY.has(n));
  if (names.length === 0) return undefined;
  return `invalid option 'otherOpts': ${names.map((n) => `'${n}'`).join(', ')} ${names.length > 1 ? 'are options' : 'is an option'} of ossfs, and this plugin mounts with s3fs, which refuses ${names.length > 1 ? 'them' : 'it'}`;
}

/** Options ossnas sets itself, and the volume option that controls each. */
const OWNED: Record<string, string> = {
  allow_other: 'always on',
  uid: "use the 'uid' option",
  gid: "use the 'gid' option",
  umask: "use the 'umask' option",
  ro: "use the 'readonly' option",
  url: "use the 'url' option",
  bucket: "use the 'bucket' option",
  passwd_file: "use the 'credentials' option",
  profile: "use the 'credentials' option",
  tmpdir: 'in the state directory, so that clients outlive an upgrade of the plugin',
};

/** The allow-list of s3fs (and ossfs): what a `client=s3fs` volume may give in otherOpts. */
export const ALLOWED_OTHER_OPTS = Object.keys(ALLOWED);

const TABLES: Record<
  OssClientName,
  { allowed: Record<string, RegExp | null>; owned: Record<string, string>; refused: Record<string, (value: string) => string | undefined> }
> = {
  s3fs: { allowed: ALLOWED, owned: OWNED, refused: {} },
  rclone: { allowed: RCLONE_ALLOWED, owned: RCLONE_OWNED, refused: RCLONE_REFUSED },
};

export interface OtherOpt {
  name: string;
  value?: string;
}

/**
 * Parses `-o a=1 -o b,c=2` (the CSI driver's form), `-oa=1` or a bare `a=1,b`, and returns the
 * options in order, checked against `client`'s allow-list. Throws OptionsError naming the
 * offending option.
 */
export function parseOtherOpts(text: string, client: OssClientName = 's3fs'): OtherOpt[] {
  const { allowed, owned, refused } = TABLES[client];
  const items: string[] = [];
  const tokens = text.trim().split(/[ \t]+/).filter(Boolean);
  for (let i = 0; i < tokens.length; i++) {
    let tok = tokens[i]!;
    if (tok === '-o') {
      const next = tokens[++i];
      if (next === undefined) throw new OptionsError("invalid option 'otherOpts': '-o' at the end has no value");
      tok = next;
    } else if (tok.startsWith('-o')) {
      tok = tok.slice(2);
    } else if (tok.startsWith('-')) {
      throw new OptionsError(`invalid option 'otherOpts': only '-o name[=value]' is accepted, got '${tok}'`);
    }
    items.push(...tok.split(',').filter(Boolean));
  }

  const seen = new Set<string>();
  return items.map((item) => {
    const eq = item.indexOf('=');
    const name = (eq < 0 ? item : item.slice(0, eq)).trim();
    const value = eq < 0 ? undefined : item.slice(eq + 1);
    if (name in owned) {
      throw new OptionsError(`invalid option 'otherOpts': '${name}' is set by ossnas (${owned[name]})`);
    }
    if (!(name in allowed)) {
      throw new OptionsError(
        `invalid option 'otherOpts': '${name}' is not allowed for ${client}; allowed: ${Object.keys(allowed).join(', ')}`,
      );
    }
    const pattern = allowed[name];
    if (pattern === null && value !== undefined) {
      throw new OptionsError(`invalid option 'otherOpts': '${name}' takes no value`);
    }
    if (pattern && (value === undefined || !pattern.test(value))) {
      throw new OptionsError(`invalid option 'otherOpts': '${name}' needs a value matching ${pattern.source}`);
    }
    const why = value === undefined ? undefined : refused[name]?.(value);
    if (why) throw new OptionsError(`invalid option 'otherOpts': '${name}=${value}' ${why}`);
    if (seen.has(name)) throw new OptionsError(`invalid option 'otherOpts': '${name}' is given twice`);
    seen.add(name);
    return value === undefined ? { name } : { name, value };
  });
}

/** The canonical text stored in state: `-o a=1 -o b`. */
export function formatOtherOpts(opts: OtherOpt[]): string {
  return opts.map((o) => `-o ${o.value === undefined ? o.name : `${o.name}=${o.value}`}`).join(' ');
}
