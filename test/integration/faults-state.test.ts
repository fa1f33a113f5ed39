// The state directory under real faults, with the real program as a host process: a 2 MiB tmpfs
// filled to its last page during a burst of calls from concurrent clients, then kill -9, then a
// start on the still full filesystem; and mount IDs named like Object.prototype members across
// kill -9. Needs root (tmpfs, loop devices, mounts).
import assert from 'node:assert/strict';
import { stat, truncate, unlink } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { loadState, type StateData } from '../../src/driver/state.js';
import { readMounts } from '../../src/host/mountinfo.js';
import { PluginClient, type Reply } from '../helpers/docker-client.js';
import { waitFor } from '../helpers/docker.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { attachLoop, fillUntilFull, freeBytes, logLines, mountedAt, mountTmpfs, sleep, Undo, unmountAll } from '../helpers/faults.js';
import { holdMount, holdVolume, type Holder } from '../helpers/holder.js';
import { finishPlugin, startPlugin, startPluginInTempDir, type PluginProcess } from '../helpers/plugin-process.js';

const CLIENTS = 4;
const ROUNDS = 5;
/** What a full state filesystem must make every change say (and nothing else). */
const FULL = /^volume (\S+): the change could not be saved: the state filesystem is full \(ENOSPC writing \S+\/state\.journal\); nothing was changed$/;

