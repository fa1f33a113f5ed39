// A single-node swarm of this machine's dockerd for tests and benchmarks (test/e2e/swarm.test.ts,
// bench/burst.ts), and the services in it.
//
// The swarm: a dockerd outside any swarm gets `docker swarm init` (listening on 127.0.0.1 only),
// and `leaveSwarm` leaves that swarm again (and removes the docker_gwbridge network init created).
// A dockerd that already manages a swarm is used as it is and left in it; the caller pins every
// task to this node (the plugin is installed here only). A swarm worker, or a swarm in any other
// state, is refused with a clear message: services cannot be created there.
import { docker, dockerResult, waitFor } from './docker.js';

/** Node label that marks a swarm a test or benchmark initialised (so a run after a crashed one still leaves it). */
const INIT_LABEL = 'ossnas-e2e.swarm-init';

export interface SwarmInfo {
  LocalNodeState: string;
  ControlAvailable: boolean;
  NodeID: string;
  Nodes?: number;
  Error: string;
}

export interface Swarm {
  nodeId: string;
  /** joinSwarm initialised this swarm: leaveSwarm leaves it. */
  ours: boolean;
  /** docker_gwbridge existed before the init (then it is not ours to remove). */
  gwbridgeExisted: boolean;
}

export const swarmInfo = async () => JSON.parse(await docker(['info', '--format', '{{json .Swarm}}'])) as SwarmInfo;

async function networkExists(name: string): Promise<boolean> {
  return (await dockerResult(['network', 'inspect', name])).exitCode === 0;
}

/** A swarm this dockerd manages: its own new single-node swarm, or the one it already manages. */
export async function joinSwarm(note: (m: string) => void): Promise<Swarm> {
  const info = await swarmInfo();
  if (info.LocalNodeState === 'inactive') {
    const gwbridgeExisted = await networkExists('docker_gwbridge');
    // Loopback only: no network is needed for one node, and the CI machine exposes no swarm port.
    await docker(['swarm', 'init', '--advertise-addr', '127.0.0.1', '--listen-addr', '127.0.0.1:2377'], { timeout: 60_000 });
    const { NodeID } = await swarmInfo();
    await docker(['node', 'update', '--label-add', `${INIT_LABEL}=1`, NodeID]).catch(async (e: unknown) => {
      await dockerResult(['swarm', 'leave', '--force']);
      throw e;
    });
    // dockerd sets up the ingress network's sandbox ~2 s after init, services or not. A leave
    // before that is done (a test failing at once) leaves a stale `ingress` network and an
    // ingress-sbox endpoint on docker_gwbridge behind (measured with dockerd 20.10).
    const t0 = Date.now();
    const settled = await waitFor('the ingress sandbox on docker_gwbridge', async () => (await gwbridgeEndpoints())?.includes('ingress-sbox'), 30_000, 250)
      .then(() => `ingress set up after ${Date.now() - t0} ms`, (e: Error) => e.message);
    note(`docker swarm init: single-node swarm, node ${NodeID}; ${settled}`);
    return { nodeId: NodeID, ours: true, gwbridgeExisted };
  }
  if (info.LocalNodeState === 'active' && info.ControlAvailable) {
    const labels = JSON.parse(await docker(['node', 'inspect', '--format', '{{json .Spec.Labels}}', info.NodeID])) as Record<string, string> | null;
    const ours = Boolean(labels?.[INIT_LABEL]);
    note(
      ours
        ? `dockerd is still in the swarm an earlier run initialised: using it, and leaving it at the end`
        : `dockerd already manages a swarm (${info.Nodes ?? '?'} node(s)): using it, tasks pinned to node ${info.NodeID}; it stays in the swarm`,
    );
    return { nodeId: info.NodeID, ours, gwbridgeExisted: !ours };
  }
  if (info.LocalNodeState === 'active') {
    throw new Error(
      `this dockerd is a swarm worker (node ${info.NodeID}): services can only be created on a manager. ` +
        `Run on a dockerd outside any swarm (a swarm is then created and left again) or on a swarm manager.`,
    );
  }
  throw new Error(
    `this dockerd's swarm state is '${info.LocalNodeState}'${info.Error ? ` (${info.Error})` : ''}: this needs either no swarm ` +
      `(one is then created) or an active swarm manager. Not touching it.`,
  );
}

