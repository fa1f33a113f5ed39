// type=nas: an NFS export (v3, v4.0, v4.1) mounted by the kernel in the host's mount namespace, onto
// the host path of the mountpoint, so the mount outlives the plugin process. Every step that talks
// to the server has a deadline: a dead server fails Mount in seconds, with a message that says so.
import { readdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Deadline } from '../../host/deadline.js';
import { CommandError, RUN_OVERRUN_MS } from '../../host/exec.js';
import { ensureDir, removeEmptyMountpoint } from '../../host/files.js';
import type { HostNamespace } from '../../host/hostns.js';
import { mkdirNoSymlinks, SymlinkRefused, SymlinksNotRefusable } from '../../host/mkdir-no-symlinks.js';
import { probeTcp, resolveHost } from '../../host/net.js';
import { FALLBACK_STEP_MS, unmountKernelMount } from '../../host/unmount.js';
import { BackendError, type Backend, type BackendContext, type VolumeOptions } from '../types.js';
import { fromSpec, NAS_KEYS, nfsMountArgs, nfsPort, nfsSource, toSpec, type NasSpec, type NfsVersion } from './options.js';

/** How long a server may take to accept a TCP connection before Mount gives up on it. */
const PROBE_MS = 3000;

/** The server said the export path does not exist: the cue to create a sub-path. */
class MissingPathError extends BackendError {}

/**
 * A kernel without NFS fails every mount with "unknown filesystem type"; say so plainly before
 * trying. The type counts as available when registered, or when the nfs module is installed
 * (the kernel loads it on the first mount).
 */
export async function requireNfsSupport(
  ns: HostNamespace,
  vers: NfsVersion,
  // Where to look; tests point these at files of their own.
  where = { filesystems: '/proc/filesystems', hostRoot: ns.pid === undefined ? '' : `/proc/${ns.pid}/root` },
): Promise<void> {
  const fsType = vers === '3' ? 'nfs' : 'nfs4';
  const registered = (await readFile(where.filesystems, 'utf8').catch(() => ''))
    .split('\n')
    .some((line) => line.split('\t').pop()?.trim() === fsType);
  if (registered) return;
  const release = os.release();
  const moduleDir = `${where.hostRoot}/lib/modules/${release}/kernel/fs/nfs`;
  const modules = await readdir(moduleDir).catch(() => [] as string[]);
  if (modules.some((f) => /^nfs\.ko(\.|$)/.test(f))) return;
  throw new BackendError(
    `the host kernel (${release}) has no NFS support: '${fsType}' is not in /proc/filesystems and no nfs module is ` +
      `installed under /lib/modules/${release}; NAS volumes need a kernel built with NFS client support (CONFIG_NFS_FS) ` +
      'or its nfs modules installed',
  );
}

/** Turns mount's own words into the error a user can act on. */
export function mountFailure(spec: NasSpec, exportPath: string, err: unknown, timeoutMs: number): BackendError {
  const source = nfsSource({ server: spec.server, path: exportPath });
  if (err instanceof CommandError && err.exitCode === undefined && /timed out/.test(err.message)) {
    return new BackendError(`mounting ${source} (NFS v${spec.vers}) did not finish within ${Math.round(timeoutMs / 1000)} s; the server accepts connections but does not answer NFS requests`);
  }
  const said = (err as Error).message;
  if (/unknown filesystem type|no such device/i.test(said)) {
    return new BackendError(`the host kernel cannot mount NFS v${spec.vers} (${said}); load the nfs modules or use a kernel with NFS support`);
  }
  if (/no such file or directory|does not exist/i.test(said)) {
    return new MissingPathError(`${source} does not exist on the server (${said})`);
  }
  if (/access denied|permission denied|not permitted/i.test(said)) {
    return new BackendError(`the NFS server refused ${source} (NFS v${spec.vers}): check that it exports the path to this host (${said})`);
  }
  // "requested NFS version or transport protocol is not supported", "program not registered",
  // "Protocol not supported": not any message that merely mentions a version.
  if (/protocol not supported|program not registered|version (or transport protocol )?is not supported|version mismatch/i.test(said)) {
    return new BackendError(`the NFS server does not serve ${source} over NFS v${spec.vers}; try another 'vers' (${said})`);
  }
  return new BackendError(`mounting ${source} (NFS v${spec.vers}) failed: ${said}`);
}

export class NasBackend implements Backend {
  readonly type = 'nas';
  readonly keys = NAS_KEYS;

  parse(options: Record<string, string>): VolumeOptions {
    return fromSpec(toSpec(options));
  }

  /** Create does not contact the server: compose creates volumes before anything runs. */
  async check(): Promise<void> {}

  describe(options: VolumeOptions): Record<string, unknown> {
    const spec = toSpec(options);
    return {
      server: spec.server,
      path: spec.path,
      vers: spec.vers,
      options: spec.options.join(',') || 'none',
      readonly: spec.readonly,
      ...(spec.mode !== undefined && { mode: spec.mode }),
    };
  }

