// The volume lifecycle: Create/Remove/Mount/Unmount/Path/Get/List/Capabilities, with mount
// reference counting by Docker's mount ID, persisted, and one call at a time per volume.
import path from 'node:path';
import {
  backendFor,
  BackendError,
  OptionsError,
  parseVolumeOptions,
  type BackendContext,
  type BackendRegistry,
} from '../backends/index.js';
import { ensureDir, removeEmptyMountpoint } from '../host/files.js';
import { lazyUnmount } from '../host/unmount.js';
import { openHostNamespace } from '../host/hostns.js';
import { isMountpoint, readMounts } from '../host/mountinfo.js';
import { mountUsers, MountUsersUnknown } from '../host/mount-users.js';
import { probeMount, usageOf, type Usage } from '../host/probe.js';
import type { Logger } from '../log.js';
import { scrub, secretValues } from '../redact.js';
import type { Settings } from '../settings.js';
import { VolumeError } from './errors.js';
import { KeyedMutex } from './keyed-mutex.js';
import { validateVolumeName } from './names.js';
import { openState, refCount, type StateStore, type VolumeRecord } from './state.js';

export interface VolumeInfo {
  Name: string;
  Mountpoint: string;
  CreatedAt: string;
  Status?: Record<string, unknown>;
}

/** What the driver asks of the host; tests give a double that agrees with their fake backend. */
export interface DriverHost {
  isMountpoint(path: string): Promise<boolean>;
  /** Every mount point in our mount table, read once. */
  mountpoints(): Promise<Set<string>>;
  /** undefined when the mount at path serves, else why not. */
  probe(path: string): Promise<string | undefined>;
  /** Size and use of the filesystem at path; undefined when it does not answer at once. */
  usage(path: string): Promise<Usage | undefined>;
  /** Mounts of the filesystem at `path` outside the directories in `ours` (containers holding it). */
  mountUsers(path: string, ours: readonly string[]): Promise<string[]>;
}

/** The volumes as a whole, by type and by health. */
export interface Census {
  volumes: Record<string, number>;
  mounted: Record<string, number>;
  health: Record<Health, number>;
  /** Mount references held by containers, over every volume. */
  refs: number;
}

/** What a restore after start found, by volume name. */
export interface RestoreReport {
  adopted: string[];
  remounted: string[];
  failed: string[];
  /** Mounted, but no container holds them: left by a crash between a mount and its record. */
  released: string[];
  ms: number;
}

/** Stands for "some container may hold it" when the mount table of every namespace cannot be read. */
const UNKNOWN_USERS = 'unknown';

/** Backoff for repairs that failed: 2 s, 4 s, ... up to a minute. */
const FIRST_RETRY_MS = 2000;
const MAX_RETRY_MS = 60_000;

export class VolumeDriver {
  private readonly lock = new KeyedMutex();
  private readonly ctx: BackendContext;
  private readonly retries = new Set<NodeJS.Timeout>();
  private closed = false;
  /**
   * Status's view of each volume's options. Options never change after Create, and Docker calls
   * Get before every mount, unmount and inspect: parsing them again each time was a third of Get.
   */
  private readonly described = new WeakMap<VolumeRecord['options'], Record<string, unknown>>();
  /** List's answer, rebuilt after a Create or Remove (the only changes it shows). */
  private listed: readonly VolumeInfo[] | undefined;

  private constructor(
    private readonly settings: Settings,
    private readonly backends: BackendRegistry,
    private readonly db: StateStore,
    private readonly log: Logger,
    private readonly host: DriverHost,
  ) {
    this.ctx = {
      settings,
      log,
      onMountLost: (name, reason) => this.mountLost(name, reason),
      hostNamespace: openHostNamespace(settings.hostPid, (pid) =>
        log.info({ hostPid: pid ?? 'own' }, pid ? `kernel mounts go to the mount namespace of PID ${pid}` : 'kernel mounts are made in our own (host) namespace'),
      ),
    };
  }

  static async open(
    settings: Settings,
    backends: BackendRegistry,
    log: Logger,
    host: DriverHost = {
      isMountpoint,
      mountpoints: async () => new Set((await readMounts()).map((m) => m.mountPoint)),
      probe: probeMount,
      usage: usageOf,
      mountUsers,
    },
  ): Promise<VolumeDriver> {
    const db = await openState(settings.stateDir);
    await ensureDir(settings.mountRoot, 0o755);
    await ensureDir(settings.runDir, 0o700);
    return new VolumeDriver(settings, backends, db, log, host);
  }

