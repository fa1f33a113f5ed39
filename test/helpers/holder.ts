// A "container" holding a volume: a process in a mount namespace of its own with a bind mount of
// the volume's mountpoint, as dockerd gives each container. What the plugin's mount-users check
// sees, without a dockerd.
import { mkdir } from 'node:fs/promises';
import { execa, type ResultPromise } from 'execa';
import type { PluginClient } from './docker-client.js';

export interface Holder {
  /** The holding process; kill it to play a container that is gone. */
  process: ResultPromise;
  /** Ends it and waits for it. */
  release(): Promise<void>;
}

/**
 * Binds `mountpoint` on `dir` in a new private mount namespace and keeps it there. Throws, saying
 * why, when the bind does not happen within 20 s (a bind on a hung mount must not hang the suite).
 */
export async function holdMount(mountpoint: string, dir: string): Promise<Holder> {
  await mkdir(dir, { recursive: true });
  const p = execa('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', `mount --bind ${mountpoint} ${dir} && echo ready && exec sleep 600`], {
    reject: false,
  });
  const ready = await Promise.race([
    new Promise<string>((resolve) => p.stdout!.once('data', () => resolve('ready'))),
    p.then((res) => `the holder exited first (${res.exitCode}): ${res.stderr}`),
    new Promise<string>((resolve) => setTimeout(() => resolve('no bind mount within 20 s'), 20_000).unref()),
  ]);
  if (ready !== 'ready') {
    p.kill('SIGKILL');
    throw new Error(`holding ${mountpoint} at ${dir}: ${ready}`);
  }
  return {
    process: p,
    async release() {
      p.kill('SIGKILL');
      await p;
    },
  };
}

/**
 * A container that holds volume NAME of a kernel-mounted type (disk) from now on, but with no
 * reference of its own: Mount, bind the mount in a namespace of its own, Unmount. The bind keeps
 * the filesystem (and its loop device) alive, and every later mount of that device is the same
 * filesystem: at a start, the plugin then sees the volume held by a container, as it is when
 * containers run, and keeps its references. Tests of the state across kill -9 need that.
 */
export async function holdVolume(client: PluginClient, name: string, dir: string): Promise<Holder> {
  const id = `holder-${name}`;
  const mounted = await client.call('VolumeDriver.Mount', { Name: name, ID: id });
  const mountpoint = mounted.json.Mountpoint;
  if (mounted.json.Err || typeof mountpoint !== 'string') throw new Error(`holding ${name}: Mount answered ${mounted.text}`);
  const holder = await holdMount(mountpoint, dir);
  const unmounted = await client.call('VolumeDriver.Unmount', { Name: name, ID: id });
  if (unmounted.json.Err) throw new Error(`holding ${name}: Unmount answered ${unmounted.text}`);
  return holder;
}
