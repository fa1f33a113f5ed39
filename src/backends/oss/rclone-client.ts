// client=rclone: `rclone mount` with its S3 backend, in the foreground like s3fs. What differs
// from s3fs, and why:
// - The keys go in a config file (0600, in the tmpfs run directory, removed once the mount is
//   ready), never argv or the environment. An env-defined remote would also do, but rclone then
//   names its cache directory after a hash of the values, secret included.
// - rclone mounts whatever the bucket and keys are, and a wrong key shows only as EIO on the
//   first listing; a missing bucket even lists as empty, and its writes would be kept in the
//   cache forever. So the bucket is checked first, with the same config (`rclone lsjson --stat`),
//   and a mount never creates a bucket (no_check_bucket).
// - Writes go to a cache on disk and are uploaded after close (`--vfs-cache-mode writes`), not
//   at close. The cache is one per volume in the state directory: a client killed before its
//   uploads finished uploads them at the volume's next mount. Unmounting does not wait for
//   them (rclone 1.60 exits at once): waitForUploads does, before any unmount.
import { readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { CommandError, run } from '../../host/exec.js';
import { ensureDir } from '../../host/files.js';
import { FuseMountError } from '../../host/fuse.js';
import { scrub } from '../../redact.js';
import type { Credentials } from './credentials.js';
import { isPublicBucket, type OssSpec } from './options.js';
import { parseOtherOpts } from './other-opts.js';
import { rcloneFlags } from './rclone-opts.js';

/** The remote's name in the config file; a volume's source is `ossnas:bucket/path`. */
const REMOTE = 'ossnas';
/** Below the clients' runtime directory (`<state>/fuse`): one cache per volume. */
export const RCLONE_CACHE_DIR = 'rclone';

/** Where a volume's cache is, below `runtimeDir` (the clients' working directory); relative if that is. */
export function rcloneCacheDir(runtimeDir: string, label = ''): string {
  return path.join(runtimeDir, RCLONE_CACHE_DIR, label);
}
/**
 * Whether the caches share the state's filesystem. rclone 1.60 keeps no free space (its
 * vfs_cache_min_free_space came later), so there a large write fills the state filesystem, and
 * every Create, Mount and Unmount fails until the file is uploaded and evicted. A filesystem of
 * its own, mounted on the host at <state>/fuse/rclone, bounds the caches (docs/operations.md).
 */
export async function cacheSharesStateFilesystem(cacheRoot: string, stateDir: string): Promise<boolean> {
  const [cache, state] = await Promise.all([stat(cacheRoot), stat(stateDir)]);
  return cache.dev === state.dev;
}

/** Cache directories of removed volumes that still held writes not uploaded: kept, never deleted. */
const KEPT_DIR = '.kept';

/**
 * rclone's S3 provider for an endpoint: Alibaba for OSS (virtual-hosted requests, OSS's quirks),
 * Other for any other S3 server (path-style requests, which an IP address needs).
 */
export function rcloneProvider(url: string): 'Alibaba' | 'Other' {
  return /(^|\.)aliyuncs\.com$/.test(new URL(url).hostname) ? 'Alibaba' : 'Other';
}

/** The config file's text: one remote, the keys in it (or none: a public bucket, as s3fs ignores its keys). */
export function rcloneConfig(spec: OssSpec, creds: Credentials | undefined): string {
  const lines = [`[${REMOTE}]`, 'type = s3', `provider = ${rcloneProvider(spec.url)}`, `endpoint = ${spec.url}`, 'env_auth = false', 'no_check_bucket = true'];
  if (creds && !isPublicBucket(spec.otherOpts)) {
    lines.push(`access_key_id = ${creds.akId}`, `secret_access_key = ${creds.akSecret}`);
    if (creds.securityToken) lines.push(`session_token = ${creds.securityToken}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The defaults an operator can change through otherOpts (rclone-opts.ts):
 * - writes cached on disk, uploaded 1 s after the file is closed. Not at once: with
 *   `--vfs-write-back=0s`, rclone 1.60 starts the upload at the close, and a rename that follows
 *   (git's `HEAD.lock` to `HEAD`, any atomic save) breaks it for good: 13 of 30 files written and
 *   renamed at once never reached the bucket, nor 5 of 5 of 40 MiB renamed 0.3 s after close.
 *   With 1 s (and rclone's own 5 s) none was lost, the rename 0 to 2 s after the close. 1 s, not
 *   5: a shorter wait for the Unmount, and a shorter window for a lost host;
 * - `ls -l` from the listing alone (the object's upload time as mtime), not a request per file;
 * - a directory listing believed for 10 s: what a change made on another host takes to show
 *   (rclone's default is 5 min).
 */
const DEFAULT_FLAGS = ['--vfs-cache-mode=writes', '--vfs-write-back=1s', '--use-server-modtime', '--dir-cache-time=10s'];

/** The argv of `rclone mount`: never a secret in it. */
export function rcloneMountArgs(spec: OssSpec, target: string, configFile: string, cacheDir: string): string[] {
  const own = ['--config', configFile, '--cache-dir', cacheDir, '--allow-other'];
  if (spec.uid !== undefined) own.push(`--uid=${spec.uid}`);
  if (spec.gid !== undefined) own.push(`--gid=${spec.gid}`);
  // rclone reads the mask as a number in any base: the leading 0 makes it octal.
  if (spec.umask !== undefined) own.push(`--umask=0${spec.umask}`);
  if (spec.readonly) own.push('--read-only');
  // The volume's own flags come last: rclone takes the last of a flag given twice.
  return ['mount', remotePath(spec), target, ...own, ...DEFAULT_FLAGS, ...rcloneFlags(parseOtherOpts(spec.otherOpts, 'rclone'))];
}

function remotePath(spec: OssSpec): string {
  return `${REMOTE}:${spec.bucket}${spec.path === '/' ? '' : spec.path}`;
}

/**
 * The bucket exists and the keys may list it: one request by a short-lived rclone with the same
 * config, before the mount. Throws FuseMountError with rclone's own words, secrets removed.
 */
export async function checkBucket(
  spec: OssSpec,
  configFile: string,
  env: Record<string, string>,
  timeoutMs: number,
  secrets: string[],
): Promise<void> {
  timeoutMs = Math.round(timeoutMs);
  const seconds = `${Math.max(1, Math.floor(timeoutMs / 1000))}s`;
  try {
    await run('rclone', ['lsjson', '--stat', `${REMOTE}:${spec.bucket}`, '--config', configFile, '--low-level-retries=1', '--retries=1', `--contimeout=${seconds}`, `--timeout=${seconds}`], {
      env,
      timeoutMs,
      secrets,
    });
  } catch (err) {
    const said = scrub(err instanceof CommandError ? err.stderr || err.message : (err as Error).message, secrets)
      .split('\n')
      .map((l) => l.replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /, '').trim())
      .filter(Boolean)
      .join(' ');
    throw new FuseMountError(`rclone could not reach bucket ${spec.bucket}: ${said}`);
  }
}

/** How many files in this cache are written but not uploaded yet (rclone marks them Dirty in vfsMeta). */
export async function pendingUploads(cacheDir: string): Promise<number> {
  let n = 0;
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    await Promise.all(
      entries.map(async (e) => {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) return walk(p);
        const meta = await readFile(p, 'utf8').catch(() => '');
        if (/"Dirty":\s*true/.test(meta)) n++;
      }),
    );
  };
  await walk(path.join(cacheDir, 'vfsMeta'));
  return n;
}

const UPLOAD_POLL_MS = 100;

/**
 * Waits until the client has uploaded every closed file, for at most `ms`. Resolves with how many
 * are still pending (0: all uploaded). rclone exits at unmount with uploads not done; they would
 * then wait in the cache for the volume's next mount on this host.
 */
export async function waitForUploads(cacheDir: string, ms: number, stillRunning: () => boolean): Promise<number> {
  const until = Date.now() + ms;
  for (;;) {
    const n = await pendingUploads(cacheDir);
    if (n === 0 || Date.now() >= until || !stillRunning()) return n;
    await new Promise((r) => setTimeout(r, UPLOAD_POLL_MS));
  }
}

/**
 * A removed volume's cache: deleted when every write in it was uploaded; otherwise moved to
 * `.kept/` (never deleted), so that a new volume of the same name does not upload it to its own
 * bucket. Returns where it was kept, if it was.
 */
export async function retireCache(cacheRoot: string, label: string): Promise<string | undefined> {
  if (!label || label.includes('/') || label.startsWith('.')) throw new Error(`not a volume's cache: '${label}'`);
  const dir = path.join(cacheRoot, label);
  if ((await pendingUploads(dir)) === 0) {
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
  const kept = path.join(cacheRoot, KEPT_DIR, `${label}.${new Date().toISOString().replace(/[:.]/g, '-')}`);
  await ensureDir(path.dirname(kept), 0o700);
  await rename(dir, kept);
  return kept;
}
