// The swarm of several dockerd nodes that scripts/cluster.sh runs on this machine, for tests: each
// node is reached through its own socket, the plugin is distributed through the cluster's local
// registry as operators do it, and a node can fail (kill -9 of everything it runs) and come back.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { docker, dockerResult, REPO_ROOT, waitFor, type DockerOptions, type DockerResult } from './docker.js';

const SCRIPT = path.join(REPO_ROOT, 'scripts', 'cluster.sh');

export class ClusterNode {
  constructor(
    readonly name: string,
    /** unix:///run/ossnas-cluster/<name>/docker.sock */
    readonly host: string,
    readonly logFile: string,
  ) {}

  docker(args: string[], opts?: DockerOptions): Promise<string> {
    return docker(['-H', this.host, ...args], opts);
  }

  dockerResult(args: string[], opts?: DockerOptions): Promise<DockerResult> {
    return dockerResult(['-H', this.host, ...args], opts);
  }

  /** The node's ID in the swarm. */
  async id(): Promise<string> {
    return this.docker(['info', '--format', '{{.Swarm.NodeID}}']);
  }

  /** Host path of a plugin's propagated mount on this node. */
  async propagatedMount(plugin: string): Promise<string> {
    const id = await this.docker(['plugin', 'inspect', '--format', '{{.Id}}', plugin]);
    const root = await this.docker(['info', '--format', '{{.DockerRootDir}}']);
    return path.join(root, 'plugins', id, 'propagated-mount');
  }

  /** Resident memory of everything the node runs (dockerd, containerd, shims, plugin, FUSE clients, containers), in MiB. */
  async memoryMiB(): Promise<number> {
    const pids = (await script(['pids', this.name])).split(/\s+/).filter(Boolean);
    let kib = 0;
    for (const pid of pids) kib += Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''))?.[1] ?? 0);
    return Math.round(kib / 1024);
  }

  /** This node's dockerd log, where its plugin's lines land. */
  async log(): Promise<string> {
    return readFile(this.logFile, 'utf8').catch(() => '');
  }
}

export interface Cluster {
  nodes: ClusterNode[];
  /** host:port of the local registry */
  registry: string;
  /** kill -9 of everything the node runs, at once. */
  fail(node: ClusterNode): Promise<void>;
  /** Starts a failed node's dockerd again (same data root), and waits until the swarm sees it Ready. */
  restart(node: ClusterNode): Promise<void>;
  down(): Promise<void>;
}

async function script(args: string[], timeout = 180_000): Promise<string> {
  const r = await execa('bash', [SCRIPT, ...args], { reject: false, timeout, all: true });
  if (r.exitCode !== 0) throw new Error(`cluster.sh ${args.join(' ')} failed (exit ${r.exitCode}):\n${r.all}`);
  return r.stdout;
}

/** `cluster.sh up N` (a cluster left by a crashed run is removed first), parsed from its `info` lines. */
export async function startCluster(count: number): Promise<Cluster> {
  await script(['down']);
  const info = await script(['up', String(count)]).catch(async (err: unknown) => {
    await script(['down']).catch(() => undefined); // nothing half made stays
    throw err;
  });
  const nodes: ClusterNode[] = [];
  let registry = '';
  for (const line of info.split('\n')) {
    const node = /^(n\d+) (unix:\S+) pid=\S* log=(\S+)/.exec(line);
    if (node) nodes.push(new ClusterNode(node[1]!, node[2]!, node[3]!));
    const reg = /^registry (\S+)$/.exec(line);
    if (reg) registry = reg[1]!;
  }
  if (nodes.length !== count || !registry) throw new Error(`cluster.sh up ${count} printed no ${count} nodes and a registry:\n${info}`);
  const manager = nodes[0]!;
  const ready = async (node: ClusterNode) => {
    const id = await node.id();
    return (await manager.docker(['node', 'inspect', '--format', '{{.Status.State}}', id])) === 'ready';
  };
  return {
    nodes,
    registry,
    fail: async (node) => void (await script(['kill', node.name])),
    restart: async (node) => {
      await script(['start', node.name]);
      await waitFor(`node ${node.name} to be ready in the swarm again`, () => ready(node), 60_000, 500);
    },
    down: async () => void (await script(['down'])),
  };
}