  async mount(name: string, options: VolumeOptions, target: string, ctx: BackendContext, deadline: Deadline): Promise<void> {
    const spec = toSpec(options);
    const left = (cap = Infinity) => deadline.budget(cap, RUN_OVERRUN_MS, 500);
    const ns = await ctx.hostNamespace();
    await requireNfsSupport(ns, spec.vers);

    let address: string;
    try {
      address = await resolveHost(spec.server, left(5000));
      await probeTcp(address, nfsPort(spec), left(PROBE_MS));
    } catch (err) {
      throw new BackendError(`NFS server ${spec.server} is not reachable: ${(err as Error).message}; check that it is up and that this host may connect to it`);
    }

    const hostTarget = await ns.hostPath(target);
    const mountAt = async (where: string, exportPath: string) => {
      const timeoutMs = left();
      try {
        await ns.run('mount', nfsMountArgs(spec, address, where, exportPath), { timeoutMs });
      } catch (err) {
        throw mountFailure(spec, exportPath, err, timeoutMs);
      }
    };
    try {
      await mountAt(hostTarget, spec.path);
    } catch (err) {
      if (!(err instanceof MissingPathError) || spec.path === '/' || spec.readonly) throw err;
      await this.createSubPath(name, spec, ctx, ns, mountAt, left);
      await mountAt(hostTarget, spec.path);
    }

    if (spec.mode !== undefined) {
      try {
        await ns.run('chmod', [spec.mode, hostTarget], { timeoutMs: left() });
      } catch (err) {
        await unmountKernelMount(ns, hostTarget, { plainMs: 5000 }).catch(() => undefined);
        throw new BackendError(`mounted ${nfsSource(spec)}, but could not set mode ${spec.mode} on it: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Creates a sub-path that does not exist yet, as the Alibaba CSI driver does: mount the nearest
   * ancestor the server will mount (the export, or the v4 pseudo-root) in a private place, mkdir
   * -p the rest without following any symlink, unmount. Nothing on the server is ever removed.
   */
  private async createSubPath(
    name: string,
    spec: NasSpec,
    ctx: BackendContext,
    ns: HostNamespace,
    mountAt: (where: string, exportPath: string) => Promise<void>,
    left: (cap?: number) => number,
  ): Promise<void> {
    // Under the mount root: it is shared with the host, so the host path exists in both namespaces.
    // Volume names cannot start with '.', so this never meets a volume.
    const setup = path.join(ctx.settings.mountRoot, '.ossnas-setup', name);
    await ensureDir(setup, 0o700);
    const hostSetup = await ns.hostPath(setup);
    await unmountKernelMount(ns, hostSetup, { plainMs: 2000 }).catch(() => undefined); // left by a crash mid-setup

    try {
      const parts = spec.path.split('/').filter(Boolean);
      for (let keep = parts.length - 1; keep >= 0; keep--) {
        const ancestor = `/${parts.slice(0, keep).join('/')}`;
        try {
          await mountAt(hostSetup, ancestor);
        } catch (err) {
          if (err instanceof MissingPathError) continue;
          throw err;
        }
        try {
          // The server's admin, or anyone who can write to the export, decides what is in it: a
          // symlink there would send a root mkdir wherever it points, the host's own / included.
          await mkdirNoSymlinks(ns, hostSetup, parts.slice(keep), left());
          ctx.log.info({ volume: name, created: spec.path, via: nfsSource({ server: spec.server, path: ancestor }) }, 'created NFS sub-path');
          return;
        } catch (err) {
          if (err instanceof SymlinkRefused) {
            const link = nfsSource({ server: spec.server, path: path.posix.join(ancestor, ...err.at) });
            throw new BackendError(
              `${nfsSource(spec)} does not exist and was not created: a symlink was refused: ${link} is a symlink (to ${err.target}), ` +
                'and ossnas never follows symlinks when it creates a path on the server (one could lead out of the export); ' +
                "create the directory on the server, or set 'path' to the real directory",
            );
          }
          if (err instanceof SymlinksNotRefusable) {
            throw new BackendError(
              `${nfsSource(spec)} does not exist, and this host cannot create it safely: ${err.message}; create the directory on the server`,
            );
          }
          throw new BackendError(`${nfsSource(spec)} does not exist and could not be created: ${(err as Error).message}`);
        } finally {
          await unmountKernelMount(ns, hostSetup, { plainMs: 5000 }).catch((err) =>
            ctx.log.warn({ volume: name, err: (err as Error).message }, 'could not unmount the sub-path setup mount'),
          );
        }
      }
      throw new BackendError(`${nfsSource(spec)} does not exist, and the server would not mount any parent of it to create it`);
    } finally {
      await removeEmptyMountpoint(setup).catch(() => undefined);
    }
  }

  /**
   * Called only when no reference is left. A server that answers gets time to take the last
   * writes; for one that is gone a plain umount would wait for ever, so it is detached (lazily:
   * the kernel still writes what is left when the server returns). Never forced: see unmount.ts.
   */
  async unmount(name: string, options: VolumeOptions, target: string, ctx: BackendContext, deadline: Deadline): Promise<void> {
    const spec = toSpec(options);
    try {
      const ns = await ctx.hostNamespace();
      const gone = await resolveHost(spec.server, deadline.budget(2000))
        .then((address) => probeTcp(address, nfsPort(spec), deadline.budget(2000)))
        .then(() => false, () => true);
      const plainMs = deadline.budget(gone ? 2000 : 15_000, FALLBACK_STEP_MS, 500);
      const how = await unmountKernelMount(ns, await ns.hostPath(target), { plainMs });
      if (how === 'unmounted') ctx.log.debug({ volume: name, how, serverGone: gone }, 'NFS mount unmounted');
      else ctx.log.warn({ volume: name, how, serverGone: gone }, 'the NFS mount did not unmount cleanly; it was detached');
    } catch (err) {
      throw new BackendError(`unmounting ${target} failed: ${(err as Error).message}`);
    }
  }
}
