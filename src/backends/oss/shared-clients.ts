// One FUSE client per bucket (OSSNAS_SHARE_CLIENTS=true): CSI's shared path, per Docker host.
// The first volume of a client group (client-group.ts) starts a client that mounts the whole
// bucket at <mountRoot>/.ossnas-clients/<group>; every volume of the group, that one included, is
// a bind mount of its path in it. The second and later volumes cost a bind mount, not a client
// (about 5 MB of memory each, and a start).
//
// Nothing is counted in memory that a crash could lose: the volumes that use a shared mount are
// the bind mounts of its filesystem (same device) in our mount table. The client is stopped when
// the last of them is unmounted, and a restarted plugin finds both by reading the table.
//
// The bucket's content is the users'. A symlink in it (s3fs stores them) must never make a bind
// mount show something else, such as the plugin's or the host's own files: the shared mount is
// flagged nosymfollow (Linux 5.10), so the kernel refuses every symlink on the way to a volume's
// path, and each bind is then flagged symfollow again, as a client of its own would be.
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Deadline } from '../../host/deadline.js';
import { ensureDir, removeEmptyMountpoint } from '../../host/files.js';
import { adoptFuseClient, describeExit, unmountFuse, type FuseDaemon } from '../../host/fuse.js';
import { run } from '../../host/exec.js';
import { findMount, readMounts, topmostAt, type MountEntry } from '../../host/mountinfo.js';
import { probeMount } from '../../host/probe.js';
import { lazyUnmount } from '../../host/unmount.js';
import { KeyedMutex } from '../../keyed-mutex.js';
import { BackendError, type BackendContext } from '../types.js';

/** Below the mount root: a volume name never starts with a dot, so no volume can be mounted here. */
export const SHARED_DIR = '.ossnas-clients';
/** How long a shared mount found at a start may take to answer before it counts as unresponsive. */
const PROBE_MS = 2000;

export interface SharedVolume {
  name: string;
  /** its mountpoint */
  target: string;
  bucket: string;
  /** '/' or '/a/b' in the bucket */
  path: string;
  readonly: boolean;
}

export class SharedClients {
  /**
   * One start or stop at a time per shared mount: a client is never started twice. Binds run
   * side by side outside it (a restore binds a bucket's volumes 8 at a time), counted in
   * `binding` so that a stop never happens under one.
   */
  private readonly lock = new KeyedMutex();
  private readonly binding = new Map<string, number>();
  /** The clients we started or adopted, by their shared mount; an exit removes one. */
  private readonly clients = new Map<string, FuseDaemon>();
  /** The volumes bound to each shared mount, as far as this process knows: told when its client exits. */
  private readonly members = new Map<string, Set<string>>();

  constructor(private readonly commands: readonly string[]) {}

  rootOf(mountRoot: string, group: string): string {
    return path.join(mountRoot, SHARED_DIR, group);
  }

  /**
   * Binds the volume's path in the group's shared mount at its target, starting the group's
   * client first if none serves (`start` mounts it at the root it is given).
   */
  async mount(root: string, v: SharedVolume, start: () => Promise<FuseDaemon>, ctx: BackendContext, deadline: Deadline): Promise<void> {
    const shared = await this.lock.run(root, async () => {
      const serving = await this.ensureClient(root, v, start, ctx);
      this.binding.set(root, (this.binding.get(root) ?? 0) + 1); // before the lock goes
      return serving;
    });
    try {
      await bindPath(shared, v, deadline);
      this.memberSet(root).add(v.name);
    } catch (err) {
      this.bound(root);
      await this.lock.run(root, () => this.stopIfUnused(root, ctx)); // its first volume may not have got it
      throw err;
    }
    this.bound(root);
  }

  private bound(root: string): void {
    const left = (this.binding.get(root) ?? 1) - 1;
    if (left > 0) this.binding.set(root, left);
    else this.binding.delete(root);
  }