  mountpoint(name: string): string {
    return path.join(this.settings.mountRoot, name);
  }

  private find(name: string): VolumeRecord | undefined {
    return Object.hasOwn(this.db.data.volumes, name) ? this.db.data.volumes[name] : undefined;
  }

  private require(name: string): VolumeRecord {
    const v = this.find(name);
    if (!v) throw new VolumeError('not-found', `volume ${name} not found`);
    return v;
  }

  async create(name: unknown, opts: Record<string, string> | null | undefined): Promise<void> {
    const volume = validateVolumeName(name);
    let parsed;
    try {
      parsed = parseVolumeOptions(this.backends, opts);
    } catch (err) {
      if (err instanceof OptionsError) throw new VolumeError('invalid', `volume ${volume}: ${err.message}`);
      throw err;
    }
    const { backend, options } = parsed;
    await this.lock.run(volume, async () => {
      const existing = this.find(volume);
      if (existing) {
        const differing = differentKeys(existing.options, options);
        if (differing.length === 0) return; // idempotent
        throw new VolumeError(
          'conflict',
          `volume ${volume} already exists with different options (${differing.join(', ')}); ` +
            `remove it first to change them`,
        );
      }
      try {
        await backend.check(options, this.ctx);
      } catch (err) {
        if (err instanceof OptionsError || err instanceof BackendError) {
          throw new VolumeError('invalid', `volume ${volume}: ${err.message}`);
        }
        throw err;
      }
      this.db.data.volumes[volume] = {
        name: volume,
        createdAt: new Date().toISOString(),
        options,
        mounts: {},
        mounted: false,
      };
      this.listed = undefined;
      await this.db.save(volume);
      this.log.info({ volume, type: backend.type }, 'volume created');
    });
  }

  async remove(name: unknown): Promise<void> {
    const volume = validateVolumeName(name);
    await this.lock.run(volume, async () => {
      const v = this.require(volume);
      const refs = refCount(v);
      const target = this.mountpoint(volume);
      if (refs > 0 || v.mounted || (await this.host.isMountpoint(target))) {
        // Docker sends Remove only when no container of its own refers to the volume, so our
        // references may be stale (an Unmount lost while the plugin was down). The mount table
        // decides: a container that still holds the volume has it mounted in its namespace.
        const users = await this.mountUsers(target);
        if (users.length > 0) {
          const where =
            users[0] === UNKNOWN_USERS
              ? 'and whether a container holds it cannot be checked'
              : `mounted in ${users.length} other mount namespace${users.length === 1 ? '' : 's'}: ${users.slice(0, 3).join(', ')}`;
          throw new VolumeError(
            'in-use',
            `volume ${volume} is in use (${refs} mount reference${refs === 1 ? '' : 's'}, ${where}); stop the containers using it first`,
          );
        }
        await this.releaseStale(v, target, 'Remove');
      }
      // Only an empty, unmounted local directory is removed: never data in the backend.
      const outcome = await removeEmptyMountpoint(target);
      if (outcome === 'mounted' || outcome === 'not-empty') {
        this.log.warn({ volume, target, outcome }, 'mountpoint directory left in place');
      }
      const backend = backendFor(this.backends, v.options);
      await backend.remove?.(volume, v.options, this.ctx);
      delete this.db.data.volumes[volume];
      this.listed = undefined;
      await this.db.save(volume);
      // The journal still holds the removed volume's earlier records: inline keys must not outlive it.
      if (secretValues(v.options).length > 0) await this.db.compact();
      this.log.info({ volume }, backend.remove ? 'volume removed' : 'volume removed (backend data untouched)');
    });
  }

  async mount(name: unknown, id: unknown): Promise<string> {
    const volume = validateVolumeName(name);
    const mountId = validateMountId(id);
    return this.lock.run(volume, async () => {
      const v = this.require(volume);
      const target = this.mountpoint(volume);
      if (v.mounts[mountId] && (await this.mountUsers(target)).length === 0) {
        // The same ID again while nothing holds the mount: not `docker cp` on a running container
        // (its container would hold it) but a container started again after a dockerd crash,
        // whose earlier Mount never got its Unmount. Counting it twice would keep the volume
        // mounted for ever.
        this.log.warn({ volume, id: mountId, count: v.mounts[mountId] }, 'mount ID sent again with no Unmount; its earlier count was stale');
        delete v.mounts[mountId];
      }
      // Mount for real when nobody holds it, when it is recorded but no longer there, or when
      // it is there but no longer serves (its FUSE client died, e.g. with an earlier plugin process).
      let needed = refCount(v) === 0 || !v.mounted || !(await this.host.isMountpoint(target));
      if (!needed) {
        const dead = await this.host.probe(target);
        if (dead) this.log.warn({ volume, reason: dead }, 'mount does not serve; mounting it again');
        needed = dead !== undefined;
      }
      if (needed) await this.mountBackend(v, target);
      v.mounts[mountId] = (v.mounts[mountId] ?? 0) + 1;
      await this.db.save(volume);
      return target;
    });
  }

