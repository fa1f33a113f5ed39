// The set of volumes: names, one call at a time per volume, reference counts by Docker's mount ID,
// and state. What a volume's mount is doing (absent, serving, unresponsive, dead) is volume.ts's
// question; start-up and retries are restore.ts's.
//
// Every change is made to a new record, which becomes the driver's only once the state store
// has it on disk: a change that cannot be saved changes nothing, and a call that fails leaves
// nothing half-done (a mount made for a reference that could not be recorded is undone).
import path from 'node:path';
import {
  backendFor,
  BackendError,
  OptionsError,
  parseVolumeOptions,
  type Backend,
  type BackendContext,
  type BackendRegistry,
} from '../backends/index.js';
import { Deadline, DeadlineExceeded } from '../host/deadline.js';
import { ensureDir, removeEmptyMountpoint } from '../host/files.js';
import { openHostNamespace } from '../host/hostns.js';
import { isMountpoint, readMounts } from '../host/mountinfo.js';
import { mountUsers, mountUsersAsOfNow, MountUsersUnknown, type MountUsersLookup } from '../host/mount-users.js';
import { bootId } from '../host/proc.js';
import { probeMount, usageOf, type Usage } from '../host/probe.js';
import type { Logger } from '../log.js';
import { scrub, secretValues } from '../redact.js';
import type { Settings } from '../settings.js';
import { VolumeError } from './errors.js';
import { KeyedMutex } from '../keyed-mutex.js';
import { validateVolumeName } from './names.js';
import type { Call, VolumeDriverProtocol, VolumeInfo } from './protocol.js';
import { restore, RetrySchedule, type RepairOutcome, type Restorable, type RestoreReport } from './restore.js';
import { countRefs, openState, refCount, StateWriteError, type StateOptions, type StateStore, type VolumeRecord } from './state.js';
import { health, markMounted, withError, type Health } from './health.js';
import { VolumeMount, type MountHost } from './volume.js';

export type { VolumeInfo } from './protocol.js';
export type { RestoreReport } from './restore.js';

/** What the driver asks of the host; tests give a double that agrees with their fake backend. */
export interface DriverHost extends MountHost {
  /** Every mount point in our mount table, read once. */
  mountpoints(): Promise<Set<string>>;
  /** Size and use of the filesystem at path; undefined when it does not answer at once. */
  usage(path: string): Promise<Usage | undefined>;
  /** The host's boot ID (see VolumeRecord.boot); undefined: unknown. */
  bootId(): Promise<string | undefined>;
  /** Mounts of the filesystem at `path` outside the directories in `ours` (containers holding it). */
  mountUsers(path: string, ours: readonly string[]): Promise<string[]>;
  /** The same for any number of paths, from one reading of the host made now; absent: mountUsers each time. */
  mountUsersAsOfNow?(): Promise<MountUsersLookup>;
}

/** The volumes as a whole, by type and by health. */
export interface Census {
  volumes: Record<string, number>;
  mounted: Record<string, number>;
  health: Record<Health, number>;
  /** Mount references held by containers, over every volume. */
  refs: number;
}

/** Stands for "some container may hold it" when the mount table of every namespace cannot be read. */
const UNKNOWN_USERS = 'unknown';

/** For undoing what a call did after its caller left (its own deadline may be used up by then). */
const UNDO_MS = 30_000;

/** A call with nobody waiting on it: restore, repairs, tests. */
function internalCall(): Call {
  return { arrivedAt: performance.now(), signal: new AbortController().signal };
}