const rand = (n: number) => Math.floor(Math.random() * n);
const sum = (m: ReadonlyMap<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** What one client knows was acknowledged, and the one call it had in flight at the kill. */
interface Ledger {
  disk: string;
  mountpoint: string;
  volumes: Map<string, boolean>; // NAS volume -> exists
  refs: Map<string, number>; // mount ID on its disk volume -> count
  inFlight?: { op: string; name: string; id?: string };
}

/** Over all clients: what happened, and what went wrong (collected, asserted after the kill). */
interface Tally {
  changes: number; // acknowledged calls that changed the state
  refused: number;
  refusedMounts: number;
  unexpected: string[];
  /** A Mount or Unmount answered while the mount table disagreed with the acknowledged references. */
  strayOrMissing: string[];
}

async function burst(client: PluginClient, stateDir: string, ledger: Ledger, tally: Tally, stop: { now: boolean }): Promise<void> {
  const call = (m: string, a: unknown) => client.call(`VolumeDriver.${m}`, a);
  while (!stop.now) {
    const kind = rand(4);
    const name = `${ledger.disk.replace('-disk', '')}-v${rand(6)}`;
    const held = [...ledger.refs].filter(([, n]) => n > 0).map(([k]) => k);
    // Each Mount a new ID, as each container start is; each Unmount one of the IDs still held.
    const id = kind === 2 ? `id-${Date.now().toString(36)}-${rand(1e9)}` : held[rand(held.length)];
    let op: string;
    let r: Reply;
    try {
      if (kind === 0) {
        ledger.inFlight = { op: (op = 'Create'), name };
        r = await call(op, { Name: name, Opts: { type: 'nas', server: '10.0.0.1', path: `/${name}` } });
      } else if (kind === 1) {
        ledger.inFlight = { op: (op = 'Remove'), name };
        r = await call(op, { Name: name });
      } else if (kind === 2 || id) {
        ledger.inFlight = { op: (op = kind === 2 ? 'Mount' : 'Unmount'), name: ledger.disk, id: id! };
        r = await call(op, { Name: ledger.disk, ID: id });
      } else continue;
    } catch {
      return; // the plugin died under this call: it stays in flight
    }
    const target = ledger.inFlight.name;
    ledger.inFlight = undefined;
    const err = String(r.json.Err ?? r.text);
    if (r.status === 200 && err === '') {
      if (op === 'Create' && !ledger.volumes.get(target)) tally.changes++;
      if (op === 'Remove' && ledger.volumes.get(target)) tally.changes++;
      if (op === 'Create') ledger.volumes.set(target, true);
      if (op === 'Remove') ledger.volumes.set(target, false);
      if (op === 'Mount' || op === 'Unmount') {
        tally.changes++;
        ledger.refs.set(id!, (ledger.refs.get(id!) ?? 0) + (op === 'Mount' ? 1 : -1));
      }
    } else if (FULL.test(err) && FULL.exec(err)![1] === target) {
      tally.refused++; // the ledger keeps what was acknowledged before it
      if (op === 'Mount') tally.refusedMounts++;
      // Not even for a moment on disk: a write cut short is cut back before the refusal is sent
      // (only this client touches `target`, so the files must show what it last had acknowledged).
      const files = await loadState(stateDir);
      const shown = op === 'Mount' || op === 'Unmount' ? (files.volumes[target]?.mounts[id!] ?? 0) : target in files.volumes;
      const acknowledged = op === 'Mount' || op === 'Unmount' ? (ledger.refs.get(id!) ?? 0) : !!ledger.volumes.get(target);
      if (shown !== acknowledged) tally.unexpected.push(`refused ${op} ${target} ${id ?? ''} is in the state files: ${String(shown)}`);
    } else if (op === 'Remove' && err === `volume ${target} not found`) {
      ledger.volumes.set(target, false);
    } else {
      tally.unexpected.push(`${op} ${target}: ${r.status} ${err}`);
    }
    if (op === 'Mount' || op === 'Unmount') {
      // Only this client uses its disk volume: right after its answer, the volume is mounted
      // exactly when acknowledged references hold it (a refused Mount left nothing behind).
      const mounted = await mountedAt(ledger.mountpoint);
      if (mounted !== sum(ledger.refs) > 0) {
        tally.strayOrMissing.push(`${op} ${id} -> ${r.status} ${err}: mounted=${mounted} with ${sum(ledger.refs)} acknowledged references`);
      }
    }
  }
}

describe('a full state filesystem', { skip: rootSkipReason(), timeout: 240_000 }, () => {
  const undo = new Undo();
  let dir: string;
  let stateDir: string;
  let filler: string;
  let plugin: PluginProcess | undefined;
  const devices: string[] = [];

  before(async () => {
    const t = await tempDir();
    dir = t.dir;
    undo.add('the temporary directory', t.cleanup);
    stateDir = path.join(dir, 'state');
    await mountTmpfs(stateDir, '2m', undo);
    // The filler lives on the state filesystem; the disks' backing files do not.
    filler = path.join(stateDir, 'filler');
    for (let c = 0; c < CLIENTS; c++) {
      const dev = await attachLoop(path.join(dir, `disk-${c}.img`), 32 * 2 ** 20, undo);
      await execa('mkfs.ext4', ['-q', '-F', dev]);
      devices.push(dev);
    }
    undo.add('mounts under the test directory', async () => {
      for (const m of (await readMounts()).reverse()) {
        if (m.mountPoint.startsWith(dir + '/') && m.mountPoint !== stateDir) await unmountAll(m.mountPoint);
      }
    });
  });
  after(async () => {
    if (plugin?.child.exitCode === null) plugin.child.kill('SIGKILL');
    plugin?.client.close();
    await undo.run();
  });

  it('burst, ENOSPC, kill -9: acknowledged changes are kept, refused ones never appear and said why, and a start on the full filesystem answers and works again once there is room', async (t) => {
    const first = await startPlugin(dir);
    plugin = first;
    const ledgers: Ledger[] = [];
    for (let c = 0; c < CLIENTS; c++) {
      const disk = `c${c}-disk`;
      const r = await first.client.call('VolumeDriver.Create', { Name: disk, Opts: { type: 'disk', device: devices[c]! } });
      assert.deepEqual(r.json, { Err: '' });
      // A container holds each disk, so that a start keeps its references (see holdVolume).
      const holder = await holdVolume(first.client, disk, path.join(dir, 'holders', disk));
      undo.add(`the holder of ${disk}`, () => holder.release());
      ledgers.push({ disk, mountpoint: path.join(first.mountRoot, disk), volumes: new Map(), refs: new Map() });
    }
    const totals = { changes: 0, refused: 0, refusedMounts: 0, refusedAtStart: 0, facts: 0 };
    for (let round = 0; round < ROUNDS; round++) {
      const running = plugin;
      const tally: Tally = { changes: 0, refused: 0, refusedMounts: 0, unexpected: [], strayOrMissing: [] };
      const stop = { now: false };
      const clients = ledgers.map(() => new PluginClient(running.socket));
      const bursts = ledgers.map((l, c) => burst(clients[c]!, stateDir, l, tally, stop));

      // The faults, while the clients run: fill, free a part, fill again, kill at a random instant.
      await waitFor('the burst to change things', async () => tally.changes >= 20, 20_000, 10);
      await fillUntilFull(filler);
      await waitFor('changes refused on the full filesystem', async () => tally.refused >= 3, 20_000, 10);
      await truncate(filler, Math.max(0, (await stat(filler)).size - 256 * 1024));
      const before = tally.changes;
      await waitFor('changes acknowledged again once space was freed', async () => tally.changes >= before + 20, 20_000, 10);
      await fillUntilFull(filler);
      await sleep(rand(1500));
      running.child.kill('SIGKILL');
      await new Promise((r) => (running.child.exitCode !== null || running.child.signalCode !== null ? r(null) : running.child.once('exit', r)));
      stop.now = true;
      await Promise.all(bursts);
      for (const c of clients) c.close();
      t.diagnostic(`round ${round}: ${tally.changes} changes acknowledged, ${tally.refused} refused (${tally.refusedMounts} Mounts)`);
      assert.deepEqual(tally.unexpected, [], 'only refusals for the full filesystem');
      assert.deepEqual(tally.strayOrMissing, [], 'a mount without a reference, or a reference without a mount');
      Object.assign(totals, {
        changes: totals.changes + tally.changes,
        refused: totals.refused + tally.refused,
        refusedMounts: totals.refusedMounts + tally.refusedMounts,
      });

      // The state on disk, read without changing it: what was acknowledged, never what was refused.
      const state = await loadState(stateDir);
      totals.facts += checkLedgers(ledgers, state, round);

      // A start with the filesystem still full (to its last page).
      await fillUntilFull(filler);
      assert.equal(await freeBytes(stateDir), 0);
      plugin = await startPlugin(dir);
      const call = (m: string, a: unknown) => plugin!.client.call(`VolumeDriver.${m}`, a);
      assert.deepEqual((await call('Capabilities', {})).json, { Capabilities: { Scope: 'local' } });
      const listed = ((await call('List', {})).json.Volumes as Array<{ Name: string }>).map((v) => v.Name).sort();
      assert.deepEqual(listed, Object.keys(state.volumes).sort(), 'List holds every acknowledged volume');
      for (const name of listed) {
        const got = await call('Get', { Name: name });
        assert.equal(got.status, 200, got.text);
        const refs = Object.values(state.volumes[name]!.mounts).reduce((a, b) => a + b, 0);
        assert.equal((got.json.Volume as { Status: { refs: number } }).Status.refs, refs, `${name}: refs`);
        assert.deepEqual((await call('Path', { Name: name })).json, { Mountpoint: path.join(plugin.mountRoot, name), Err: '' });
      }
      // Changes: those that fit in the journal's last page still go through; then one is refused, saying why.
      const probes: string[] = [];
      let refusal: Reply | undefined;
      for (let i = 0; i < 200 && !refusal; i++) {
        const name = `r${round}-full-${i}`;
        const r = await call('Create', { Name: name, Opts: { type: 'nas', server: '10.0.0.1', path: '/p' } });
        if (r.json.Err === '') probes.push(name);
        else refusal = r;
      }
      assert.ok(refusal, 'a change was refused on the full filesystem');
      const refusedName = `r${round}-full-${probes.length}`;
      assert.match(String(refusal.json.Err), FULL);
      assert.equal(FULL.exec(String(refusal.json.Err))![1], refusedName);
      assert.match((await call('Get', { Name: refusedName })).text, /not found/, 'the refused Create left nothing');
      totals.refusedAtStart++;
      // Room again: changes work with no restart.
      await unlink(filler);
      assert.deepEqual((await call('Create', { Name: refusedName, Opts: { type: 'nas', server: '10.0.0.1', path: '/p' } })).json, { Err: '' });
      for (const name of [...probes, refusedName]) assert.deepEqual((await call('Remove', { Name: name })).json, { Err: '' });
      assert.ok(!(await call('List', {})).text.includes(`r${round}-full-`));
      // The start's restore adopts what references hold and undoes what none holds (a Mount cut
      // short by the kill may have mounted with no reference saved).
      for (const l of ledgers) {
        const want = sum(l.refs) > 0;
        await waitFor(`${l.disk} ${want ? 'mounted' : 'not mounted'} after the restore`, async () => (await mountedAt(l.mountpoint)) === want, 15_000, 50);
      }
    }
    t.diagnostic(
      `${ROUNDS} kills: ${totals.changes} changes acknowledged, ${totals.refused} refused (${totals.refusedMounts} Mounts), ` +
        `${totals.facts} acknowledged facts checked against the state; ${totals.refusedAtStart} starts on a full filesystem`,
    );
    assert.ok(totals.refusedMounts > 0, 'some refused calls were Mounts');
    assert.match(plugin.output(), /state snapshot not written at start \(is the state filesystem full\?\)/);
    await plugin.stop();
    // Clean up what the clients left mounted (the disk volumes) through the program itself.
    plugin = await startPlugin(dir);
    for (const l of ledgers) {
      for (const [id, n] of l.refs) for (let i = 0; i < n; i++) await plugin.client.call('VolumeDriver.Unmount', { Name: l.disk, ID: id });
      assert.equal(await mountedAt(l.mountpoint), false);
    }
    await plugin.stop();
  });
});

/** Every fact a ledger holds, checked against the state; returns how many. The call in flight at the kill may go either way. */
function checkLedgers(ledgers: Ledger[], state: StateData, round: number): number {
  let facts = 0;
  for (const l of ledgers) {
    for (const [name, exists] of l.volumes) {
      if (l.inFlight?.name === name) continue;
      assert.equal(name in state.volumes, exists, `round ${round}: ${name} should ${exists ? '' : 'not '}exist`);
      facts++;
    }
    const mounts = state.volumes[l.disk]!.mounts;
    for (const id of new Set([...l.refs.keys(), ...Object.keys(mounts)])) {
      const count = l.refs.get(id) ?? 0;
      const stored = mounts[id] ?? 0;
      const either = l.inFlight?.id === id ? [count, count + (l.inFlight.op === 'Mount' ? 1 : -1)] : [count];
      assert.ok(either.includes(stored), `round ${round}: ${l.disk} ID ${id}: state has ${stored}, acknowledged ${count}; in flight: ${JSON.stringify(l.inFlight)}`);
      l.refs.set(id, stored); // the next round starts from what the state says
      facts++;
    }
    if (l.inFlight && l.inFlight.name !== l.disk) l.volumes.set(l.inFlight.name, l.inFlight.name in state.volumes);
    l.inFlight = undefined;
  }
  return facts;
}

describe('mount IDs named like Object.prototype members', { skip: rootSkipReason(), timeout: 120_000 }, () => {
  let plugin: PluginProcess | undefined;
  let holder: Holder | undefined;
  after(async () => {
    await finishPlugin(plugin);
    await holder?.release();
  });

  it('constructor, __proto__ and toString are three references on one disk volume, across kill -9 (journal) and a second kill -9 (snapshot)', async () => {
    const IDS = ['constructor', '__proto__', 'toString'];
    plugin = await startPluginInTempDir();
    const call = (m: string, a: unknown) => plugin!.client.call(`VolumeDriver.${m}`, a);
    assert.deepEqual((await call('Create', { Name: 'odd', Opts: { type: 'disk', size: '16M' } })).json, { Err: '' });
    const mp = path.join(plugin.mountRoot, 'odd');
    for (const ID of IDS) assert.deepEqual((await call('Mount', { Name: 'odd', ID })).json, { Mountpoint: mp, Err: '' });
    const refs = async () => ((await call('Get', { Name: 'odd' })).json.Volume as { Status: { refs: number } }).Status.refs;
    assert.equal(await refs(), 3);
    // The container that holds it (without one, a start rightly releases the three references).
    holder = await holdMount(mp, path.join(plugin.dir, 'holder'));

    // First from the journal (kill -9 leaves no snapshot), then from the snapshot that start wrote.
    for (const from of ['journal', 'snapshot']) {
      const dying = plugin;
      dying.child.kill('SIGKILL');
      await new Promise((r) => dying.child.once('exit', r));
      dying.client.close();
      const state = await loadState(path.join(plugin.dir, 'state'));
      assert.deepEqual(Object.entries(state.volumes.odd!.mounts).sort(), IDS.map((id) => [id, 1]).sort(), `the files (${from})`);
      plugin = await startPlugin(plugin.dir);
      assert.equal(await refs(), 3, `after a start from the ${from}`);
    }
    assert.ok(await mountedAt(mp));
    assert.deepEqual((await call('Unmount', { Name: 'odd', ID: 'constructor' })).json, { Err: '' });
    assert.deepEqual((await call('Unmount', { Name: 'odd', ID: '__proto__' })).json, { Err: '' });
    assert.ok(await mountedAt(mp), 'toString still holds it');
    assert.equal(await refs(), 1);
    assert.deepEqual((await call('Unmount', { Name: 'odd', ID: 'toString' })).json, { Err: '' });
    assert.equal(await mountedAt(mp), false, 'the last of the three unmounted it');
    assert.equal(await refs(), 0);
    assert.equal(logLines(plugin.output()).filter((l) => l.level === 50).length, 0, 'no errors logged');
  });
});