  private async mountBackend(v: VolumeRecord, target: string): Promise<void> {
    const backend = backendFor(this.backends, v.options);
    try {
      if (await this.host.isMountpoint(target)) {
        // Something stale is there (a dead FUSE mount answers ENOTCONN even to mkdir): detach it.
        await backend.unmount(v.name, v.options, target, this.ctx).catch(() => lazyUnmount(target));
      }
      await ensureDir(target, 0o755);
      await backend.mount(v.name, v.options, target, this.ctx);
      markMounted(v, true);
    } catch (err) {
      markMounted(v, false);
      const message = await this.recordError(v, (err as Error).message);
      if (!(err instanceof BackendError || err instanceof OptionsError)) {
        this.log.error({ volume: v.name, err: message }, 'unexpected mount failure');
      }
      throw new VolumeError('backend', `volume ${v.name}: ${message}`);
    }
  }

  async unmount(name: unknown, id: unknown): Promise<void> {
    const volume = validateVolumeName(name);
    const mountId = validateMountId(id);
    await this.lock.run(volume, async () => {
      const v = this.find(volume);
      const count = v?.mounts[mountId];
      if (!v || count === undefined) {
        // Docker sends Unmount after failed mounts and after restarts: nothing to do is success.
        this.log.debug({ volume, id: mountId }, 'unmount of an unknown mount ID ignored');
        return;
      }
      if (count > 1) v.mounts[mountId] = count - 1;
      else delete v.mounts[mountId];
      const target = this.mountpoint(volume);
      if (refCount(v) === 0 && (v.mounted || (await this.host.isMountpoint(target)))) {
        const backend = backendFor(this.backends, v.options);
        try {
          await backend.unmount(v.name, v.options, target, this.ctx);
          markMounted(v, false);
        } catch (err) {
          // Still mounted: keep the reference so that state tells the truth and a retry works.
          v.mounts[mountId] = count;
          const message = await this.recordError(v, (err as Error).message);
          throw new VolumeError('backend', `volume ${volume}: ${message}`);
        }
      }
      await this.db.save(volume);
    });
  }

  /** Answered from state, never from the backend. */
  path(name: unknown): string {
    const volume = validateVolumeName(name);
    this.require(volume);
    return this.mountpoint(volume);
  }

  /** Answered from state, never from the backend (a Get error makes Docker forget the volume). */
  get(name: unknown): VolumeInfo {
    const volume = validateVolumeName(name);
    const v = this.require(volume);
    return { ...this.summary(v), Status: this.status(v) };
  }

  /**
   * Get's answer: `get`, plus the size and use of a mounted volume on a local filesystem (a disk
   * volume), read at the moment: that is what `docker volume inspect` is asked for.
   */
  async inspect(name: unknown): Promise<VolumeInfo> {
    const info = this.get(name);
    const v = this.require(info.Name);
    if (!v.mounted || !backendFor(this.backends, v.options).localFilesystem) return info;
    const usage = await this.host.usage(info.Mountpoint);
    return usage ? { ...info, Status: { ...info.Status, ...usage } } : info;
  }

  /** The same array until a volume is created or removed: callers must not change it. */
  list(): readonly VolumeInfo[] {
    this.listed ??= Object.freeze(Object.values(this.db.data.volumes).map((v) => this.summary(v)));
    return this.listed;
  }

  /** What metrics report of the volumes as a whole, counted from state at the moment. */
  census(): Census {
    const c: Census = { volumes: {}, mounted: {}, health: { ok: 0, idle: 0, error: 0 }, refs: 0 };
    for (const v of Object.values(this.db.data.volumes)) {
      const type = v.options.type ?? 'unknown';
      c.volumes[type] = (c.volumes[type] ?? 0) + 1;
      if (v.mounted) c.mounted[type] = (c.mounted[type] ?? 0) + 1;
      c.health[health(v)]++;
      c.refs += refCount(v);
    }
    return c;
  }