export class VolumeDriver implements VolumeDriverProtocol, Restorable {
  private readonly lock = new KeyedMutex();
  private readonly ctx: BackendContext;
  private readonly retries: RetrySchedule;
  /**
   * Status's view of each volume's options. Options never change after Create, and Docker calls
   * Get before every mount, unmount and inspect: parsing them again each time was a third of Get.
   */
  private readonly described = new WeakMap<VolumeRecord['options'], Record<string, unknown>>();
  /** List's answer, rebuilt after a Create or Remove (the only changes it shows). */
  private listed: readonly VolumeInfo[] | undefined;
  /** What Creates in flight claimed for themselves alone (see claimExclusive), by key -> volume. */
  private readonly claims = new Map<string, string>();
  /** Recorded volumes' exclusive use (a device number), by their options: asked once. */
  private readonly exclusive = new WeakMap<VolumeRecord['options'], Promise<{ key: string; shown: string } | undefined>>();

  /** Volumes whose last settle failed: its error leaves Status once a settle succeeds. */
  private readonly settleFailed = new Set<string>();

  /** Mount IDs each volume had when the state was loaded, until settleLoaded has looked at them. */
  private readonly loaded = new Map<string, ReadonlySet<string>>();
  /** The host's namespaces as read once after the start, for settleLoaded (see loadedUsers). */
  private loadedScan: Promise<MountUsersLookup> | undefined;