/** The endpoints on docker_gwbridge (the bridge swarm creates for its sandboxes), or undefined when there is none. */
async function gwbridgeEndpoints(): Promise<string[] | undefined> {
  const r = await dockerResult(['network', 'inspect', '--format', '{{json .Containers}}', 'docker_gwbridge']);
  return r.exitCode === 0 ? Object.keys((JSON.parse(r.stdout) as Record<string, unknown> | null) ?? {}) : undefined;
}

/** Leaves the swarm joinSwarm initialised, and removes the docker_gwbridge network the init created. */
export async function leaveSwarm(s: Swarm): Promise<void> {
  if (!s.ours) return;
  await docker(['swarm', 'leave', '--force'], { timeout: 60_000 });
  if (s.gwbridgeExisted) return;
  // Its endpoints go within a moment of the leave; one that stays is a stale ingress sandbox.
  let eps = await gwbridgeEndpoints();
  for (const deadline = Date.now() + 10_000; eps?.length && Date.now() < deadline; eps = await gwbridgeEndpoints()) {
    await new Promise((r) => setTimeout(r, 250));
  }
  if (eps === undefined) return;
  if (eps.includes('ingress-sbox')) await docker(['network', 'disconnect', '-f', 'docker_gwbridge', 'gateway_ingress-sbox']);
  await docker(['network', 'rm', 'docker_gwbridge']);
}

export interface Task {
  id: string;
  name: string;
  desired: string;
  current: string;
  error: string;
}

export async function tasksOf(service: string): Promise<Task[]> {
  const out = await docker(['service', 'ps', '--no-trunc', '--format', '{{.ID}}\t{{.Name}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}', service]);
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [id = '', name = '', desired = '', current = '', error = ''] = l.split('\t');
      return { id, name, desired, current, error };
    });
}

const servicePs = async (service: string) => (await dockerResult(['service', 'ps', '--no-trunc', service])).stdout;

/**
 * Waits until COUNT tasks of SERVICE run. A task that failed, was rejected or completed ends the
 * wait at once (restart-condition none: it will not come back). Pending is no failure: the
 * scheduler may take up to one node-description period (~20 s) to see a plugin just enabled.
 */
export async function waitForRunningTasks(service: string, count: number, timeoutMs = 90_000): Promise<Task[]> {
  const t0 = Date.now();
  let last: Task[] = [];
  while (Date.now() - t0 < timeoutMs) {
    last = await tasksOf(service);
    const dead = last.filter((k) => /^(Failed|Rejected|Complete|Orphaned|Remove|Shutdown)/.test(k.current));
    if (dead.length) {
      throw new Error(`a task of ${service} ended instead of running: ${dead.map((k) => `${k.name} ${k.current} ${k.error}`).join('; ')}\n` +
        `docker service ps --no-trunc ${service}:\n${await servicePs(service)}`);
    }
    const running = last.filter((k) => k.current.startsWith('Running') && k.desired === 'Running');
    if (running.length === count) return running;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${count} running tasks of ${service}\n` +
    `docker service ps --no-trunc ${service}:\n${await servicePs(service)}`);
}

export const serviceContainers = async (service: string) =>
  (await docker(['ps', '-aq', '--filter', `label=com.docker.swarm.service.name=${service}`])).split('\n').filter(Boolean);

/** `docker service rm`, then waits until its task containers are gone (stop grace 1 s). */
export async function removeService(service: string, timeoutMs = 60_000): Promise<void> {
  const r = await dockerResult(['service', 'rm', service]);
  if (r.exitCode !== 0 && !/not found|no such service/i.test(r.stderr)) throw new Error(`docker service rm ${service}: ${r.stderr}`);
  await waitFor(`the task containers of service ${service} to go`, async () => (await serviceContainers(service)).length === 0, timeoutMs, 250);
}
