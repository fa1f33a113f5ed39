import assert from 'node:assert/strict';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { AtomicJsonFile } from '../../src/driver/atomic-json-file.js';
import { JOURNAL_FILE, loadState, openState, STATE_FILE, type VolumeRecord } from '../../src/driver/state.js';
import { KeyedMutex } from '../../src/driver/keyed-mutex.js';
import { tempDir } from '../helpers/env.js';
import { fakeDriver } from '../helpers/fake-driver.js';

const dirs: Array<() => Promise<void>> = [];
after(async () => Promise.all(dirs.map((c) => c())));
async function dir() {
  const t = await tempDir();
  dirs.push(t.cleanup);
  return t.dir;
}

describe('state file', () => {
  const record = (name: string, mounts: Record<string, number> = {}): VolumeRecord => ({
    name,
    createdAt: new Date().toISOString(),
    options: { type: 'oss' },
    mounts,
    mounted: false,
  });

  it('is written 0600 in a 0700 directory, atomically, leaving no temp files', async () => {
    const d = path.join(await dir(), 'state');
    const db = await openState(d);
    db.data.volumes.v = record('v', { a: 1 });
    await db.save('v');
    for (const f of [STATE_FILE, JOURNAL_FILE]) assert.equal((await stat(path.join(d, f))).mode & 0o777, 0o600);
    assert.equal((await stat(d)).mode & 0o777, 0o700);
    assert.deepEqual((await readdir(d)).sort(), [JOURNAL_FILE, STATE_FILE]);
    const again = await openState(d);
    assert.deepEqual(again.data.volumes.v?.mounts, { a: 1 });
  });

  it('costs one appended line per change, whatever the number of volumes', async () => {
    const d = await dir();
    const db = await openState(d);
    for (let i = 0; i < 500; i++) db.data.volumes[`v${i}`] = record(`v${i}`);
    await db.save(...Object.keys(db.data.volumes));
    const before = (await stat(path.join(d, JOURNAL_FILE))).size;
    db.data.volumes.v7!.mounts = { b: 1 };
    await db.save('v7');
    const line = (await stat(path.join(d, JOURNAL_FILE))).size - before;
    assert.ok(line < 300, `one change appended ${line} bytes`);
    assert.deepEqual((await loadState(d)).volumes.v7?.mounts, { b: 1 });
  });

  it('replays the journal over the snapshot, drops a last line a crash cut short, and starts afresh', async () => {
    const d = await dir();
    const db = await openState(d);
    db.data.volumes.a = record('a');
    db.data.volumes.b = record('b');
    await db.save('a', 'b');
    delete db.data.volumes.a;
    await db.save('a');
    // A crash in the middle of the next append:
    await writeFile(path.join(d, JOURNAL_FILE), '{"n":"c","r":{"name":"c","crea', { flag: 'a' });
    assert.deepEqual(Object.keys((await loadState(d)).volumes), ['b']);
    const again = await openState(d);
    assert.deepEqual(Object.keys(again.data.volumes), ['b']);
    assert.equal((await stat(path.join(d, JOURNAL_FILE))).size, 0, 'a start leaves a snapshot and an empty journal');
    assert.deepEqual(Object.keys(JSON.parse(await readFile(path.join(d, STATE_FILE), 'utf8')).volumes), ['b']);
  });

  it('a driver stopping cleanly leaves everything in the snapshot and an empty journal', async () => {
    const d = await dir();
    const { driver } = await fakeDriver(d);
    await driver.create('kept', { type: 'fake', target: 't' });
    await driver.mount('kept', 'A');
    await driver.flush();
    assert.equal((await stat(path.join(d, 'state', JOURNAL_FILE))).size, 0);
    const snapshot = JSON.parse(await readFile(path.join(d, 'state', STATE_FILE), 'utf8'));
    assert.deepEqual(snapshot.volumes.kept.mounts, { A: 1 });
    driver.close();
  });

  it('refuses a journal whose earlier line is corrupt, and leaves it untouched', async () => {
    const d = await dir();
    await writeFile(path.join(d, JOURNAL_FILE), '{"n":"a","r":nul\n{"n":"b","r":null}\n');
    await assert.rejects(openState(d), /state journal .* line 1 is not valid JSON.*left untouched/);
    assert.equal(await readFile(path.join(d, JOURNAL_FILE), 'utf8'), '{"n":"a","r":nul\n{"n":"b","r":null}\n');
  });

  it('resolves each of many concurrent saves only once its change is on disk, and compacts on demand', async () => {
    const d = await dir();
    const db = await openState(d);
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        db.data.volumes[`v${i}`] = record(`v${i}`);
        await db.save(`v${i}`);
        assert.ok(`v${i}` in (await loadState(d)).volumes, `save of v${i} resolved before it was on disk`);
      }),
    );
    await db.compact();
    assert.equal((await stat(path.join(d, JOURNAL_FILE))).size, 0);
    assert.equal(Object.keys((await loadState(d)).volumes).length, 200);
  });

  it('coalesces concurrent writes and resolves each only once its data is on disk', async () => {
    const file = path.join(await dir(), 's.json');
    const adapter = new AtomicJsonFile<{ n: number }>(file);
    const data = { n: 0 };
    const writes: Promise<void>[] = [];
    for (let i = 1; i <= 50; i++) {
      data.n = i;
      writes.push(
        adapter.write(data).then(async () => {
          const onDisk = JSON.parse(await readFile(file, 'utf8')) as { n: number };
          assert.ok(onDisk.n >= i, `write ${i} resolved before its data was on disk (${onDisk.n})`);
        }),
      );
    }
    await Promise.all(writes);
    assert.equal(JSON.parse(await readFile(file, 'utf8')).n, 50);
  });

  it('refuses a corrupt file and leaves it untouched', async () => {
    const d = await dir();
    await writeFile(path.join(d, STATE_FILE), '{"version":1,"volu');
    await assert.rejects(openState(d), /not valid JSON.*left untouched/);
    assert.equal(await readFile(path.join(d, STATE_FILE), 'utf8'), '{"version":1,"volu');
  });
});

describe('per-volume serialisation', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('runs calls on one key one after another, even when one fails', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    const a = m.run('v', async () => {
      order.push('a start');
      await sleep(30);
      order.push('a end');
      throw new Error('a failed');
    });
    const b = m.run('v', async () => {
      order.push('b start');
      order.push('b end');
    });
    await assert.rejects(a, /a failed/);
    await b;
    assert.deepEqual(order, ['a start', 'a end', 'b start', 'b end']);
    await new Promise((r) => setImmediate(r));
    assert.equal(m.size, 0, 'idle keys are forgotten');
  });

  it('runs calls on different keys side by side', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    await Promise.all(
      ['a', 'b', 'c', 'd'].map((k) =>
        m.run(k, async () => {
          order.push(`${k} start`);
          await sleep(50);
          order.push(`${k} end`);
        }),
      ),
    );
    assert.deepEqual(order.slice(0, 4), ['a start', 'b start', 'c start', 'd start'], 'different keys were serialised');
  });
});