  /**
   * Unmounts a volume's bind mount, and the shared mount with its client when no other volume is
   * bound to it. False when `target` is not a bind of a shared mount (a client of its own).
   */
  async unmount(name: string, target: string, mountRoot: string, deadline: Deadline, ctx: BackendContext): Promise<boolean> {
    const shared = await sharedMountOf(target, mountRoot);
    if (!shared) return false;
    await unmountFuse(target, deadline.budget());
    this.members.get(shared.mountPoint)?.delete(name);
    await this.lock.run(shared.mountPoint, () => this.stopIfUnused(shared.mountPoint, ctx));
    return true;
  }

  /** After a start: a volume found bound to a shared mount; its client is watched from now on. False if it is not one. */
  async adopt(name: string, target: string, mountRoot: string, ctx: BackendContext): Promise<boolean> {
    const shared = await sharedMountOf(target, mountRoot);
    if (!shared) return false;
    const root = shared.mountPoint;
    await this.lock.run(root, async () => {
      this.memberSet(root).add(name);
      if (!shared.options.split(',').includes('nosymfollow')) await refuseSymlinks(root); // see ensureClient
      if (this.clients.has(root)) return;
      const daemon = await adoptFuseClient(root, this.commands);
      if (!daemon) throw new BackendError(`no ${this.commands.join(' or ')} client of the shared FUSE mount at ${root} was found`);
      this.watch(root, daemon, ctx);
    });
    return true;
  }

  /** How many volumes this process knows to be bound to the shared mount that serves `name`, for Status. */
  sharedWith(name: string): number | undefined {
    for (const set of this.members.values()) if (set.has(name)) return set.size;
    return undefined;
  }

  private memberSet(root: string): Set<string> {
    let set = this.members.get(root);
    if (!set) this.members.set(root, (set = new Set()));
    return set;
  }

  /** The group's shared mount, serving: the one there, or a new client's. */
  private async ensureClient(root: string, v: SharedVolume, start: () => Promise<FuseDaemon>, ctx: BackendContext): Promise<MountEntry> {
    const there = await findMount(root);
    const known = this.clients.get(root);
    if (there?.fsType.startsWith('fuse')) {
      // Ours, or made by an earlier plugin process: used if it serves, replaced only if provably
      // dead, and never bound from while it does not answer (the bind's lookups would wait on it).
      const p = await probeMount(root, PROBE_MS);
      if (p.state === 'unresponsive') {
        throw new BackendError(`the shared client of bucket ${v.bucket} does not answer (${p.reason}); it is kept, with the volumes it serves`);
      }
      if (p.state === 'serving') {
        if (known) return there;
        const daemon = await adoptFuseClient(root, this.commands);
        if (daemon) this.watch(root, daemon, ctx);
        else ctx.log.warn({ root }, 'the client of a shared FUSE mount was not found: its exit will not be noticed');
        // An earlier process that died between the client's start and the remount left it
        // following symlinks: never bind from it so.
        return there.options.split(',').includes('nosymfollow') ? there : await refuseSymlinks(root);
      }
      await lazyUnmount(root); // dead: its volumes are repaired one by one onto the new client
    }
    if (known) {
      this.clients.delete(root);
      known.stop();
    }
    await ensureDir(root, 0o755);
    const daemon = await start();
    this.watch(root, daemon, ctx);
    try {
      return await refuseSymlinks(root);
    } catch (err) {
      this.clients.delete(root);
      await unmountFuse(root).catch(() => lazyUnmount(root));
      throw err;
    }
  }

  /** Stops the shared mount's client once no volume is bound to it (found in the mount table, not counted). */
  private async stopIfUnused(root: string, ctx: BackendContext): Promise<void> {
    if (this.binding.has(root)) return; // a bind in flight: it is a user, or its failure looks again
    const mounts = await readMounts();
    const shared = topmostAt(mounts, root);
    if (shared && mounts.some((m) => m.device === shared.device && m.mountPoint !== root)) return;
    this.clients.delete(root); // its exit is expected from here on
    this.members.delete(root);
    try {
      await unmountFuse(root);
    } catch (err) {
      // The volume itself is unmounted; the shared mount is tried again with the group's next unmount.
      ctx.log.warn({ root, err: (err as Error).message }, 'an unused shared FUSE mount could not be unmounted');
      return;
    }
    await removeEmptyMountpoint(root).catch(() => undefined);
    ctx.log.info({ root }, 'shared FUSE client stopped: its last volume was unmounted');
  }

