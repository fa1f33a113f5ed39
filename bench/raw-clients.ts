// FUSE clients mounted on their own, without the plugin, for the benchmarks that compare clients:
// s3fs with the options ossnas gives its own that reach s3rver (docs/volumes.md, "Options the
// plugin sets itself"; not ensure_diskfree), and rclone mount with its S3 backend and its write
// cache (`--vfs-cache-mode writes`, the mode that can append). Keys go through a file or the
// environment, never argv.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { tempDir } from '../test/helpers/env.js';
import type { S3Server } from '../test/helpers/s3.js';
import { forceCleanBelow, log, sleep } from './fuse-host.js';
import { mountsBelow } from './process.js';

export type RawClientName = 's3fs' | 'rclone';
export const RAW_CLIENTS: readonly RawClientName[] = ['s3fs', 'rclone'];

export interface RawMount {
  client: RawClientName;
  /** The mountpoint */
  mp: string;
  pid: number;
  /** Unmounts, stops the client and removes its directory (once); what had to be forced is logged. */
  stop(): Promise<void>;
}

export interface RawMountOptions {
  /** More arguments for the client: `-o x` words for s3fs, flags for rclone */
  extra?: string[];
}

const KEY_ID = 'S3RVER';
const SECRET = 'S3RVER';

/** `--clients a,b`, checked. */
export function parseClients(list: string): RawClientName[] {
  const names = list.split(',').filter(Boolean);
  for (const c of names) if (!RAW_CLIENTS.includes(c as RawClientName)) throw new Error(`--clients: unknown client '${c}' (${RAW_CLIENTS.join(', ')})`);
  return names as RawClientName[];
}

export async function clientVersion(name: RawClientName): Promise<string> {
  const out = (await execa(name, ['--version'], { reject: false, all: true })).all ?? '';
  return /\b[Vv]?(\d+\.\d+(?:\.\d+)?)\b/.exec(out)?.[1] ?? '?';
}

/** The environment rclone gets: minimal, as rclone 1.60 refuses to start with AWS_CA_BUNDLE set ("unable to load custom CA bundle"), which some machines export. */
export function rcloneEnv(home: string): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, RCLONE_S3_ACCESS_KEY_ID: KEY_ID, RCLONE_S3_SECRET_ACCESS_KEY: SECRET };
}

/** rclone's arguments that reach s3rver: an on-the-fly remote of the "Other" provider (path-style requests). */
export function rcloneRemote(s3: S3Server, bucketPath: string): string[] {
  return [`:s3:${bucketPath}`, '--s3-provider', 'Other', '--s3-endpoint', s3.url];
}

function start(name: RawClientName, s3: S3Server, bucket: string, mp: string, dir: string, o: RawMountOptions): ResultPromise {
  if (name === 's3fs') {
    const opts = [`url=${s3.url}`, 'allow_other', 'use_path_request_style', `passwd_file=${path.join(dir, 'passwd')}`, `tmpdir=${dir}`];
    return execa('s3fs', [bucket, mp, '-f', ...opts.flatMap((x) => ['-o', x]), ...(o.extra ?? [])], { reject: false, all: true });
  }
  const [remote, ...flags] = rcloneRemote(s3, bucket);
  return execa('rclone', ['mount', remote!, mp, ...flags, '--allow-other', '--vfs-cache-mode', 'writes', '--cache-dir', path.join(dir, 'cache'), ...(o.extra ?? [])], {
    reject: false,
    all: true,
    extendEnv: false,
    env: rcloneEnv(dir),
  });
}

/** Mounts BUCKET with client NAME below a directory of its own, and waits until the mount is there. */
export async function mountRaw(name: RawClientName, s3: S3Server, bucket: string, o: RawMountOptions = {}): Promise<RawMount> {
  const t = await tempDir(`ossnas-bench-${name}-`);
  const mp = path.join(t.dir, 'mnt');
  await mkdir(mp);
  await writeFile(path.join(t.dir, 'passwd'), `${KEY_ID}:${SECRET}\n`, { mode: 0o600 });
  const client = start(name, s3, bucket, mp, t.dir, o);
  let out = '';
  let exited = false;
  client.all?.on('data', (c: Buffer) => (out += String(c)));
  client.once('exit', () => (exited = true));
  // Once, however often it is called (a benchmark's cleanup may call it again).
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= stopOnce());
  const stopOnce = async () => {
    await execa('fusermount', ['-u', mp], { reject: false });
    if ((await mountsBelow(t.dir)).length) await execa('umount', ['-l', mp], { reject: false });
    client.kill('SIGTERM');
    await client;
    const left = await forceCleanBelow(t.dir);
    if (left.length) log(`cleanup (${name}): ${left.join('; ')}`);
    await t.cleanup();
  };
  for (let i = 0; !(await mountsBelow(t.dir)).includes(mp); i++) {
    if (i > 200 || exited) {
      await stop();
      throw new Error(`${name} did not mount ${mp}: ${out.slice(-500)}`);
    }
    await sleep(50);
  }
  return { client: name, mp, pid: client.pid!, stop };
}
