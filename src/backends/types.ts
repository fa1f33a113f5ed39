// What every volume type provides to the driver. A backend knows nothing of HTTP or of state.
import type { Deadline } from '../host/deadline.js';
import type { HostNamespace } from '../host/hostns.js';
import type { Logger } from '../log.js';
import type { Settings } from '../settings.js';

/** Options after validation: canonical keys, normalised values. This is what state stores. */
export type VolumeOptions = Record<string, string>;

export interface BackendContext {
  settings: Settings;
  log: Logger;
  /** Called when a mount stops serving on its own (its FUSE client died), with the reason. */
  onMountLost(name: string, reason: string): void;
  /** The host's mount namespace, for kernel mounts that must outlive the plugin process. */
  hostNamespace(): Promise<HostNamespace>;
  /**
   * Asks the driver to call `settle` for the volume later (with backoff, under its lock), when
   * something outside the host could not be put right now (a cloud disk left attached).
   */
  settleLater(name: string): void;
}

/** Why a mount is made: a Mount call, or a repair of a held volume after a start or a lost mount. */
export type MountIntent = 'mount' | 'repair';

export interface Backend {
  readonly type: string;
  /** Canonical option keys this type accepts (for messages and key folding). */
  readonly keys: readonly string[];
  /**
   * Its mounts are local kernel filesystems, so Get may show their size and use: statfs of a
   * network or FUSE mount can wait on the network, and Get must not.
   */
  readonly localFilesystem?: boolean;
  /**
   * Its mounts are made in the plugin's own mount namespace (FUSE clients, their bind mounts), and
   * a mount call returns only once the mount is there: nothing to check after it. Kernel mounts
   * made in the host's namespace reach ours only through propagation, which is checked.
   */
  readonly mountsInOwnNamespace?: boolean;
  /** Validates options (keys already canonical) and returns their normalised form. Throws OptionsError. */
  parse(options: Record<string, string>): VolumeOptions;
  /** Checks that need the plugin's surroundings (a credentials profile exists). Runs at Create. */
  check(options: VolumeOptions, ctx: BackendContext, deadline: Deadline): Promise<void>;
  /**
   * What this volume needs for itself alone, if anything (a block device): `key` tells it apart
   * whatever name it is given by, `shown` names it in messages. Create refuses a second volume
   * with the same key, so that two volumes never format or mount one device.
   */
  exclusiveUse?(options: VolumeOptions, ctx: BackendContext): Promise<{ key: string; shown: string } | undefined>;
  /** Where the data lives, for Status; never a secret. */
  describe(options: VolumeOptions): Record<string, unknown>;
  /**
   * Mounts the volume at `target` (an existing empty directory) before `deadline`, cleaning up
   * included: on failure nothing is left mounted or running.
   */
  mount(name: string, options: VolumeOptions, target: string, ctx: BackendContext, deadline: Deadline, intent?: MountIntent): Promise<void>;
  /**
   * Undoes mount, before `deadline`. Called only when no reference is left. Throws if the mount is
   * still in place afterwards.
   */
  unmount(name: string, options: VolumeOptions, target: string, ctx: BackendContext, deadline: Deadline): Promise<void>;
  /**
   * Takes charge of a mount that serves but was made by an earlier plugin process (found at
   * restore), e.g. to notice when its FUSE client exits.
   */
  adopt?(name: string, options: VolumeOptions, target: string, ctx: BackendContext): Promise<void>;
  /**
   * Puts right what a volume with no reference and no mount may still hold outside the host (a
   * cloud disk still attached here). Called after a start, and when asked by settleLater; throws
   * to be tried again later.
   */
  settle?(name: string, options: VolumeOptions, ctx: BackendContext, deadline: Deadline): Promise<void>;
  /** Whether this volume ever needs `settle` (asked at every start, so it must be cheap). */
  needsSettle?(options: VolumeOptions): boolean;
  /** What Status shows of the volume beyond its options, as this process last saw it; never a secret. */
  observed?(name: string, options: VolumeOptions): Record<string, unknown> | undefined;
  /** Deletes what the plugin itself owns for this volume (never data in a remote backend). */
  remove?(name: string, options: VolumeOptions, ctx: BackendContext): Promise<void>;
}

/** A backend failure whose message is meant for the user (the client's own words, secrets removed). */
export class BackendError extends Error {}