  /** A shared client that exits takes every volume bound to it along: each is reported, so the driver repairs it. */
  private watch(root: string, daemon: FuseDaemon, ctx: BackendContext): void {
    this.clients.set(root, daemon);
    void daemon.exited.then((exit) => {
      if (this.clients.get(root) !== daemon) return; // stopped on purpose
      this.clients.delete(root);
      const reason = `the bucket's shared ${daemon.command} client ${describeExit(exit)}`;
      for (const name of this.members.get(root) ?? []) ctx.onMountLost(name, reason);
    });
  }
}

/** Flags the shared mount nosymfollow (a bind remount: this mount's flags only) and returns it so flagged. */
async function refuseSymlinks(root: string): Promise<MountEntry> {
  try {
    await run('mount', ['-c', '-o', 'remount,bind,nosymfollow', root], { timeoutMs: 5000 });
    const flagged = await findMount(root);
    if (!flagged?.options.split(',').includes('nosymfollow')) {
      throw new Error('the kernel did not apply nosymfollow (it needs Linux 5.10 or later)');
    }
    return flagged;
  } catch (err) {
    throw new BackendError(
      `a shared client's mount cannot be made to refuse symlinks, so volumes cannot be bound from it safely: ${(err as Error).message}; set OSSNAS_SHARE_CLIENTS=false`,
    );
  }
}

/** The shared mount that `target` is a bind of: under the mount root's SHARED_DIR, with the same device. */
async function sharedMountOf(target: string, mountRoot: string): Promise<MountEntry | undefined> {
  const mounts = await readMounts();
  const mine = topmostAt(mounts, target);
  if (!mine?.fsType.startsWith('fuse')) return undefined;
  const dir = path.join(mountRoot, SHARED_DIR) + '/';
  return mounts.find((m) => m.device === mine.device && m.mountPoint.startsWith(dir) && m.mountPoint !== target);
}

/**
 * Binds the volume's path of the shared mount at its target. The path is made if it is missing
 * (a client of its own shows a missing prefix as an empty directory, and makes it at the first
 * write). The shared mount refuses symlinks, and `-c` keeps mount(8) from resolving them itself.
 */
async function bindPath(shared: MountEntry, v: SharedVolume, deadline: Deadline): Promise<void> {
  const source = path.join(shared.mountPoint, v.path);
  const where = `path ${v.path} of bucket ${v.bucket}`;
  const st = await stat(source).catch((err: NodeJS.ErrnoException) => err);
  if (!(st instanceof Error)) {
    if (!st.isDirectory()) throw new BackendError(`${where} is a file, not a directory`);
  } else if (st.code === 'ELOOP') {
    throw new BackendError(`${where} passes through a symlink, which a volume's path may not`);
  } else if (st.code !== 'ENOENT') {
    throw new BackendError(`${where} cannot be looked up: ${st.code ?? st.message}`);
  } else if (v.readonly) {
    throw new BackendError(`${where} does not exist, and a read-only volume cannot create it`);
  } else {
    await mkdir(source, { recursive: true }).catch((e: NodeJS.ErrnoException) => {
      throw new BackendError(`${where} does not exist and could not be created: ${e.code === 'ELOOP' ? 'it passes through a symlink' : e.message}`);
    });
  }
  // One mount(8): the bind, then (libmount does it) a bind remount that sets the flags. The bind
  // keeps the shared mount's flags (nosuid and nodev stay); only nosymfollow goes.
  const flags = shared.options.split(',').map((o) => (o === 'nosymfollow' ? 'symfollow' : o));
  try {
    await run('mount', ['-c', '--bind', '-o', flags.join(','), source, v.target], { timeoutMs: deadline.budget() });
  } catch (err) {
    await unmountFuse(v.target).catch(() => lazyUnmount(v.target)); // a bind whose flags were not set
    throw new BackendError(`binding ${where} at ${v.target} failed: ${(err as Error).message}`);
  }
}