  private constructor(
    private readonly settings: Settings,
    private readonly backends: BackendRegistry,
    private readonly db: StateStore,
    private readonly log: Logger,
    private readonly host: DriverHost,
    /** This boot of the host; stamped on records with references. */
    private readonly boot: string | undefined,
  ) {
    for (const v of db.volumes.values()) if (v.mounts.size > 0) this.loaded.set(v.name, new Set(v.mounts.keys()));
    this.ctx = {
      settings,
      log,
      onMountLost: (name, reason) => this.mountLost(name, reason),
      settleLater: (name) => this.retries.failed(name),
      hostNamespace: openHostNamespace(settings.hostPid, (pid) =>
        log.info({ hostPid: pid ?? 'own' }, pid ? `kernel mounts go to the mount namespace of PID ${pid}` : 'kernel mounts are made in our own (host) namespace'),
      ),
    };
    this.retries = new RetrySchedule((name) => void this.repair(name));
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
      mountUsersAsOfNow,
      bootId,
    },
    stateOptions: StateOptions = {},
  ): Promise<VolumeDriver> {
    const db = await openState(settings.stateDir, { warn: (fields, message) => log.warn(fields, message), ...stateOptions });
    // Directories that a full state filesystem may not let us create: only needed by mounts,
    // which then fail with the reason, while Get and List are answered.
    for (const [dir, mode] of [[settings.mountRoot, 0o755], [settings.runDir, 0o700]] as const) {
      await ensureDir(dir, mode).catch((err: Error) => log.warn({ dir, err: err.message }, 'directory not created; mounts need it'));
    }
    return new VolumeDriver(settings, backends, db, log, host, await host.bootId());
  }

  mountpoint(name: string): string {
    return path.join(this.settings.mountRoot, name);
  }

  private find(name: string): VolumeRecord | undefined {
    return this.db.volumes.get(name);
  }

  private require(name: string): VolumeRecord {
    const v = this.find(name);
    if (!v) throw new VolumeError('not-found', `volume ${name} not found`);
    return v;
  }

  private backendOf(v: VolumeRecord): Backend {
    return backendFor(this.backends, v.options);
  }

  private volumeMount(v: VolumeRecord): VolumeMount {
    return new VolumeMount(v.name, v.options, this.mountpoint(v.name), this.backendOf(v), this.ctx, this.host);
  }

  /** The call's deadline: OSSNAS_MOUNT_TIMEOUT from its arrival. */
  private deadlineOf(call: Call): Deadline {
    return Deadline.after(this.settings.mountTimeoutMs, call.arrivedAt);
  }

  /**
   * Runs `fn` under the volume's lock once earlier calls on it are done, if the call's deadline
   * has not passed meanwhile: a call queued behind a slow Mount must still answer in time.
   */
  private locked<T>(volume: string, deadline: Deadline, fn: () => Promise<T>): Promise<T> {
    return this.lock.run(volume, async () => {
      try {
        deadline.check(`earlier calls on volume ${volume} finished`);
      } catch (err) {
        throw new VolumeError('deadline', `volume ${volume}: ${(err as Error).message}`);
      }
      await this.settleLoaded(volume);
      return fn();
    });
  }

  /** Saves a new record (null: the volume is gone) and makes it the driver's; a failure changes nothing. */
  private async commit(name: string, next: VolumeRecord | null): Promise<void> {
    if (next && next.mounts.size > 0 && this.boot !== undefined && next.boot !== this.boot) next = { ...next, boot: this.boot };
    try {
      await this.db.put(name, next);
    } catch (err) {
      if (err instanceof StateWriteError) throw new VolumeError('state', `volume ${name}: ${err.message}`);
      throw err;
    }
  }

  async create(name: unknown, opts: Record<string, string> | null | undefined, call: Call = internalCall()): Promise<void> {
    const volume = validateVolumeName(name);
    let parsed;
    try {
      parsed = parseVolumeOptions(this.backends, opts);
    } catch (err) {
      if (err instanceof OptionsError) throw new VolumeError('invalid', `volume ${volume}: ${err.message}`);
      throw err;
    }
    const { backend, options } = parsed;
    const deadline = this.deadlineOf(call);
    await this.locked(volume, deadline, async () => {
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
      // Claimed before the checks: Creates of other names run side by side with this one.
      const release = await this.claimExclusive(volume, backend, options);
      try {
        try {
          await backend.check(options, this.ctx, deadline);
        } catch (err) {
          if (err instanceof OptionsError || err instanceof BackendError) {
            throw new VolumeError('invalid', `volume ${volume}: ${err.message}`);
          }
          throw err;
        }
        await this.commit(volume, { name: volume, createdAt: new Date().toISOString(), options, mounts: new Map(), mounted: false });
      } finally {
        release();
      }
      this.listed = undefined;
      this.log.info({ volume, type: backend.type }, 'volume created');
    });
  }

  /**
   * Refuses a volume that would share what must be its own (a block device) with another volume,
   * recorded or being created. Returns the claim to drop once the record holds it (or Create failed).
   */
  private async claimExclusive(volume: string, backend: Backend, options: Record<string, string>): Promise<() => void> {
    const mine = await backend.exclusiveUse?.(options, this.ctx);
    if (!mine) return () => undefined;
    const refuse = (other: string) =>
      new VolumeError('conflict', `volume ${volume}: ${mine.shown} is already used by volume ${other}; two volumes on one device would format and mount it twice`);
    const claimant = this.claims.get(mine.key);
    if (claimant !== undefined && claimant !== volume) throw refuse(claimant);
    this.claims.set(mine.key, volume);
    const release = () => this.claims.delete(mine.key);
    try {
      for (const other of this.db.volumes.values()) {
        if (other.name === volume || other.options.type !== backend.type) continue;
        if ((await this.exclusiveOf(other, backend))?.key === mine.key) throw refuse(other.name);
      }
    } catch (err) {
      release();
      throw err;
    }
    return release;
  }

  /** A recorded volume's exclusive use, asked of its backend once per record's options. */
  private exclusiveOf(v: VolumeRecord, backend: Backend): Promise<{ key: string; shown: string } | undefined> {
    let known = this.exclusive.get(v.options);
    if (!known) {
      known = backend.exclusiveUse!(v.options, this.ctx);
      this.exclusive.set(v.options, known);
    }
    return known;
  }

  async remove(name: unknown, call: Call = internalCall()): Promise<void> {
    const volume = validateVolumeName(name);
    const deadline = this.deadlineOf(call);
    await this.locked(volume, deadline, async () => {
      const v = this.require(volume);
      const refs = refCount(v);
      const vm = this.volumeMount(v);
      if (refs > 0 || v.mounted || (await this.host.isMountpoint(vm.target))) {
        // Docker sends Remove only when no container of its own refers to the volume, so our
        // references may be stale (an Unmount lost while the plugin was down). The mount table
        // decides: a container that still holds the volume has it mounted in its namespace.
        const users = await this.mountUsers(vm.target);
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
        if (refs > 0) this.log.warn({ volume, during: 'Remove', staleIds: [...v.mounts.keys()] }, 'references that no container holds were released');
        if (await this.host.isMountpoint(vm.target)) await this.backendStep(v, () => vm.release(deadline), { stillMounted: true });
      }
      // A cloud disk still attached here goes first: once the record is gone, nothing would detach it.
      const unsettled = await this.settle(this.find(volume) ?? v, deadline);
      if (unsettled !== undefined) throw new VolumeError('backend', `volume ${volume} is not removed: ${unsettled}`);
      // The record goes first: a volume whose removal could not be saved keeps everything it had.
      await this.commit(volume, null);
      this.listed = undefined;
      this.retries.succeeded(volume);
      // Only an empty, unmounted local directory is removed: never data in the backend.
      const outcome = await removeEmptyMountpoint(vm.target);
      if (outcome === 'mounted' || outcome === 'not-empty') {
        this.log.warn({ volume, target: vm.target, outcome }, 'mountpoint directory left in place');
      }
      const backend = this.backendOf(v);
      await backend.remove?.(volume, v.options, this.ctx).catch((err: Error) =>
        this.log.warn({ volume, err: err.message }, 'volume removed, but what the plugin kept for it was not deleted'),
      );
      this.log.info({ volume }, backend.remove ? 'volume removed' : 'volume removed (backend data untouched)');
    });
  }

  async mount(name: unknown, id: unknown, call: Call = internalCall()): Promise<string> {
    const volume = validateVolumeName(name);
    const mountId = validateMountId(id);
    const deadline = this.deadlineOf(call);
    return this.locked(volume, deadline, async () => {
      const v = this.require(volume);
      const vm = this.volumeMount(v);
      const mounts = new Map(v.mounts);
      if (mounts.has(mountId) && (await this.mountUsers(vm.target)).length === 0) {
        // The same ID again while nothing holds the mount: not `docker cp` on a running container
        // (its container would hold it) but a container started again after a dockerd crash,
        // whose earlier Mount never got its Unmount. Counting it twice would keep the volume
        // mounted for ever.
        this.log.warn({ volume, id: mountId, count: mounts.get(mountId) }, 'mount ID sent again with no Unmount; its earlier count was stale');
        mounts.delete(mountId);
      }
      const others = countRefs(mounts);
      const { made, found } = await this.backendStep(v, () => vm.ensure(deadline), { held: others > 0 });
      if (found.kind === 'dead') this.log.warn({ volume, reason: found.reason }, 'mount was dead; mounted it again');
      mounts.set(mountId, (mounts.get(mountId) ?? 0) + 1);
      let next = markMounted({ ...v, mounts }, true);
      if (found.kind === 'unresponsive') next = this.keptUnanswered(next, found.reason);
      const undo = async (why: string) => {
        // Nobody else holds it: a mount without a reference would stay for ever.
        if (others === 0) await this.undoMount(vm, why);
      };
      if (call.signal.aborted) {
        await undo('its caller hung up before it was ready');
        throw callerGone(volume);
      }
      try {
        await this.commit(volume, next);
      } catch (err) {
        await undo('its reference could not be saved');
        throw err;
      }
      if (found.kind === 'unresponsive') this.retries.failed(volume); // looked at again, with backoff
      else if (made) this.retries.succeeded(volume);
      if (call.signal.aborted) {
        // It hung up while the reference was being saved: take it back.
        await this.forgetReference(volume, mountId);
        throw callerGone(volume);
      }
      return vm.target;
    });
  }

  /** After a caller left while its reference was saved: the reference goes, and the mount if it was the last. */
  private async forgetReference(volume: string, mountId: string): Promise<void> {
    const v = this.find(volume);
    if (!v?.mounts.has(mountId)) return;
    await this.commit(volume, { ...v, mounts: withoutOne(v.mounts, mountId) }).catch((err: Error) =>
      this.log.warn({ volume, err: err.message }, 'the reference of a caller that hung up could not be taken back'),
    );
    const now = this.find(volume);
    if (now && refCount(now) === 0) await this.undoMount(this.volumeMount(now), 'its caller hung up');
  }

  /** Undoes a mount that no reference keeps, under the volume's lock; failures are logged (restore retries). */
  private async undoMount(vm: VolumeMount, why: string): Promise<void> {
    try {
      await vm.release(Deadline.after(UNDO_MS));
      const v = this.find(vm.name);
      if (v?.mounted) await this.commit(vm.name, markMounted(v, false)).catch(() => undefined);
      this.log.info({ volume: vm.name, why }, 'mount undone');
    } catch (err) {
      const message = scrub((err as Error).message, secretValues(vm.options));
      this.log.warn({ volume: vm.name, why, err: message }, 'mount could not be undone; the next start releases it');
    }
  }

  async unmount(name: unknown, id: unknown, call: Call = internalCall()): Promise<void> {
    const volume = validateVolumeName(name);
    const mountId = validateMountId(id);
    const deadline = this.deadlineOf(call);
    await this.locked(volume, deadline, async () => {
      const v = this.find(volume);
      const count = v?.mounts.get(mountId);
      if (!v || count === undefined) {
        // Docker sends Unmount after failed mounts and after restarts: nothing to do is success.
        this.log.debug({ volume, id: mountId }, 'unmount of an unknown mount ID ignored');
        return;
      }
      const mounts = withoutOne(v.mounts, mountId);
      const vm = this.volumeMount(v);
      const last = countRefs(mounts) === 0 && (v.mounted || (await this.host.isMountpoint(vm.target)));
      // The reference goes first: if it cannot be saved, nothing is torn down.
      await this.commit(volume, last ? markMounted({ ...v, mounts }, false) : { ...v, mounts });
      if (!last) return;
      try {
        await vm.release(deadline);
      } catch (err) {
        // Still mounted: the reference comes back, so that state tells the truth and a retry works.
        const message = this.scrubbed(v, (err as Error).message);
        await this.commit(volume, withError({ ...v }, message)).catch((e: Error) =>
          this.log.warn({ volume, err: e.message }, 'the reference of a failed unmount could not be restored; the next start releases the mount'),
        );
        throw new VolumeError('backend', `volume ${volume}: ${message}`);
      }
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
    if (!v.mounted || !this.backendOf(v).localFilesystem) return info;
    const usage = await this.host.usage(info.Mountpoint);
    return usage ? { ...info, Status: { ...info.Status, ...usage } } : info;
  }

  /** The same array until a volume is created or removed: callers must not change it. */
  list(): readonly VolumeInfo[] {
    this.listed ??= Object.freeze([...this.db.volumes.values()].map((v) => this.summary(v)));
    return this.listed;
  }

  /** What metrics report of the volumes as a whole, counted from state at the moment. */
  census(): Census {
    const c: Census = { volumes: {}, mounted: {}, health: { ok: 0, idle: 0, error: 0 }, refs: 0 };
    for (const v of this.db.volumes.values()) {
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
        target = this.backendOf(v).describe(v.options);
      } catch (err) {
        target = { error: (err as Error).message };
      }
      this.described.set(v.options, target);
    }
    return {
      type: v.options.type,
      ...target,
      ...this.backendOf(v).observed?.(v.name, v.options),
      mounted: v.mounted,
      refs: refCount(v),
      health: health(v),
      since: v.since ?? v.createdAt,
      ...(v.lastError && { lastError: v.lastError.message, lastErrorAt: v.lastError.at }),
    };
  }

  private scrubbed(v: VolumeRecord, text: string): string {
    return scrub(text, secretValues(v.options));
  }

  /**
   * Runs a step that reaches the backend. A failure is kept in Status (secrets removed), the
   * volume counts as not mounted (unless the step was an unmount: `stillMounted`), and one that
   * containers hold (`held`) gets a repair later.
   */
  private async backendStep<T>(v: VolumeRecord, step: () => Promise<T>, opts: { held?: boolean; stillMounted?: boolean } = {}): Promise<T> {
    try {
      return await step();
    } catch (err) {
      const message = this.scrubbed(v, (err as Error).message);
      if (!(err instanceof BackendError || err instanceof OptionsError || err instanceof DeadlineExceeded)) {
        this.log.error({ volume: v.name, err: message }, 'unexpected backend failure');
      }
      const current = this.find(v.name) ?? v;
      await this.commit(v.name, withError(opts.stillMounted ? current : markMounted(current, false), message)).catch(() => undefined);
      if (opts.held) this.retries.failed(v.name);
      throw new VolumeError('backend', `volume ${v.name}: ${message}`);
    }
  }

  /** A backend reports that a mount stopped serving by itself: record it, and repair it if held. */
  private mountLost(name: string, reason: string): void {
    void this.lock
      .run(name, async () => {
        const v = this.find(name);
        if (!v) return;
        // The next Mount replaces it, if the repair has not by then.
        const message = this.scrubbed(v, `mount lost: ${reason}`);
        await this.commit(name, withError(markMounted(v, false), message)).catch(() => undefined);
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
  restore(concurrency = 8): Promise<RestoreReport> {
    return restore(this, concurrency);
  }

  async restorePlan(): Promise<{ held: string[]; stray: string[]; unsettled: string[] }> {
    const table = await this.host.mountpoints();
    const volumes = [...this.db.volumes.values()];
    const idle = volumes.filter((v) => refCount(v) === 0);
    return {
      held: volumes.filter((v) => refCount(v) > 0).map((v) => v.name),
      stray: idle.filter((v) => table.has(this.mountpoint(v.name))).map((v) => v.name),
      unsettled: idle.filter((v) => !table.has(this.mountpoint(v.name)) && this.backendOf(v).needsSettle?.(v.options)).map((v) => v.name),
    };
  }

  /**
   * The first call on a volume after a start settles the references loaded with the state. Docker
   * sends no Unmount for a container that died with its node (dockerd, containerd and the shims
   * killed, or the host rebooted): its reference would keep the volume mounted, FUSE client and
   * all, for a task that runs on another node by then. A loaded reference is released when it is
   * provably stale: the volume's mount is there and no mount namespace on the host holds it, or
   * nothing is mounted and the reference was recorded in an earlier boot of the host. Nothing
   * mounted in the same boot tells nothing (after a disable and enable, running containers keep
   * mounts of their own), so those references stay.
   * References taken since the start are never looked at. Any failure keeps them, for the next call.
   */
  private async settleLoaded(name: string): Promise<'released' | undefined> {
    const loaded = this.loaded.get(name);
    if (!loaded) return undefined;
    const v = this.find(name);
    const stale = v ? [...v.mounts.keys()].filter((id) => loaded.has(id)) : [];
    if (!v || stale.length === 0) {
      this.loaded.delete(name);
      return undefined;
    }
    const vm = this.volumeMount(v);
    try {
      // A mount that is there decides by who holds it, whatever the boot: a held one is never undone.
      const mounted = await this.host.isMountpoint(vm.target);
      let why: string | undefined;
      if (mounted) {
        if ((await this.loadedUsers(vm.target)).length === 0) why = 'no mount namespace on the host holds the mount';
      } else if (v.boot !== undefined && this.boot !== undefined && v.boot !== this.boot) {
        why = 'recorded before the host last booted';
      }
      if (!why) {
        this.loaded.delete(name);
        return undefined;
      }
      const mounts = new Map(v.mounts);
      for (const id of stale) mounts.delete(id);
      const last = countRefs(mounts) === 0;
      await this.commit(name, last ? markMounted({ ...v, mounts }, false) : { ...v, mounts });
      this.loaded.delete(name);
      this.log.warn({ volume: name, staleIds: stale, why }, 'references from before the start that no container holds were released');
      if (last && mounted) await this.undoMount(vm, 'no container has held it since the start');
      return last ? 'released' : undefined;
    } catch (err) {
      // The IDs stay in `loaded`: the next call on the volume looks again.
      this.log.warn({ volume: name, err: this.scrubbed(v, (err as Error).message) }, 'references from before the start not checked; kept for now');
      return undefined;
    }
  }

  /**
   * Makes a held volume serve: adopt a mount that is there, or replace a dead or missing one. One
   * that does not answer is adopted as it is, said so in Status, and looked at again with backoff
   * until it answers.
   */
  async repair(name: string): Promise<RepairOutcome> {
    const attempt = this.retries.attempt(name);
    const deadline = Deadline.after(this.settings.mountTimeoutMs);
    return this.lock.run(name, async () => {
      if ((await this.settleLoaded(name)) === 'released') {
        this.retries.succeeded(name);
        return 'released' as const;
      }
      const v = this.find(name);
      if (!v || refCount(v) === 0) {
        if (v && (await this.settle(v, deadline)) !== undefined) return 'failed' as const;
        this.retries.succeeded(name); // nobody needs it any more
        return 'idle' as const;
      }
      try {
        const { outcome, found } = await this.backendStep(v, () => this.volumeMount(v).repair(deadline), { held: true });
        const now = this.find(name) ?? v;
        const record = (next: VolumeRecord) =>
          this.commit(name, next).catch((err: Error) => this.log.warn({ volume: name, err: err.message }, 'restored mount not recorded'));
        if (found.kind === 'unresponsive') {
          await record(this.keptUnanswered(markMounted(now, true), found.reason));
          this.retries.failed(name);
          return outcome;
        }
        this.retries.succeeded(name);
        if (!now.mounted || now.lastError) await record(markMounted(now, true));
        if (outcome === 'remounted') this.log.info({ volume: name, attempt }, 'mount restored');
        else if (now.lastError) this.log.info({ volume: name, attempt }, 'mount answers again');
        return outcome;
      } catch (err) {
        this.log.warn({ volume: name, attempt, err: (err as Error).message }, 'mount not restored; will retry');
        return 'failed' as const;
      }
    });
  }

  /**
   * A volume that nothing holds and nothing mounts may still hold something outside the host (a
   * cloud disk attached here): its backend puts that right. Returns why it could not; then Status
   * says so and it is tried again with backoff. Called under the volume's lock.
   */
  private async settle(v: VolumeRecord, deadline: Deadline): Promise<string | undefined> {
    const backend = this.backendOf(v);
    if (!backend.settle || !backend.needsSettle?.(v.options) || (await this.host.isMountpoint(this.mountpoint(v.name)))) return undefined;
    try {
      await backend.settle(v.name, v.options, this.ctx, deadline);
      if (this.settleFailed.delete(v.name) && v.lastError) {
        const { lastError: _cleared, ...rest } = v;
        await this.commit(v.name, rest).catch(() => undefined);
      }
      return undefined;
    } catch (err) {
      const message = this.scrubbed(v, (err as Error).message);
      this.log.warn({ volume: v.name, err: message }, 'volume not settled; will retry');
      this.settleFailed.add(v.name);
      await this.commit(v.name, withError(v, message)).catch(() => undefined);
      this.retries.failed(v.name);
      return message;
    }
  }

  /**
   * A mount that does not answer is kept: a stopped client or a frozen NFS server, whose
   * containers' I/O waits and resumes. Status says so until it answers again.
   */
  private keptUnanswered(v: VolumeRecord, reason: string): VolumeRecord {
    this.log.warn({ volume: v.name, reason }, 'mount does not answer; kept as it is (its I/O waits and resumes when it answers)');
    return withError(v, `the mount does not answer (${reason}); it is kept as it is: its I/O waits, and resumes when it answers`);
  }

  /** Undoes a mount that no container holds; a failure is logged and left for the next Mount. */
  async releaseStray(name: string): Promise<'released' | 'idle'> {
    return this.lock.run(name, async () => {
      const v = this.find(name);
      if (!v || refCount(v) > 0 || !(await this.host.isMountpoint(this.mountpoint(name)))) return 'idle' as const;
      try {
        await this.volumeMount(v).release(Deadline.after(this.settings.mountTimeoutMs));
        if (v.mounted) await this.commit(name, markMounted(v, false)).catch(() => undefined);
        this.log.info({ volume: name }, 'mount that no container holds was undone');
        return 'released' as const;
      } catch (err) {
        this.log.warn({ volume: name, err: this.scrubbed(v, (err as Error).message) }, 'mount that no container holds could not be undone');
        return 'idle' as const;
      }
    });
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

  /**
   * mountUsers for references loaded at start, from one reading of every namespace made after the
   * start, shared by all volumes. That reading is enough: a container that held a volume before
   * the start is in it, and one that mounts the volume later does so through a Mount, whose
   * reference is not a loaded one (and settleLoaded runs before that Mount does anything). Read
   * once per volume, a start with a holder per volume was quadratic: 117 s for 200 volumes.
   */
  private async loadedUsers(target: string): Promise<string[]> {
    if (!this.host.mountUsersAsOfNow) return this.mountUsers(target);
    this.loadedScan ??= this.host.mountUsersAsOfNow();
    try {
      return await (await this.loadedScan)(target, await this.ownMountRoots());
    } catch (err) {
      this.loadedScan = undefined; // read again at the next look
      if (!(err instanceof MountUsersUnknown)) throw err;
      this.log.warn({ target, reason: err.message }, 'cannot tell whether containers hold a mount; keeping its references');
      return [UNKNOWN_USERS];
    } finally {
      if (this.loaded.size <= 1) this.loadedScan = undefined; // the last volume to look: the reading can go
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

  /** Stops retrying repairs (at shutdown, and when tests are done with a driver). */
  close(): void {
    this.retries.close();
  }

  /** Repairs waiting for their next attempt (one per volume at most). */
  get pendingRetries(): number {
    return this.retries.pending;
  }

  /**
   * At shutdown: waits for queued state writes, then leaves the whole state in the snapshot, so
   * that a clean stop (disable, upgrade, downgrade) hands over one self-contained file. With no
   * room for a snapshot, the journal keeps everything. Nothing can be saved after it.
   */
  async flush(): Promise<void> {
    await this.db.compact().catch((err: Error) => this.log.warn({ err: err.message }, 'no state snapshot at stop; the journal keeps every change'));
    await this.db.close();
  }
}

/** The references with one fewer for `id` (none left: the ID goes). */
function withoutOne(mounts: ReadonlyMap<string, number>, id: string): Map<string, number> {
  const next = new Map(mounts);
  const count = next.get(id) ?? 0;
  if (count > 1) next.set(id, count - 1);
  else next.delete(id);
  return next;
}

function callerGone(volume: string): VolumeError {
  return new VolumeError('gone', `volume ${volume}: the caller hung up before the mount was ready; no reference was kept`);
}

function validateMountId(id: unknown): string {
  if (typeof id !== 'string' || !/^[A-Za-z0-9_.-]{1,128}$/.test(id)) {
    throw new VolumeError('invalid', `invalid mount ID ${JSON.stringify(id)?.slice(0, 80)}: expected Docker's hex ID`);
  }
  return id;
}

/** Option keys whose values differ between two normalised option maps (values never shown). */
function differentKeys(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) => a[k] !== b[k]).sort();
}
