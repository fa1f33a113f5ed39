// kill -9 of the plugin at random instants during a burst of creates, removes, mounts and
// unmounts from concurrent clients: the state file always loads, and every operation that was
// acknowledged before the kill is in it. The program runs as a host process on real disk
// volumes (loop mounts). Needs root.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { loadState } from '../../src/driver/state.js';
import { readMounts } from '../../src/host/mountinfo.js';
import { PluginClient } from '../helpers/docker-client.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { holdVolume, type Holder } from '../helpers/holder.js';
import { startPlugin, type PluginProcess } from '../helpers/plugin-process.js';

const CLIENTS = 4;
const ROUNDS = 6;

/** What one client knows was acknowledged, and the one call it had in flight at the kill. */
interface Ledger {
  volumes: Map<string, boolean>; // name -> exists
  refs: Map<string, number>; // mount ID of its disk volume -> count
  inFlight?: { op: string; name: string; id?: string };
}

const rand = (n: number) => Math.floor(Math.random() * n);

async function burst(client: PluginClient, c: number, ledger: Ledger, stop: { now: boolean }): Promise<void> {
  const call = (m: string, a: unknown) => client.call(`VolumeDriver.${m}`, a);
  const disk = `c${c}-disk`;
  while (!stop.now) {
    const name = `c${c}-v${rand(6)}`;
    // Each Mount a new ID, as each container start is; each Unmount one of the IDs still held.
    // (An ID mounted again while nothing holds the mount means a stale count, and is not counted twice.)
    const held = [...ledger.refs].filter(([, n]) => n > 0).map(([k]) => k);
    const kind = rand(4);
    const id = kind === 2 ? `id${c}-${Date.now().toString(36)}-${rand(1e6)}` : (held[rand(held.length)] ?? 'none');
    try {
      if (kind === 0) {
        ledger.inFlight = { op: 'create', name };
        const r = await call('Create', { Name: name, Opts: { type: 'nas', server: '10.0.0.1', path: `/${name}` } });
        if (r.json.Err === '') ledger.volumes.set(name, true);
      } else if (kind === 1) {
        ledger.inFlight = { op: 'remove', name };
        const r = await call('Remove', { Name: name });
        if (r.json.Err === '' || /not found/.test(String(r.json.Err))) ledger.volumes.set(name, false);
      } else if (kind === 2) {
        ledger.inFlight = { op: 'mount', name: disk, id };
        const r = await call('Mount', { Name: disk, ID: id });
        if (r.status === 200 && r.json.Err === '') ledger.refs.set(id, (ledger.refs.get(id) ?? 0) + 1);
      } else if ((ledger.refs.get(id) ?? 0) > 0) {
        ledger.inFlight = { op: 'unmount', name: disk, id };
        const r = await call('Unmount', { Name: disk, ID: id });
        if (r.json.Err === '') ledger.refs.set(id, ledger.refs.get(id)! - 1);
      }
      ledger.inFlight = undefined;
    } catch {
      return; // the plugin died under this call: it stays in flight
    }
  }
}

describe('kill -9 at random instants during a burst of calls', { skip: rootSkipReason(), timeout: 300_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let plugin: PluginProcess | undefined;
  const holders: Holder[] = [];

  before(async () => {
    const t = await tempDir();
    dir = t.dir;
    cleanup = t.cleanup;
  });
  after(async () => {
    await plugin?.stop();
    await Promise.all(holders.map((h) => h.release()));
    for (const m of (await readMounts()).reverse()) {
      if (m.mountPoint.startsWith(dir)) await execa('umount', ['-l', m.mountPoint], { reject: false });
    }
    await cleanup?.();
  });

  it('the state always loads and holds every acknowledged operation', async (t) => {
    const ledgers: Ledger[] = Array.from({ length: CLIENTS }, () => ({ volumes: new Map(), refs: new Map() }));
    let running: PluginProcess = await startPlugin(dir);
    plugin = running;
    for (let c = 0; c < CLIENTS; c++) {
      const created = await running.client.call('VolumeDriver.Create', { Name: `c${c}-disk`, Opts: { type: 'disk', size: '16M' } });
      assert.deepEqual(created.json, { Err: '' });
      // A container holds each volume, so that a start keeps the references (it releases those
      // no container holds: containers that died with their node).
      holders.push(await holdVolume(running.client, `c${c}-disk`, path.join(dir, 'holders', `c${c}`)));
    }
    let acknowledged = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const stop = { now: false };
      const clients = ledgers.map(() => new PluginClient(running.socket));
      const bursts = ledgers.map((l, c) => burst(clients[c]!, c, l, stop));
      await new Promise((r) => setTimeout(r, 150 + rand(900)));
      running.child.kill('SIGKILL');
      await new Promise((r) => running.child.once('exit', r));
      stop.now = true;
      await Promise.all(bursts);
      for (const c of clients) c.close();

      // The file parses, and a new process loads it.
      const state = await loadState(path.join(dir, 'state'));
      ledgers.forEach((l, c) => {
        for (const [name, exists] of l.volumes) {
          if (l.inFlight?.name === name) continue; // the call cut short may or may not have applied
          assert.equal(name in state.volumes, exists, `round ${round}: ${name} should ${exists ? '' : 'not '}exist`);
          acknowledged++;
        }
        const mounts = state.volumes[`c${c}-disk`]!.mounts;
        // Every ID either side knows: the cut-short call may be the first mount of an ID.
        const ids = new Set([...l.refs.keys(), ...Object.keys(mounts)]);
        for (const id of ids) {
          const count = l.refs.get(id) ?? 0;
          const stored = mounts[id] ?? 0;
          const slack = l.inFlight?.id === id ? (l.inFlight.op === 'mount' ? [count, count + 1] : [count, count - 1]) : [count];
          assert.ok(slack.includes(stored), `round ${round}: c${c}-disk ID ${id}: state has ${stored}, acknowledged ${count}; in flight: ${JSON.stringify(l.inFlight)}`);
          if (l.inFlight?.id === id) l.refs.set(id, stored); // adopt what the state says for the next round
          acknowledged++;
        }
        if (l.inFlight?.name && l.inFlight.op !== 'mount' && l.inFlight.op !== 'unmount') {
          l.volumes.set(l.inFlight.name, l.inFlight.name in state.volumes);
        }
        l.inFlight = undefined;
      });
      running = await startPlugin(dir);
      plugin = running;
      const list = await running.client.call('VolumeDriver.List', {});
      assert.equal((list.json.Volumes as unknown[]).length, Object.keys(state.volumes).length, 'the restarted plugin lists the state');
    }
    t.diagnostic(`${ROUNDS} kills; ${acknowledged} acknowledged facts checked against the state file`);
    assert.ok(acknowledged > ROUNDS * 4, 'the bursts did work before the kills');
  });
});
