// A test double for the backend layer: records calls, can be told to fail or to be slow, and
// keeps its own "mount table" that the driver's host double reads.
import { OptionsError } from '../../src/backends/options.js';
import { BackendError, type Backend, type BackendContext, type VolumeOptions } from '../../src/backends/types.js';

export class FakeBackend implements Backend {
  readonly type = 'fake';
  readonly keys = ['type', 'target', 'akSecret', 'delayMs', 'fail'] as const;
  /** Whether Get shows size and use (the host double's numbers) for its mounts. */
  localFilesystem = false;
  readonly mounted = new Set<string>();
  /** Mounts still in the table whose client is gone (statfs: ENOTCONN). */
  readonly dead = new Set<string>();
  /** Mounts whose client does not answer in time but is alive (stopped, or a frozen server). */
  readonly stuck = new Set<string>();
  readonly calls: string[] = [];
  /** Containers holding a mount, by mountpoint ("PID n: /path"), for the driver's mountUsers. */
  readonly users = new Map<string, string[]>();
  /** Whether the host double cannot see every namespace (mountUsers throws MountUsersUnknown). */
  usersUnknown = false;
  /** How many times the host double read every namespace at once (mountUsersAsOfNow). */
  namespaceReadings = 0;
  /** The host's boot ID as the host double reports it; a test "reboots" by changing it. */
  bootId: string | undefined = 'boot-1';
  failNextUnmount = false;
  /** How many of the next mounts fail (a backend that is down for a while). */
  failNextMounts = 0;
  private ctx: BackendContext | undefined;

  parse(options: Record<string, string>): VolumeOptions {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(options)) {
      const key = this.keys.find((x) => x.toLowerCase() === k.toLowerCase().replace(/[-_]/g, ''));
      if (!key) throw new OptionsError(`unknown option '${k}' for type=fake; accepted options: ${this.keys.join(', ')}`);
      out[key] = v;
    }
    if (!out.target) throw new OptionsError("option 'target' is required");
    return out;
  }

  async check(): Promise<void> {}

  /** A target that names a device is the volume's alone, as a disk volume's device is. */
  async exclusiveUse(options: VolumeOptions): Promise<{ key: string; shown: string } | undefined> {
    return options.target?.startsWith('/dev/') ? { key: options.target, shown: `device ${options.target}` } : undefined;
  }

  describe(options: VolumeOptions): Record<string, unknown> {
    return { target: options.target };
  }

  async mount(name: string, options: VolumeOptions, target: string, ctx: BackendContext): Promise<void> {
    this.calls.push(`mount ${name}`);
    this.ctx = ctx;
    if (options.delayMs) await new Promise((r) => setTimeout(r, Number(options.delayMs)));
    if (this.failNextMounts > 0) {
      this.failNextMounts--;
      throw new BackendError(`fake server ${options.target} is down`);
    }
    if (options.fail) throw new BackendError(`fake client said: cannot reach ${options.target} with key ${options.akSecret}`);
    this.mounted.add(target);
    this.dead.delete(target);
    this.stuck.delete(target);
  }

  async adopt(name: string): Promise<void> {
    this.calls.push(`adopt ${name}`);
  }

  async unmount(name: string, _options: VolumeOptions, target: string): Promise<void> {
    this.calls.push(`unmount ${name}`);
    if (this.failNextUnmount) {
      this.failNextUnmount = false;
      throw new BackendError(`umount: ${target}: target is busy`);
    }
    this.mounted.delete(target);
  }

  /** The client of a mount dies by itself, as a killed s3fs does: the mount stays, dead. */
  loseMount(name: string, target: string): void {
    this.dead.add(target);
    this.ctx?.onMountLost(name, 'fake client was killed by SIGKILL');
  }
}
