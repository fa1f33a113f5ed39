// The volume plugin protocol as the driver serves it: one method per VolumeDriver.* call. The API
// layer depends on this interface only, so the whole contract can be reviewed on one screen.

export interface VolumeInfo {
  Name: string;
  Mountpoint: string;
  /** RFC 3339: Docker decodes it into a time, and a Get it cannot decode makes it forget the volume. */
  CreatedAt: string;
  Status?: Record<string, unknown>;
}

/**
 * One call as it reached the plugin. Its deadline counts from `arrivedAt` (performance.now()),
 * so that waiting for the volume's lock is part of it; `signal` aborts when the caller hangs up
 * (Docker gave up), so that a Mount that completes for nobody keeps no reference.
 */
export interface Call {
  readonly arrivedAt: number;
  readonly signal: AbortSignal;
}

export interface VolumeDriverProtocol {
  /** Create: records the volume; the same name with the same options again is a success. */
  create(name: unknown, opts: Record<string, string> | null | undefined, call?: Call): Promise<void>;
  /** Remove: forgets the volume; never deletes data in the backend. */
  remove(name: unknown, call?: Call): Promise<void>;
  /** Mount: the mountpoint, serving, with one more reference for `id`. */
  mount(name: unknown, id: unknown, call?: Call): Promise<string>;
  /** Unmount: one reference of `id` fewer; the last one unmounts. An unknown id is a success. */
  unmount(name: unknown, id: unknown, call?: Call): Promise<void>;
  /** Path: the mountpoint, from state. */
  path(name: unknown): string;
  /** Get: the volume and its Status, from state (never from the backend). */
  inspect(name: unknown): Promise<VolumeInfo>;
  /** List: every volume, from state. */
  list(): readonly VolumeInfo[];
  /** Capabilities: the scope. */
  capabilities(): { Scope: 'local' | 'global' };
}
