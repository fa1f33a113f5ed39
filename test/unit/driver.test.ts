import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { open, readdir, readFile, stat, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { VolumeError } from '../../src/driver/errors.js';
import { loadState } from '../../src/driver/state.js';
import { RetrySchedule } from '../../src/driver/restore.js';
import { FakeBackend } from '../helpers/fake-backend.js';
import { fakeDriver } from '../helpers/fake-driver.js';
import { tempDir } from '../helpers/env.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => Promise.all(cleanups.map((c) => c())));
async function setup(fake?: FakeBackend) {
  const t = await tempDir();
  cleanups.push(t.cleanup);
  return { ...(await fakeDriver(t.dir, fake)), dir: t.dir };
}
const opts = { type: 'fake', target: 'bucket-a' };
const until = async (cond: () => boolean, ms = 5000) => {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 20));
  }
};
/** A container on the host has the mount at TARGET in its own namespace (what mountUsers finds). */
const heldByContainer = (fake: FakeBackend, target: string) => fake.users.set(target, ['PID 4242: /data']);
const err = (kind: string, re: RegExp) => (e: unknown) => e instanceof VolumeError && e.kind === kind && re.test(e.message);

describe('Create', () => {
  it('is idempotent for the same options in any spelling, and refuses different ones by key', async () => {
    const { driver } = await setup();
    await driver.create('v1', opts);
    await driver.create('v1', { TYPE: 'fake', Target: 'bucket-a' });
    await assert.rejects(driver.create('v1', { type: 'fake', target: 'other', akSecret: 'hunter22' }), (e: unknown) =>
      err('conflict', /already exists with different options \(akSecret, target\)/)(e) && !(e as Error).message.includes('hunter22'),
    );
  });

  it('validates names and options before touching state', async () => {
    const { driver } = await setup();
    await assert.rejects(driver.create('../etc', opts), err('invalid', /invalid volume name '\.\.\/etc'/));
    await assert.rejects(driver.create('a/b', opts), err('invalid', /invalid volume name/));
    await assert.rejects(driver.create('v', null), err('invalid', /volume v: option 'type' is required/));
    await assert.rejects(driver.create('v', { type: 'fake' }), err('invalid', /option 'target' is required/));
    assert.deepEqual(driver.list(), []);
  });

  it('answers Get and List from state with RFC 3339 CreatedAt and a mountpoint under the mount root', async () => {
    const { driver, settings } = await setup();
    await driver.create('v1', opts);
    const v = driver.get('v1');
    assert.equal(v.Name, 'v1');
    assert.equal(v.Mountpoint, path.join(settings.mountRoot, 'v1'));
    assert.match(v.CreatedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    assert.equal(new Date(v.CreatedAt).toISOString(), v.CreatedAt);
    assert.deepEqual(v.Status, { type: 'fake', target: 'bucket-a', mounted: false, refs: 0, health: 'idle', since: v.CreatedAt });
    assert.deepEqual(driver.list().map((x) => x.Name), ['v1']);
    assert.throws(() => driver.get('nope'), err('not-found', /volume nope not found/));
  });

  it("Status says since when its health holds: mounted, failed, mounted again, unmounted", async () => {
    const { driver, fake } = await setup();
    await driver.create('v', opts);
    const status = () => driver.get('v').Status as { health: string; since: string };
    const changes: string[] = [status().since];
    const step = async (expected: string, action: () => Promise<unknown>) => {
      await new Promise((r) => setTimeout(r, 5)); // timestamps are milliseconds
      await action();
      assert.equal(status().health, expected);
      changes.push(status().since);
    };
    await step('ok', () => driver.mount('v', 'A'));
    await step('ok', () => driver.mount('v', 'B')); // shares the mount: health unchanged
    assert.equal(changes[2], changes[1], 'a second container does not change since');
    await step('idle', async () => (await driver.unmount('v', 'A'), driver.unmount('v', 'B')));
    fake.failNextMounts = 1;
    await step('error', () => driver.mount('v', 'C').catch(() => undefined));
    await step('ok', () => driver.mount('v', 'C'));
    for (const at of changes) assert.equal(new Date(at).toISOString(), at, 'RFC 3339');
    const transitions = [0, 1, 3, 4, 5].map((i) => changes[i]!); // created, ok, idle, error, ok
    assert.ok(transitions.every((t, i) => i === 0 || t > transitions[i - 1]!), `each change of health has a later time: ${changes.join(' ')}`);
  });

  it('Get (inspect) adds size and use only for a mounted volume on a local filesystem', async () => {
    const { driver, fake } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    assert.equal((await driver.inspect('v')).Status?.usedBytes, undefined, 'a network or FUSE mount is never statfs-ed by Get');
    fake.localFilesystem = true;
    assert.deepEqual((await driver.inspect('v')).Status, { ...driver.get('v').Status, totalBytes: 1 << 20, usedBytes: 1 << 18, usedPercent: 25 });
    await driver.unmount('v', 'A');
    assert.deepEqual(await driver.inspect('v'), driver.get('v'), 'nothing to measure while unmounted');
    await assert.rejects(driver.inspect('nope'), err('not-found', /volume nope not found/));
  });

  it('List and Status follow every Create and Remove (both are answered from caches)', async () => {
    const { driver } = await setup();
    const names = () => driver.list().map((x) => x.Name);
    assert.deepEqual(names(), []);
    await driver.create('v1', opts);
    assert.deepEqual(names(), ['v1']);
    await driver.create('v2', { type: 'fake', target: 'bucket-b' });
    assert.deepEqual(names(), ['v1', 'v2']);
    assert.equal(driver.list(), driver.list(), 'unchanged state gives the same answer');
    assert.equal(driver.get('v2').Status?.target, 'bucket-b');
    await driver.remove('v1');
    assert.deepEqual(names(), ['v2']);
    await driver.remove('v2');
    await driver.create('v2', opts); // the same name again, other options: Status must not be stale
    assert.equal(driver.get('v2').Status?.target, 'bucket-a');
    assert.deepEqual(names(), ['v2']);
  });
});

describe('Mount and Unmount', () => {
  it('mount on the first ID, share for later IDs, unmount on the last', async () => {
    const { driver, fake, settings } = await setup();
    await driver.create('v', opts);
    const mp = path.join(settings.mountRoot, 'v');
    assert.equal(await driver.mount('v', 'A'), mp);
    assert.equal(await driver.mount('v', 'B'), mp);
    assert.deepEqual(fake.calls, ['mount v']);
    await driver.unmount('v', 'A');
    assert.ok(fake.mounted.has(mp), 'the first Unmount must not unmount under the other container');
    await driver.unmount('v', 'B');
    assert.deepEqual(fake.calls, ['mount v', 'unmount v']);
    assert.deepEqual(driver.get('v').Status?.refs, 0);
  });

  it('count the same ID twice (docker cp on a running container) and need two Unmounts', async () => {
    const { driver, fake, settings } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    fake.users.set(path.join(settings.mountRoot, 'v'), ['PID 42: /data']); // the running container
    await driver.mount('v', 'A');
    await driver.unmount('v', 'A');
    assert.equal(fake.mounted.size, 1);
    assert.equal(driver.get('v').Status?.refs, 1);
    await driver.unmount('v', 'A');
    assert.equal(fake.mounted.size, 0);
  });

  it('the same ID again while no container holds the mount (after a dockerd crash) replaces its stale count', async () => {
    const { driver, fake, lines } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A'); // the container then died with dockerd: no Unmount
    await driver.mount('v', 'A'); // started again with its persisted ID
    assert.equal(driver.get('v').Status?.refs, 1);
    assert.match(lines.join('\n'), /mount ID sent again with no Unmount/);
    await driver.unmount('v', 'A');
    assert.equal(fake.mounted.size, 0, 'the last Unmount unmounts');
  });

  it('Unmount of an unknown ID or volume succeeds and changes nothing', async () => {
    const { driver, fake } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    await driver.unmount('v', 'never-mounted');
    await driver.unmount('no-such-volume', 'X');
    assert.equal(fake.mounted.size, 1);
    assert.equal(driver.get('v').Status?.refs, 1);
  });

  it('persist reference counts, so a restarted plugin still knows who holds a volume', async () => {
    const { driver, dir } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    await driver.mount('v', 'B');
    await driver.unmount('v', 'B');
    assert.deepEqual((await loadState(path.join(dir, 'state'))).volumes.v?.mounts, { A: 1 });
    const fake2 = new FakeBackend();
    const { driver: again } = await fakeDriver(dir, fake2);
    assert.equal(again.get('v').Status?.refs, 1);
    // After a restart the mount is gone (the fake's table is empty): the next Mount makes it again.
    await again.mount('v', 'C');
    assert.deepEqual(fake2.calls, ['mount v']);
  });

  it('a failed mount records no reference, reports the error, and leaves the volume usable', async () => {
    const { driver, fake } = await setup();
    await driver.create('v', { type: 'fake', target: 'x', fail: '1', akSecret: 'hunter22' });
    await assert.rejects(driver.mount('v', 'A'), (e: unknown) =>
      err('backend', /volume v: fake client said: cannot reach x with key \[redacted\]/)(e),
    );
    const st = driver.get('v').Status!;
    assert.equal(st.refs, 0);
    assert.equal(st.mounted, false);
    assert.equal(st.health, 'error');
    assert.match(String(st.lastError), /cannot reach x/);
    assert.ok(!JSON.stringify(st).includes('hunter22'));
    assert.equal(fake.mounted.size, 0);
  });

  it('an unmount that fails keeps the reference, so state tells the truth and a retry works', async () => {
    const { driver, fake } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    fake.failNextUnmount = true;
    await assert.rejects(driver.unmount('v', 'A'), err('backend', /target is busy/));
    assert.equal(driver.get('v').Status?.refs, 1);
    await driver.unmount('v', 'A');
    assert.equal(driver.get('v').Status?.refs, 0);
    assert.equal(fake.mounted.size, 0);
  });

  it('serialise calls on one volume and not across volumes', async () => {
    const { driver, fake } = await setup();
    await driver.create('slow', { type: 'fake', target: 'x', delayMs: '200' });
    await driver.create('fast', opts);
    let slowDone = false;
    const slow = driver.mount('slow', 'A').finally(() => (slowDone = true));
    await driver.mount('fast', 'B');
    assert.equal(slowDone, false, 'a slow mount blocked another volume');
    // The same volume: the second Mount starts only once the first has mounted, so it shares that
    // mount; run side by side, both would have found it absent and mounted it twice.
    await Promise.all([slow, driver.mount('slow', 'C')]);
    assert.deepEqual(fake.calls.filter((c) => c === 'mount slow'), ['mount slow'], 'two Mounts of one volume ran side by side');
    assert.equal(driver.get('slow').Status?.refs, 2);
  });

  it('a Mount queued behind a slow one fails at its own deadline, saying what it waited for', async () => {
    const { driver, fake, settings } = await setup();
    await driver.create('slow', { type: 'fake', target: 'x', delayMs: '300' });
    const first = driver.mount('slow', 'A');
    // This call arrived almost a whole deadline ago (it waited in dockerd's queue, or for the plugin to start).
    const late = { arrivedAt: performance.now() - settings.mountTimeoutMs + 100, signal: new AbortController().signal };
    await assert.rejects(driver.mount('slow', 'B', late), err('deadline', /^volume slow: the call's 10 s were used up before earlier calls on volume slow finished$/));
    await first;
    assert.deepEqual([driver.get('slow').Status?.refs, fake.calls], [1, ['mount slow']]);
  });

  it('mount IDs that are names of Object.prototype members are counted like any other, across a restart', async () => {
    const { driver, fake, dir } = await setup();
    await driver.create('v', opts);
    const ids = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'];
    for (const id of ids) await driver.mount('v', id);
    assert.equal(driver.get('v').Status?.refs, ids.length);
    driver.close();
    heldByContainer(fake, [...fake.mounted][0]!);
    const { driver: again } = await fakeDriver(dir, fake);
    assert.equal(again.get('v').Status?.refs, ids.length);
    for (const id of ids.slice(1)) await again.unmount('v', id);
    assert.equal(fake.mounted.size, 1, 'unmounted while constructor still held it');
    await again.unmount('v', 'constructor');
    assert.equal(fake.mounted.size, 0);
    again.close();
  });
});

describe('a caller that hangs up', () => {
  const hangUpAfter = (ms: number) => {
    const c = new AbortController();
    setTimeout(() => c.abort(), ms);
    return { arrivedAt: performance.now(), signal: c.signal };
  };

  it('keeps no reference, and the mount it made is undone', async () => {
    const { driver, fake, lines } = await setup();
    await driver.create('v', { type: 'fake', target: 'x', delayMs: '200' });
    await assert.rejects(driver.mount('v', 'A', hangUpAfter(50)), (e: unknown) => err('gone', /caller hung up before the mount was ready/)(e));
    assert.deepEqual([driver.get('v').Status?.refs, fake.mounted.size, fake.calls], [0, 0, ['mount v', 'unmount v']]);
    assert.match(lines.join('\n'), /"why":"its caller hung up before it was ready".*"mount undone"/);
  });

  it('leaves a mount that another reference holds', async () => {
    const { driver, fake } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    const c = new AbortController();
    c.abort();
    await assert.rejects(driver.mount('v', 'B', { arrivedAt: performance.now(), signal: c.signal }), (e: unknown) => err('gone', /no reference was kept/)(e));
    assert.deepEqual([driver.get('v').Status?.refs, fake.mounted.size], [1, 1]);
  });
});

describe('a mount that does not answer', () => {
  it('is kept while containers hold it: no second client, no unmount, and the log says why', async () => {
    const { driver, fake, settings, lines } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    fake.stuck.add(path.join(settings.mountRoot, 'v')); // its client was stopped, or its server froze
    assert.equal(await driver.mount('v', 'B'), path.join(settings.mountRoot, 'v'));
    assert.deepEqual(fake.calls, ['mount v'], 'an unresponsive mount was replaced');
    assert.match(lines.join('\n'), /mount does not answer; kept as it is/);
    const st = driver.get('v').Status!;
    assert.deepEqual([st.refs, st.mounted, st.health], [2, true, 'error']);
    assert.match(String(st.lastError), /the mount does not answer \(no answer from .* within 2000 ms\); it is kept as it is/);
    // It is looked at again until it answers, and Status says so then.
    fake.stuck.clear();
    await until(() => driver.get('v').Status?.health === 'ok', 10_000);
    assert.deepEqual(fake.calls, ['mount v', 'adopt v'], 'a mount that answers again is adopted, not mounted again');
    assert.match(lines.join('\n'), /mount answers again/);
    driver.close();
  });

  it('is adopted at restore, not mounted again', async () => {
    const { driver, dir, settings } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    driver.close();
    const fake2 = new FakeBackend();
    fake2.mounted.add(path.join(settings.mountRoot, 'v'));
    fake2.stuck.add(path.join(settings.mountRoot, 'v'));
    heldByContainer(fake2, path.join(settings.mountRoot, 'v'));
    const { driver: again } = await fakeDriver(dir, fake2);
    const report = await again.restore();
    assert.deepEqual([report.adopted, report.remounted, fake2.calls], [['v'], [], ['adopt v']]);
    again.close();
  });
});

describe('a change that cannot be saved (a full state filesystem)', () => {
  /** A state journal whose writes fail with ENOSPC while `full` is set; everything else is real. */
  async function fullableSetup() {
    const t = await tempDir();
    cleanups.push(t.cleanup);
    const disk = { full: false };
    const openJournal = async (file: string): Promise<FileHandle> => {
      const fh = await open(file, constants.O_RDWR | constants.O_CREAT, 0o600);
      return new Proxy(fh, {
        get(target, prop, receiver) {
          if (prop === 'write' && disk.full) return async () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
          const v = Reflect.get(target, prop, receiver) as unknown;
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
    };
    return { ...(await fakeDriver(t.dir, new FakeBackend(), { openJournal })), disk, dir: t.dir };
  }
  const full = (e: unknown) => err('state', /the state filesystem is full \(ENOSPC writing .*\); nothing was changed/)(e);

  it('fails Create, Mount, Unmount and Remove clearly, changes nothing, and leaves nothing mounted that no reference holds', async () => {
    const { driver, fake, disk, dir, settings } = await fullableSetup();
    await driver.create('held', opts);
    await driver.mount('held', 'A');
    await driver.create('idle', opts);
    disk.full = true;
    await assert.rejects(driver.create('new', opts), full);
    await assert.rejects(driver.mount('idle', 'B'), full);
    assert.equal(fake.mounted.has(path.join(settings.mountRoot, 'idle')), false, 'a mount whose reference was not saved stayed');
    await assert.rejects(driver.mount('held', 'C'), full);
    assert.equal(fake.mounted.has(path.join(settings.mountRoot, 'held')), true, 'a held mount was undone');
    await assert.rejects(driver.unmount('held', 'A'), full);
    assert.equal(fake.mounted.has(path.join(settings.mountRoot, 'held')), true, 'unmounted though the change was refused');
    await assert.rejects(driver.remove('idle'), full);
    // A Mount that changes nothing: the container of ID A started again after a dockerd crash
    // (no Unmount came, and nothing holds the mount), so A's stale count is replaced by one.
    assert.equal(await driver.mount('held', 'A'), path.join(settings.mountRoot, 'held'));
    // Memory is what the disk says, and both are what was acknowledged.
    const expected = { held: 1, idle: 0 };
    assert.deepEqual(Object.fromEntries(driver.list().map((v) => [v.Name, driver.get(v.Name).Status?.refs])), expected);
    driver.close();
    disk.full = false;
    const { driver: again } = await fakeDriver(dir, new FakeBackend());
    assert.deepEqual(Object.fromEntries(again.list().map((v) => [v.Name, again.get(v.Name).Status?.refs])), expected, 'a refused change showed up after a restart');
    again.close();
  });

  it('works again once there is room, with no restart', async () => {
    const { driver, fake, disk } = await fullableSetup();
    await driver.create('v', opts);
    disk.full = true;
    await assert.rejects(driver.mount('v', 'A'), full);
    disk.full = false;
    await driver.mount('v', 'A');
    await driver.unmount('v', 'A');
    assert.deepEqual(fake.calls, ['mount v', 'unmount v', 'mount v', 'unmount v']);
    driver.close();
  });
});

describe('one device, one volume', () => {
  it('refuses a second volume on the same device at Create, naming it, also when both Creates run at once', async () => {
    const { driver } = await setup();
    const results = await Promise.allSettled([
      driver.create('a', { type: 'fake', target: '/dev/vdb' }),
      driver.create('b', { type: 'fake', target: '/dev/vdb' }),
    ]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!.reason;
    assert.ok(err('conflict', /volume [ab]: device \/dev\/vdb is already used by volume [ab]/)(refused), String(refused));
    await assert.rejects(driver.create('c', { type: 'fake', target: '/dev/vdb' }), err('conflict', /device \/dev\/vdb is already used/));
    await driver.create('d', { type: 'fake', target: '/dev/vdc' });
    assert.equal(driver.list().length, 2);
  });
});

describe('Remove', () => {
  it('refuses while a container holds the mount, saying why', async () => {
    const { driver, fake, settings } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    fake.users.set(path.join(settings.mountRoot, 'v'), ['PID 42: /data']);
    await assert.rejects(
      driver.remove('v'),
      err('in-use', /volume v is in use \(1 mount reference, mounted in 1 other mount namespace: PID 42: \/data\); stop the containers/),
    );
    fake.users.clear();
    await driver.unmount('v', 'A');
    await driver.remove('v');
    assert.throws(() => driver.get('v'), err('not-found', /not found/));
    await assert.rejects(driver.remove('v'), err('not-found', /not found/));
  });

  it('releases references no container holds (an Unmount lost while the plugin was down), then removes', async () => {
    const { driver, fake, lines } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    await driver.remove('v');
    assert.deepEqual([fake.calls, fake.mounted.size], [['mount v', 'unmount v'], 0]);
    assert.match(lines.join('\n'), /references that no container holds were released.*"staleIds":\["A"\]|"staleIds":\["A"\].*references that no container holds/);
    assert.throws(() => driver.get('v'), err('not-found', /not found/));
  });

  it('keeps references when it cannot tell whether a container holds the mount', async () => {
    const { driver, fake } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    fake.usersUnknown = true;
    await assert.rejects(driver.remove('v'), err('in-use', /1 mount reference, and whether a container holds it cannot be checked/));
    await driver.mount('v', 'A'); // counted, as for docker cp on a running container
    assert.equal(driver.get('v').Status?.refs, 2);
  });

  it('deletes at most an empty mountpoint directory, never files in it', async () => {
    const { driver, settings } = await setup();
    await driver.create('keep', opts);
    await driver.mount('keep', 'A');
    await driver.unmount('keep', 'A');
    const mp = path.join(settings.mountRoot, 'keep');
    await writeFile(path.join(mp, 'precious.txt'), 'data');
    await driver.remove('keep');
    assert.equal(await readFile(path.join(mp, 'precious.txt'), 'utf8'), 'data');

    await driver.create('empty', opts);
    await driver.mount('empty', 'A');
    await driver.unmount('empty', 'A');
    assert.ok((await stat(path.join(settings.mountRoot, 'empty'))).isDirectory());
    await driver.remove('empty');
    assert.deepEqual(await readdir(settings.mountRoot), ['keep']);
  });
});

describe('reusing a mount', () => {
  it('probes it first, and mounts again when it no longer serves', async () => {
    const { driver, fake, settings } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    fake.dead.add(path.join(settings.mountRoot, 'v')); // its client died, the mount stayed
    await driver.mount('v', 'B');
    assert.deepEqual(fake.calls, ['mount v', 'unmount v', 'mount v']);
    assert.equal(driver.get('v').Status?.refs, 2);
    await driver.mount('v', 'C'); // healthy now: shared, not mounted again
    assert.equal(fake.calls.length, 3);
  });
});

describe('restore after a start', () => {

  it('adopts healthy mounts, mounts missing or dead ones again, and leaves unheld volumes alone', async () => {
    const { driver, dir, settings } = await setup();
    for (const n of ['kernel', 'fuse', 'dead', 'idle']) await driver.create(n, opts);
    await driver.mount('kernel', 'A');
    await driver.mount('fuse', 'B');
    await driver.mount('dead', 'C');
    await driver.mount('idle', 'D');
    await driver.unmount('idle', 'D');
    driver.close();

    // The process restarts: the kernel mount survived, the FUSE mount vanished, one stayed but dead.
    const fake2 = new FakeBackend();
    fake2.mounted.add(path.join(settings.mountRoot, 'kernel'));
    fake2.mounted.add(path.join(settings.mountRoot, 'dead'));
    fake2.dead.add(path.join(settings.mountRoot, 'dead'));
    // Their containers still run (the plugin alone restarted), the dead mount's too.
    for (const n of ['kernel', 'dead']) heldByContainer(fake2, path.join(settings.mountRoot, n));
    const { driver: again } = await fakeDriver(dir, fake2);
    const report = await again.restore();
    assert.deepEqual([report.adopted, report.remounted.sort(), report.failed], [['kernel'], ['dead', 'fuse'], []]);
    assert.deepEqual(fake2.calls.sort(), ['adopt kernel', 'mount dead', 'mount fuse', 'unmount dead']);
    assert.deepEqual(['kernel', 'fuse', 'dead', 'idle'].map((n) => again.get(n).Status?.refs), [1, 1, 1, 0]);
    assert.equal(again.get('idle').Status?.mounted, false);
    // Docker's next Unmount of each ID unmounts exactly once.
    await again.unmount('fuse', 'B');
    assert.equal(fake2.mounted.has(path.join(settings.mountRoot, 'fuse')), false);
    again.close();
  });

  it('undoes a mount that no container holds (a crash came between the mount and its record)', async () => {
    const { driver, dir, settings } = await setup();
    await driver.create('orphan', opts);
    await driver.create('held', opts);
    await driver.mount('held', 'A');
    driver.close();
    const fake2 = new FakeBackend();
    fake2.mounted.add(path.join(settings.mountRoot, 'orphan'));
    fake2.mounted.add(path.join(settings.mountRoot, 'held'));
    heldByContainer(fake2, path.join(settings.mountRoot, 'held'));
    const { driver: again } = await fakeDriver(dir, fake2);
    const report = await again.restore();
    assert.deepEqual([report.adopted, report.released], [['held'], ['orphan']]);
    assert.deepEqual([...fake2.mounted], [path.join(settings.mountRoot, 'held')]);
    await again.remove('orphan'); // `docker volume rm` works again
    again.close();
  });

  it('keeps a volume whose backend is down listed with the error, and retries until it serves', async () => {
    const { driver, dir } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    driver.close();
    const fake2 = new FakeBackend();
    fake2.failNextMounts = 1;
    const { driver: again } = await fakeDriver(dir, fake2);
    const report = await again.restore();
    assert.deepEqual(report.failed, ['v']);
    assert.match(String(again.get('v').Status?.lastError), /fake server bucket-a is down/);
    assert.equal(again.list().length, 1);
    await until(() => again.get('v').Status?.mounted === true); // the first retry comes after 2 s
    assert.equal(again.get('v').Status?.health, 'ok');
    again.close();
  });

  it('retry schedule: one timer per volume, with backoff that starts again after a success', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const ran: string[] = [];
    const schedule = new RetrySchedule((name) => ran.push(name));
    for (let i = 0; i < 5; i++) schedule.failed('v'); // lost five times while a retry waits
    schedule.failed('w');
    assert.equal(schedule.pending, 2);
    t.mock.timers.tick(2000);
    assert.deepEqual(ran.sort(), ['v', 'w'], 'five losses made one retry');
    schedule.failed('v'); // the retry failed too: the next one waits twice as long
    t.mock.timers.tick(2000);
    assert.deepEqual(ran.filter((n) => n === 'v').length, 1);
    t.mock.timers.tick(2000);
    assert.deepEqual(ran.filter((n) => n === 'v').length, 2);
    schedule.succeeded('v');
    schedule.failed('v');
    t.mock.timers.tick(2000);
    assert.deepEqual(ran.filter((n) => n === 'v').length, 3, 'after a success the backoff starts at 2 s again');
    schedule.close();
  });

  it('keeps one retry per volume, however often its mount is lost while its backend is down', async () => {
    const { driver, fake, settings } = await setup();
    await driver.create('v', opts);
    await driver.create('w', opts);
    await driver.mount('v', 'A');
    await driver.mount('w', 'B');
    fake.failNextMounts = 1000; // the backend is down from now on
    for (let i = 0; i < 5; i++) {
      fake.loseMount('v', path.join(settings.mountRoot, 'v'));
      fake.loseMount('w', path.join(settings.mountRoot, 'w'));
    }
    await until(() => fake.calls.filter((c) => c === 'mount v').length >= 2 && fake.calls.filter((c) => c === 'mount w').length >= 2);
    await new Promise((r) => setTimeout(r, 100)); // every repair that was started has failed by now
    assert.equal(driver.pendingRetries, 2, 'one pending retry per volume');
    driver.close();
    assert.equal(driver.pendingRetries, 0);
  });

  it('repairs a mount whose client died while containers hold it', async () => {
    const { driver, fake, settings } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    fake.loseMount('v', path.join(settings.mountRoot, 'v'));
    await until(() => fake.calls.length === 3);
    assert.deepEqual(fake.calls, ['mount v', 'unmount v', 'mount v']);
    assert.equal(driver.get('v').Status?.mounted, true);
    driver.close();
  });
});

describe('references from before a start that no container holds (their containers died with the node)', () => {
  /** A driver with volume v mounted for ID A, then "restarted" over FAKE2's host. */
  async function restartedWithA(prepare: (fake2: FakeBackend, target: string) => void) {
    const { driver, dir, settings } = await setup();
    await driver.create('v', opts);
    await driver.mount('v', 'A');
    driver.close();
    const target = path.join(settings.mountRoot, 'v');
    const fake2 = new FakeBackend();
    prepare(fake2, target);
    const restarted = await fakeDriver(dir, fake2);
    cleanups.push(async () => restarted.driver.close());
    return { ...restarted, target };
  }

  for (const how of ['serving', 'dead'] as const) {
    it(`are released at restore when the mount is there (${how}) and no namespace holds it, and the mount is undone`, async () => {
      const { driver, fake, target, lines } = await restartedWithA((f, t) => {
        f.mounted.add(t);
        if (how === 'dead') f.dead.add(t);
      });
      const report = await driver.restore();
      assert.deepEqual([report.released, report.adopted, report.remounted], [['v'], [], []]);
      assert.deepEqual(fake.calls, ['unmount v'], 'undone, never mounted again');
      assert.equal(fake.mounted.has(target), false);
      assert.deepEqual([driver.get('v').Status?.refs, driver.get('v').Status?.mounted], [0, false]);
      assert.match(lines.join(''), /"staleIds":\["A"\].*references from before the start that no container holds were released/);
      // Docker's Unmount for A, should it come after all, changes nothing; the volume is removable.
      await driver.unmount('v', 'A');
      await driver.remove('v');
    });
  }

  it('are released when recorded in an earlier boot of the host, though nothing is mounted', async () => {
    const { driver, fake, settings } = await restartedWithA((f) => (f.bootId = 'boot-2'));
    assert.equal((await loadState(settings.stateDir)).volumes.v?.boot, 'boot-1', 'the record says in which boot A was taken');
    const report = await driver.restore();
    assert.deepEqual([report.released, report.remounted], [['v'], []]);
    assert.deepEqual(fake.calls, []);
    assert.equal(driver.get('v').Status?.refs, 0);
  });

  it('are kept, mount and all, while a container holds the mount, even when recorded in another boot', async () => {
    const { driver, fake } = await restartedWithA((f, t) => {
      f.bootId = 'boot-2';
      f.mounted.add(t);
      heldByContainer(f, t);
    });
    const report = await driver.restore();
    assert.deepEqual([report.released, report.adopted], [[], ['v']]);
    assert.deepEqual([driver.get('v').Status?.refs, fake.calls], [1, ['adopt v']]);
  });

  it('are kept when a container holds the mount, when that cannot be known, and when nothing is mounted in the same boot', async () => {
    const held = await restartedWithA((f, t) => {
      f.mounted.add(t);
      heldByContainer(f, t);
    });
    const unknown = await restartedWithA((f, t) => {
      f.mounted.add(t);
      f.usersUnknown = true;
    });
    // A disable and enable: the running containers keep mounts of their own, which we cannot see from here.
    const absent = await restartedWithA(() => undefined);
    const reports = await Promise.all([held, unknown, absent].map((r) => r.driver.restore()));
    assert.deepEqual(reports.map((r) => [r.adopted, r.remounted, r.released]), [[['v'], [], []], [['v'], [], []], [[], ['v'], []]]);
    for (const r of [held, unknown, absent]) assert.equal(r.driver.get('v').Status?.refs, 1);
  });

  it('a Mount that comes before the restore settles them first, and its own reference stays', async () => {
    const { driver, fake, target } = await restartedWithA((f, t) => f.mounted.add(t));
    await driver.mount('v', 'B');
    assert.deepEqual(fake.calls, ['unmount v', 'mount v']);
    heldByContainer(fake, target); // B's container starts
    const report = await driver.restore();
    assert.deepEqual([report.released, report.adopted], [[], ['v']]);
    assert.equal(driver.get('v').Status?.refs, 1);
    await driver.unmount('v', 'B');
    assert.equal(fake.mounted.has(target), false, 'B was the only reference');
  });

  it('a start with many held volumes reads the host\'s namespaces once for all of them, and keeps or releases each by that reading', async () => {
    const { driver, dir, settings } = await setup();
    const names = Array.from({ length: 30 }, (_, i) => `v${i}`);
    for (const n of names) {
      await driver.create(n, opts);
      await driver.mount(n, 'A');
    }
    driver.close();
    const fake2 = new FakeBackend();
    for (const [i, n] of names.entries()) {
      const t = path.join(settings.mountRoot, n);
      fake2.mounted.add(t);
      if (i % 3 !== 0) heldByContainer(fake2, t); // every third one: its container died with the node
    }
    const restarted = await fakeDriver(dir, fake2);
    cleanups.push(async () => restarted.driver.close());
    const report = await restarted.driver.restore();
    assert.equal(fake2.namespaceReadings, 1, 'one reading of the namespaces for 30 volumes');
    assert.deepEqual(report.released.sort(), names.filter((_, i) => i % 3 === 0).sort());
    assert.equal(report.adopted.length, 20);
    for (const [i, n] of names.entries()) assert.equal(restarted.driver.get(n).Status?.refs, i % 3 === 0 ? 0 : 1, n);
  });

  it('only references loaded at the start are ever settled: one taken since, whose container is not there yet, stays', async () => {
    // B is taken after the start; no container holds the mount yet (its container is being created).
    const { driver, fake, target } = await restartedWithA((f, t) => heldByContainer(f, t));
    const report = await driver.restore();
    assert.deepEqual(report.remounted, ['v']);
    await driver.mount('v', 'B');
    fake.users.delete(target);
    await driver.restore(); // a second pass (as a retry would) finds nothing to settle
    assert.equal(driver.get('v').Status?.refs, 2);
    assert.equal(fake.mounted.has(target), true);
  });
});
