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
}

export interface Backend {
  readonly type: string;
  /** Canonical option keys this type accepts (for messages and key folding). */
  readonly keys: readonly string[];
  /**
   * Its mounts are local kernel filesystems, so Get may show their size and use: statfs of a
   * network or FUSE mount can wait on the network, and Get must not.
   */
  readonly localFilesystem?: boolean;
  /** Validates options (keys already canonical) and returns their normalised form. Throws OptionsError. */
  parse(options: Record<string, string>): VolumeOptions;
  /** Checks that need the plugin's surroundings (a credentials profile exists). Runs at Create. */
  check(options: VolumeOptions, ctx: BackendContext): Promise<void>;
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
  mount(name: string, options: VolumeOptions, target: string, ctx: BackendContext, deadline: Deadline): Promise<void>;
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
  /** Deletes what the plugin itself owns for this volume (never data in a remote backend). */
  remove?(name: string, options: VolumeOptions, ctx: BackendContext): Promise<void>;
}

/** A backend failure whose message is meant for the user (the client's own words, secrets removed). */
export class BackendError extends Error {}
