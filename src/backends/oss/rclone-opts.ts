// What a `client=rclone` volume may give in otherOpts, and how it reaches rclone: `-o name=value`
// becomes `--name-with-hyphens=value`, as rclone's own mount helper maps it. Each was tried with
// the rclone the plugin ships (Debian's 1.60); later versions' flags (vfs_cache_min_free_space,
// vfs_refresh) are refused by it, so they are not here.
import type { OtherOpt } from './other-opts.js';

/** rclone's durations: 30s, 5m, 1h30m, 500ms. */
const DURATION = /^([0-9]{1,9}(\.[0-9]{1,3})?(ms|s|m|h|d))+$/;
/** rclone's sizes: 64M, 1.5G, 512Ki, or off. */
const SIZE = /^([0-9]{1,12}(\.[0-9]{1,3})?([KMGTP]i?|[bB])?|off)$/;
const NUMBER = /^[0-9]{1,6}$/;
const BOOLEAN = /^(true|false)$/;

export const RCLONE_ALLOWED: Record<string, RegExp | null> = {
  // The write cache: its mode, how long after the last close an upload starts, and its bounds.
  vfs_cache_mode: /^(minimal|writes|full)$/,
  vfs_write_back: DURATION,
  vfs_cache_max_size: SIZE,
  vfs_cache_max_age: DURATION,
  vfs_cache_poll_interval: DURATION,
  // Reading: read-ahead on disk (cache mode full), in memory, and the ranged reads of an object.
  vfs_read_ahead: SIZE,
  buffer_size: SIZE,
  max_read_ahead: SIZE,
  vfs_read_chunk_size: SIZE,
  vfs_read_chunk_size_limit: SIZE,
  // How long listings and attributes are believed (what another host's change takes to show).
  dir_cache_time: DURATION,
  attr_timeout: DURATION,
  // modtimes from the listing (no request per file) or from each object's metadata.
  use_server_modtime: BOOLEAN,
  no_modtime: null,
  // Transfers and the S3 backend's multipart uploads.
  transfers: NUMBER,
  checkers: NUMBER,
  s3_chunk_size: SIZE,
  s3_upload_cutoff: SIZE,
  s3_upload_concurrency: NUMBER,
  s3_storage_class: /^[A-Za-z_]{1,32}$/,
  s3_acl: /^[a-z-]{1,40}$/,
  s3_disable_checksum: null,
  low_level_retries: NUMBER,
  retries: NUMBER,
  contimeout: DURATION,
  timeout: DURATION,
  log_level: /^(DEBUG|INFO|NOTICE|ERROR)$/,
  // Not an rclone flag: s3fs's word for a public bucket, kept for both clients. rclone gets a
  // config with no keys, and sends its requests unsigned.
  public_bucket: /^1$/,
};

/** Allowed options that change the config file, not rclone's flags. */
const NOT_FLAGS = new Set(['public_bucket']);

/** Values that match the allow-list and are still refused, and why. */
export const RCLONE_REFUSED: Record<string, (value: string) => string | undefined> = {
  // rclone-client.ts: at 0, rclone 1.60 starts the upload at the close, and loses the file when a
  // rename follows (git, atomic saves).
  vfs_write_back: (v) =>
    /^([0.]+(ms|s|m|h|d))+$/.test(v) ? 'must be more than 0: rclone 1.60 then loses a file renamed as its upload starts (an atomic save, git)' : undefined,
};

/** Flags ossnas sets itself, and what controls each. */
export const RCLONE_OWNED: Record<string, string> = {
  allow_other: 'always on',
  uid: "use the 'uid' option",
  gid: "use the 'gid' option",
  umask: "use the 'umask' option",
  read_only: "use the 'readonly' option",
  config: "use the 'credentials' option",
  cache_dir: 'in the state directory, one per volume, so that writes not yet uploaded are found again after a crash',
  s3_endpoint: "use the 'url' option",
  s3_provider: "chosen from the 'url' option: Alibaba for OSS endpoints, Other for the rest",
  s3_access_key_id: "use the 'credentials' option",
  s3_secret_access_key: "use the 'credentials' option",
  s3_session_token: "use the 'credentials' option",
  s3_env_auth: "use the 'credentials' option",
  s3_no_check_bucket: 'always on: a mount never creates a bucket',
  daemon: 'the client runs in the foreground, watched by the plugin',
};

/** The volume's otherOpts as rclone flags. */
export function rcloneFlags(opts: OtherOpt[]): string[] {
  return opts.filter((o) => !NOT_FLAGS.has(o.name)).map((o) => `--${o.name.replaceAll('_', '-')}${o.value === undefined ? '' : `=${o.value}`}`);
}