  capabilities(): { Scope: 'local' | 'global' } {
    return { Scope: this.settings.scope };
  }

  private summary(v: VolumeRecord): VolumeInfo {
    return { Name: v.name, Mountpoint: this.mountpoint(v.name), CreatedAt: v.createdAt };
  }

  private status(v: VolumeRecord): Record<string, unknown> {
    let target = this.described.get(v.options);
    if (!target) {
      try {
        target = backendFor(this.backends, v.options).describe(v.options);
      } catch (err) {
        target = { error: (err as Error).message };
      }
      this.described.set(v.options, target);
    }
    const refs = refCount(v);
    return {
      type: v.options.type,
      ...target,
      mounted: v.mounted,
      refs,
      health: health(v),
      since: v.since ?? v.createdAt,
      ...(v.lastError && { lastError: v.lastError.message, lastErrorAt: v.lastError.at }),
    };
  }

  /** Keeps a failure in state for Status, secrets removed, and returns the scrubbed text. */
  private async recordError(v: VolumeRecord, text: string): Promise<string> {
    const message = scrub(text, secretValues(v.options));
    const before = health(v);
    v.lastError = { message, at: new Date().toISOString() };
    if (before !== 'error') v.since = v.lastError.at;
    await this.db.save(v.name);
    return message;
  }

  /** A backend reports that a mount stopped serving by itself: record it, and repair it if held. */
  private mountLost(name: string, reason: string): void {
    void this.lock
      .run(name, async () => {
        const v = this.find(name);
        if (!v) return;
        markMounted(v, false); // the next Mount replaces it, if the repair has not by then
        const message = await this.recordError(v, `mount lost: ${reason}`);
        this.log.warn({ volume: name, reason: message, refs: refCount(v) }, 'mount lost');
      })
      .then(() => this.repair(name));
  }

  /**
   * After a start: every volume that containers still hold is made to serve again, with at most
   * `concurrency` at a time. Healthy mounts (kernel mounts survive us) are adopted; dead or missing
   * ones are mounted again; failures stay in Status and are retried with backoff. Mounts of
   * volumes nobody holds are undone (a crash between a mount and its record leaves one, and it
   * would make `docker volume rm` fail). Calls are answered meanwhile: each volume is handled
   * under its own lock, like any Mount.
   */
  async restore(concurrency = 8): Promise<RestoreReport> {
    const t0 = performance.now();
    const table = await this.host.mountpoints();
    const volumes = Object.values(this.db.data.volumes);
    const held = volumes.filter((v) => refCount(v) > 0).map((v) => v.name);
    const stray = volumes.filter((v) => refCount(v) === 0 && table.has(this.mountpoint(v.name))).map((v) => v.name);
    const report: RestoreReport = { adopted: [], remounted: [], failed: [], released: [], ms: 0 };
    const jobs = [...held.map((name) => () => this.repair(name)), ...stray.map((name) => () => this.releaseStray(name))];
    let next = 0;
    const worker = async () => {
      while (next < jobs.length) {
        const i = next++;
        const outcome = await jobs[i]!();
        const name = i < held.length ? held[i]! : stray[i - held.length]!;
        if (outcome !== 'idle') report[outcome].push(name);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, worker));
    report.ms = Math.round(performance.now() - t0);
    return report;
  }

  /** Makes a held volume serve: adopt a healthy mount, or replace a dead or missing one. */
  private async repair(name: string, attempt = 0): Promise<'adopted' | 'remounted' | 'failed' | 'idle'> {
    const outcome = await this.lock.run(name, async () => {
      const v = this.find(name);
      if (!v || refCount(v) === 0) return 'idle' as const; // nobody needs it any more
      const target = this.mountpoint(name);
      if ((await this.host.isMountpoint(target)) && (await this.host.probe(target)) === undefined) {
        await backendFor(this.backends, v.options)
          .adopt?.(name, v.options, target, this.ctx)
          .catch((err: Error) => this.log.warn({ volume: name, err: err.message }, 'adopted mount is not watched'));
        if (!v.mounted) {
          markMounted(v, true);
          await this.db.save(name);
        }
        return 'adopted' as const;
      }
      try {
        await this.mountBackend(v, target);
        await this.db.save(name);
        this.log.info({ volume: name, attempt }, 'mount restored');
        return 'remounted' as const;
      } catch (err) {
        this.log.warn({ volume: name, attempt, err: (err as Error).message }, 'mount not restored; will retry');
        return 'failed' as const;
      }
    });
    if (outcome === 'failed') this.retryLater(name, attempt + 1);
    return outcome;
  }

