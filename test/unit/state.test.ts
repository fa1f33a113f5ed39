import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { AtomicJsonFile } from '../../src/driver/atomic-json-file.js';
import { JOURNAL_FILE, loadState, openState, STATE_FILE, StateWriteError, type VolumeRecord } from '../../src/driver/state.js';
import { KeyedMutex } from '../../src/keyed-mutex.js';
import { SECRETS_DIR } from '../../src/driver/secret-files.js';
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
    mounts: new Map(Object.entries(mounts)),
    mounted: false,
  });

  it('is written 0600 in a 0700 directory, atomically, leaving no temp files', async () => {
    const d = path.join(await dir(), 'state');
    const db = await openState(d);
    await db.put('v', record('v', { a: 1 }));
    await db.compact();
    for (const f of [STATE_FILE, JOURNAL_FILE]) assert.equal((await stat(path.join(d, f))).mode & 0o777, 0o600);
    assert.equal((await stat(d)).mode & 0o777, 0o700);
    assert.deepEqual((await readdir(d)).sort(), [JOURNAL_FILE, STATE_FILE]);
    const again = await openState(d);
    assert.deepEqual(again.volumes.get('v')?.mounts, new Map([['a', 1]]));
  });

  it('costs one appended line per change, whatever the number of volumes', async () => {
    const d = await dir();
    const db = await openState(d);
    await Promise.all(Array.from({ length: 500 }, (_, i) => db.put(`v${i}`, record(`v${i}`))));
    const before = (await stat(path.join(d, JOURNAL_FILE))).size;
    await db.put('v7', record('v7', { b: 1 }));
    const line = (await stat(path.join(d, JOURNAL_FILE))).size - before;
    assert.ok(line < 300, `one change appended ${line} bytes`);
    assert.deepEqual((await loadState(d)).volumes.v7?.mounts, { b: 1 });
  });

  it('makes a change visible only once it is on disk', async () => {
    const d = await dir();
    const db = await openState(d);
    const saving = db.put('v', record('v'));
    assert.equal(db.volumes.has('v'), false, 'visible before it was saved');
    await saving;
    assert.equal(db.volumes.has('v'), true);
    assert.ok('v' in (await loadState(d)).volumes);
  });

  it('keeps mount IDs that are names of Object.prototype members as plain keys, across a reload', async () => {
    const d = await dir();
    const db = await openState(d);
    const odd = { constructor: 1, __proto__: 2, toString: 3, hasOwnProperty: 1 };
    const mounts = new Map(Object.entries(odd).concat([['__proto__', 2]]));
    await db.put('v', { ...record('v'), mounts });
    for (const again of [await openState(d), await openState(d)]) {
      // The second open reads the snapshot the first one wrote: both forms are covered.
      assert.deepEqual([...again.volumes.get('v')!.mounts].sort(), [...mounts].sort());
    }
  });

  it('replays the journal over the snapshot, drops a last line a crash cut short, and starts afresh', async () => {
    const d = await dir();
    const db = await openState(d);
    await db.put('a', record('a'));
    await db.put('b', record('b'));
    await db.put('a', null);
    // A crash in the middle of the next append:
    await writeFile(path.join(d, JOURNAL_FILE), '{"n":"c","r":{"name":"c","crea', { flag: 'a' });
    assert.deepEqual(Object.keys((await loadState(d)).volumes), ['b']);
    const again = await openState(d);
    assert.deepEqual([...again.volumes.keys()], ['b']);
    assert.equal((await stat(path.join(d, JOURNAL_FILE))).size, 0, 'a start with room for a snapshot leaves an empty journal');
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

  it('recovers the acknowledged entry that an old version appended after half a line, and says so', async () => {
    const d = await dir();
    const b = JSON.stringify({ n: 'b', r: { ...record('b'), mounts: { X: 1 } } });
    // Versions before 0.2: a write cut short by ENOSPC, then the next entry appended after it.
    await writeFile(path.join(d, JOURNAL_FILE), `{"n":"a","r":{"name":"a","createdAt":"2026-${b}\n{"n":"c","r":null}\n`);
    const warnings: string[] = [];
    const db = await openState(d, { warn: (f, m) => warnings.push(`${m} ${JSON.stringify(f)}`) });
    assert.deepEqual([...db.volumes.keys()], ['b']);
    assert.deepEqual(db.volumes.get('b')?.mounts, new Map([['X', 1]]));
    assert.match(warnings.join('\n'), /damaged state journal line .*recovered.*"line":1/);
  });

  it('skips a damaged line that holds no whole entry, and loads the rest', async () => {
    const d = await dir();
    await writeFile(path.join(d, JOURNAL_FILE), `{"n":"a","r":nul\n${JSON.stringify({ n: 'b', r: { ...record('b'), mounts: {} } })}\n`);
    const warnings: string[] = [];
    const db = await openState(d, { warn: (_f, m) => warnings.push(m) });
    assert.deepEqual([...db.volumes.keys()], ['b']);
    assert.match(warnings.join('\n'), /damaged state journal line skipped/);
  });

  it('resolves each of many concurrent saves only once its change is on disk, and compacts on demand', async () => {
    const d = await dir();
    const db = await openState(d);
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        await db.put(`v${i}`, record(`v${i}`));
        assert.ok(`v${i}` in (await loadState(d)).volumes, `save of v${i} resolved before it was on disk`);
      }),
    );
    await db.compact();
    assert.equal((await stat(path.join(d, JOURNAL_FILE))).size, 0);
    assert.equal(Object.keys((await loadState(d)).volumes).length, 200);
  });

  /**
   * The journal as a full filesystem shows it: `write` puts down part of what it was given and
   * then fails with ENOSPC (as a short write followed by the error does), for as long as `full`.
   */
  function fillableJournal() {
    const disk = { full: false, truncateFails: false, syncFails: false, partial: 0 };
    const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const openJournal = async (file: string): Promise<FileHandle> => {
      const fh = await open(file, constants.O_RDWR | constants.O_CREAT, 0o600);
      return new Proxy(fh, {
        get(target, prop, receiver) {
          if (prop === 'write') {
            return async (buf: Buffer, off: number, len: number, pos: number) => {
              if (!disk.full) return target.write(buf, off, len, pos);
              const some = Math.min(len, Math.max(1, Math.floor(len / 2)));
              await target.write(buf, off, some, pos);
              disk.partial += some;
              throw enospc();
            };
          }
          if (prop === 'truncate') {
            return async (n: number) => {
              if (disk.truncateFails) throw Object.assign(new Error('EIO'), { code: 'EIO' });
              return target.truncate(n);
            };
          }
          if (prop === 'datasync') {
            return async () => {
              if (disk.syncFails) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
              return target.datasync();
            };
          }
          const v = Reflect.get(target, prop, receiver) as unknown;
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
    };
    return { disk, openJournal };
  }

  it('a write cut short by a full disk leaves no trace, in memory or on disk, and the next one lands cleanly', async () => {
    const d = await dir();
    const { disk, openJournal } = fillableJournal();
    const db = await openState(d, { openJournal });
    await db.put('a', record('a'));
    const before = await readFile(path.join(d, JOURNAL_FILE), 'utf8');
    disk.full = true;
    const refused = await Promise.allSettled([db.put('b', record('b')), db.put('a', record('a', { X: 1 })), db.put('a', null)]);
    assert.ok(disk.partial > 0, 'the fault wrote half a line');
    for (const r of refused) {
      assert.equal(r.status, 'rejected');
      assert.ok(r.status === 'rejected' && r.reason instanceof StateWriteError);
      assert.match(String((r as PromiseRejectedResult).reason.message), /the state filesystem is full \(ENOSPC writing .*state\.journal\); nothing was changed/);
    }
    assert.deepEqual([...db.volumes.keys()], ['a'], 'memory kept a refused change');
    assert.deepEqual(db.volumes.get('a')?.mounts, new Map());
    assert.equal(await readFile(path.join(d, JOURNAL_FILE), 'utf8'), before, 'the half line was cut off');
    disk.full = false;
    await db.put('c', record('c'));
    const loaded = await loadState(d);
    assert.deepEqual(Object.keys(loaded.volumes).sort(), ['a', 'c'], 'a refused change showed up later');
    assert.deepEqual(loaded.volumes.a?.mounts, {});
  });

  it('when the half line cannot be cut at once, it is cut before the next write', async () => {
    const d = await dir();
    const { disk, openJournal } = fillableJournal();
    const db = await openState(d, { openJournal });
    disk.full = true;
    disk.truncateFails = true;
    // Longer than the line that comes after it, so that no overwrite can hide what was left.
    const long = { ...record('refused'), options: { type: 'oss', bucket: 'b'.repeat(2000) } };
    await assert.rejects(db.put('refused', long), StateWriteError);
    assert.ok((await stat(path.join(d, JOURNAL_FILE))).size > 500, 'the fault left half a line');
    await assert.rejects(db.put('refused2', long), StateWriteError, 'a write after an uncut half line');
    disk.full = false;
    disk.truncateFails = false;
    await db.put('ok', record('ok'));
    const text = await readFile(path.join(d, JOURNAL_FILE), 'utf8');
    assert.equal(text.indexOf('\n'), text.length - 1, `only the acknowledged line is in the journal: ${text.slice(0, 300)}`);
    assert.deepEqual(Object.keys((await loadState(d)).volumes), ['ok']);
    assert.deepEqual([...(await openState(d)).volumes.keys()], ['ok']);
  });

  it('a line written whole but not synced (fdatasync failed) is taken back', async () => {
    const d = await dir();
    const { disk, openJournal } = fillableJournal();
    const db = await openState(d, { openJournal });
    disk.syncFails = true;
    await assert.rejects(db.put('v', record('v')), /I\/O error \(EIO writing/);
    assert.equal((await stat(path.join(d, JOURNAL_FILE))).size, 0);
    assert.equal(db.volumes.has('v'), false);
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

  describe('inline secrets, a file per volume', () => {
    const KEY = 'LTAIkeyid0123456789';
    const SECRET = 'inline-secret-0123456789';
    const keyed = (name: string, mounts: Record<string, number> = {}): VolumeRecord => ({
      ...record(name, mounts),
      options: { type: 'oss', bucket: 'b', akId: KEY, akSecret: SECRET },
    });
    const secretsFile = (d: string, name: string) => path.join(d, SECRETS_DIR, `${name}.json`);
    /** Every file under the state directory that holds the secret, relative to it. */
    async function holders(d: string): Promise<string[]> {
      const out: string[] = [];
      for (const e of await readdir(d, { recursive: true, withFileTypes: true })) {
        if (!e.isFile()) continue;
        const file = path.join(e.parentPath, e.name);
        if ((await readFile(file, 'utf8')).includes(SECRET)) out.push(path.relative(d, file));
      }
      return out.sort();
    }

    it('keeps them only in the volume\'s own 0600 file, never in the journal or snapshot, and puts them back on load', async () => {
      const d = await dir();
      const db = await openState(d);
      await db.put('k', keyed('k'));
      await db.put('k', keyed('k', { m: 1 })); // a later change of the record: no second write of the file
      assert.deepEqual(await holders(d), [`${SECRETS_DIR}/k.json`]);
      assert.equal((await stat(secretsFile(d, 'k'))).mode & 0o777, 0o600);
      assert.equal((await stat(path.join(d, SECRETS_DIR))).mode & 0o777, 0o700);
      await db.compact();
      assert.deepEqual(await holders(d), [`${SECRETS_DIR}/k.json`], 'after a snapshot');
      const again = await openState(d);
      assert.equal(again.volumes.get('k')?.options.akSecret, SECRET);
      assert.equal(again.volumes.get('k')?.options.akId, KEY);
      assert.deepEqual(again.volumes.get('k')?.mounts, new Map([['m', 1]]));
    });

    it('a Remove deletes the file before it resolves, appends one line, and rewrites nothing', async () => {
      const d = await dir();
      const db = await openState(d);
      await Promise.all(Array.from({ length: 300 }, (_, i) => db.put(`v${i}`, keyed(`v${i}`))));
      await db.compact();
      const snapshot = await readFile(path.join(d, STATE_FILE), 'utf8');
      const before = (await stat(path.join(d, JOURNAL_FILE))).size;
      await db.put('v7', null);
      await assert.rejects(stat(secretsFile(d, 'v7')), { code: 'ENOENT' });
      assert.ok((await stat(path.join(d, JOURNAL_FILE))).size - before < 100, 'one short line');
      assert.equal(await readFile(path.join(d, STATE_FILE), 'utf8'), snapshot, 'the snapshot was rewritten');
      assert.equal((await holders(d)).length, 299);
    });

    it('a Create whose journal line fails leaves no secrets file; one whose secrets file fails records nothing', async () => {
      const d = await dir();
      const { disk, openJournal } = fillableJournal();
      const db = await openState(d, { openJournal });
      disk.full = true;
      await assert.rejects(db.put('k', keyed('k')), StateWriteError);
      disk.full = false;
      assert.deepEqual(await holders(d), []);
      // A secrets directory that cannot be written (a file stands in its place).
      await rm(path.join(d, SECRETS_DIR), { recursive: true, force: true });
      await writeFile(path.join(d, SECRETS_DIR), '');
      await assert.rejects(db.put('k', keyed('k')), (e: unknown) => e instanceof StateWriteError && /secrets\/k\.json/.test(e.message) && !e.message.includes(SECRET));
      assert.equal(db.volumes.has('k'), false);
      assert.deepEqual(Object.keys((await loadState(d)).volumes), []);
    });

    it('a start moves keys that an older version kept inline to files, and deletes files no volume holds', async () => {
      const d = await dir();
      const old = { name: 'old', createdAt: '2026-01-01T00:00:00.000Z', options: { type: 'oss', akId: KEY, akSecret: SECRET }, mounts: {}, mounted: false };
      await writeFile(path.join(d, STATE_FILE), JSON.stringify({ version: 1, volumes: { old } }), { mode: 0o600 });
      await mkdir(path.join(d, SECRETS_DIR), { mode: 0o700 });
      await writeFile(secretsFile(d, 'gone'), JSON.stringify({ akSecret: SECRET }), { mode: 0o600 }); // a crash after the file, before the line
      await writeFile(path.join(d, SECRETS_DIR, 'x.json.123.1.tmp'), SECRET, { mode: 0o600 }); // a crash during a write
      const db = await openState(d);
      assert.equal(db.volumes.get('old')?.options.akSecret, SECRET);
      assert.deepEqual(await holders(d), [`${SECRETS_DIR}/old.json`]);
      await db.put('old', null);
      assert.deepEqual(await holders(d), []);
    });
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