  /**
   * Who else has the volume mounted (containers). When that cannot be known, one UNKNOWN_USERS
   * entry: every caller then keeps the references, as if a container held them.
   */
  private async mountUsers(target: string): Promise<string[]> {
    try {
      return await this.host.mountUsers(target, await this.ownMountRoots());
    } catch (err) {
      if (!(err instanceof MountUsersUnknown)) throw err;
      this.log.warn({ target, reason: err.message }, 'cannot tell whether containers hold a mount; keeping its references');
      return [UNKNOWN_USERS];
    }
  }

  /** The mount root as we see it and as the host sees it: mounts there are the plugin's own. */
  private async ownMountRoots(): Promise<string[]> {
    const roots = [this.settings.mountRoot];
    try {
      roots.push(await (await this.ctx.hostNamespace()).hostPath(this.settings.mountRoot));
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'host path of the mount root unknown');
    }
    return roots;
  }

  /** Forgets references that no container holds, and undoes the mount they kept. */
  private async releaseStale(v: VolumeRecord, target: string, during: string): Promise<void> {
    this.log.warn({ volume: v.name, during, staleIds: Object.keys(v.mounts) }, 'references that no container holds were released');
    if (v.mounted || (await this.host.isMountpoint(target))) {
      try {
        await backendFor(this.backends, v.options).unmount(v.name, v.options, target, this.ctx);
      } catch (err) {
        const message = await this.recordError(v, (err as Error).message);
        throw new VolumeError('backend', `volume ${v.name}: ${message}`);
      }
    }
    v.mounts = {};
    markMounted(v, false);
    await this.db.save(v.name);
  }

  /** Undoes a mount that no container holds; a failure is logged and left for the next Mount. */
  private async releaseStray(name: string): Promise<'released' | 'idle'> {
    return this.lock.run(name, async () => {
      const v = this.find(name);
      const target = this.mountpoint(name);
      if (!v || refCount(v) > 0 || !(await this.host.isMountpoint(target))) return 'idle' as const;
      try {
        await backendFor(this.backends, v.options).unmount(name, v.options, target, this.ctx);
        if (v.mounted) {
          markMounted(v, false);
          await this.db.save(name);
        }
        this.log.info({ volume: name }, 'mount that no container holds was undone');
        return 'released' as const;
      } catch (err) {
        this.log.warn({ volume: name, err: (err as Error).message }, 'mount that no container holds could not be undone');
        return 'idle' as const;
      }
    });
  }

  private retryLater(name: string, attempt: number): void {
    if (this.closed) return;
    const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.min(attempt - 1, 10));
    const timer = setTimeout(() => {
      this.retries.delete(timer);
      void this.repair(name, attempt);
    }, delay);
    timer.unref();
    this.retries.add(timer);
  }

  /** Stops retrying repairs (at shutdown, and when tests are done with a driver). */
  close(): void {
    this.closed = true;
    for (const t of this.retries) clearTimeout(t);
    this.retries.clear();
  }

  /**
   * At shutdown: waits for queued state writes, then leaves the whole state in the snapshot, so
   * that a clean stop (disable, upgrade, downgrade) hands over one self-contained file.
   */
  async flush(): Promise<void> {
    await this.db.compact();
  }
}

type Health = 'ok' | 'idle' | 'error';

/** What Status calls health: the last mount attempt failed or a mount was lost; else mounted or not. */
function health(v: VolumeRecord): Health {
  return v.lastError ? 'error' : v.mounted ? 'ok' : 'idle';
}

/** Records a mount (which clears the last error) or its end, and when Status's health last changed. */
function markMounted(v: VolumeRecord, mounted: boolean): void {
  const before = health(v);
  v.mounted = mounted;
  if (mounted) delete v.lastError;
  if (health(v) !== before) v.since = new Date().toISOString();
}

function validateMountId(id: unknown): string {
  if (typeof id !== 'string' || !/^[A-Za-z0-9_.-]{1,128}$/.test(id)) {
    throw new VolumeError('invalid', `invalid mount ID ${JSON.stringify(id)?.slice(0, 80)}: expected Docker's hex ID`);
  }
  return id;
}

/** Option keys whose values differ between two normalised option maps (values never shown). */
function differentKeys(a: Record<string, string>, b: Record<string, string>): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) => a[k] !== b[k]).sort();
}
