// NAS volumes against a real NFS server, in a guest kernel that has NFS (this machine's kernel
// has none): scripts/nfs-guest.sh boots it, serves /srv/nfs on the guest's loopback, and runs
// this file there; test/integration/nas-guest.test.ts does that from the normal suite. The
// plugin is the real program as a host process, driven over its socket.
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readMounts } from '../../src/host/mountinfo.js';
import { holdMount } from '../helpers/holder.js';
import { nfsd, silentServer } from '../helpers/nfs-server.js';
import { finishPlugin, startPluginInTempDir, type PluginProcess } from '../helpers/plugin-process.js';

const EXPORT = '/srv/nfs';
const ID = (n: number) => String(n % 10).repeat(64);
const inGuest = process.env.OSSNAS_NFS_GUEST === '1';


describe('NAS volumes on a real NFS server', { skip: inGuest ? false : 'runs inside the NFS guest (scripts/nfs-guest.sh)', timeout: 600_000 }, () => {
  let plugin: PluginProcess;
  const call = (m: string, a: unknown) => plugin.client.call(`VolumeDriver.${m}`, a);
  const mountAt = async (p: string) => (await readMounts()).find((m) => m.mountPoint === p);
  const create = async (name: string, opts: Record<string, string>) => {
    const r = await call('Create', { Name: name, Opts: { type: 'nas', server: '127.0.0.1', ...opts } });
    assert.deepEqual(r.json, { Err: '' }, `create ${name}`);
  };
  const mount = async (name: string, id: number) => {
    const r = await call('Mount', { Name: name, ID: ID(id) });
    assert.equal(r.status, 200, `mount ${name}: ${r.text}`);
    return String(r.json.Mountpoint);
  };
  const status = async (name: string) => ((await call('Get', { Name: name })).json.Volume as { Status: Record<string, unknown> }).Status;
  const waitUntil = async (check: () => Promise<boolean>, timeoutMs: number) => {
    const t0 = Date.now();
    while (!(await check())) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const unmount = async (name: string, id: number) => {
    const r = await call('Unmount', { Name: name, ID: ID(id) });
    assert.deepEqual(r.json, { Err: '' }, `unmount ${name}`);
  };

  before(async () => {
    plugin = await startPluginInTempDir({ OSSNAS_MOUNT_TIMEOUT: '8' });
  });
  after(async () => {
    await nfsd('start').catch(() => undefined);
    await finishPlugin(plugin);
  });

  for (const [vers, fsType] of [['3', 'nfs'], ['4', 'nfs4'], ['4.1', 'nfs4']] as const) {
    it(`mounts NFS v${vers}: reads, writes through to the server, shares the mount between IDs, unmounts`, async () => {
      const name = `v${vers.replace('.', '')}`;
      await create(name, { path: EXPORT, vers });
      const mp = await mount(name, 1);
      const m = await mountAt(mp);
      assert.equal(m?.fsType, fsType);
      assert.equal(m?.source, `127.0.0.1:${EXPORT}`);
      assert.match(m!.superOptions, new RegExp(`vers=${vers === '4' ? '4\\.0' : vers.replace('.', '\\.')}`));
      assert.equal(await readFile(path.join(mp, 'hello.txt'), 'utf8'), 'hello from nfs\n');
      await writeFile(path.join(mp, `from-${name}.txt`), name);
      assert.equal(await readFile(path.join(EXPORT, `from-${name}.txt`), 'utf8'), name, 'the server has it');

      assert.equal(await mount(name, 2), mp, 'a second ID shares the mount');
      assert.equal((await readMounts()).filter((x) => x.mountPoint === mp).length, 1);
      await unmount(name, 1);
      assert.ok(await mountAt(mp), 'still mounted for ID 2');
      await unmount(name, 2);
      assert.equal(await mountAt(mp), undefined);
      assert.deepEqual((await call('Remove', { Name: name })).json, { Err: '' });
      assert.equal(await readFile(path.join(EXPORT, `from-${name}.txt`), 'utf8'), name, 'Remove never deletes data');
    });
  }

  it('creates a sub-path that does not exist yet (v3 and v4.1), with the mode asked for', async () => {
    for (const [name, vers] of [['sub3', '3'], ['sub41', '4.1']] as const) {
      const sub = `${EXPORT}/teams/${name}/data`;
      await create(name, { path: sub, vers, mode: '0770' });
      const mp = await mount(name, 3);
      assert.equal((await mountAt(mp))?.source, `127.0.0.1:${sub}`);
      assert.equal((await stat(sub)).isDirectory(), true, 'created on the server');
      assert.equal((await stat(mp)).mode & 0o7777, 0o770);
      await writeFile(path.join(mp, 'x.txt'), 'x');
      assert.equal(await readFile(path.join(sub, 'x.txt'), 'utf8'), 'x');
      await unmount(name, 3);
    }
    const leftovers = (await readMounts()).filter((m) => m.mountPoint.includes('.ossnas-setup'));
    assert.deepEqual(leftovers, [], 'the setup mount is gone');
  });

  it('A server-side symlink under a NAS path: creating the sub-path refuses it, and nothing is made where it points', async (t) => {
    // Symlinks to directories the client host has and the server does not serve, so that the
    // server answers "no such file" for the path and its parent, and the nearest ancestor it
    // mounts is the export itself: the mkdir in it then meets the symlink, on the client.
    // - v4.1, absolute: the server looks it up in its own pseudo-filesystem (which has no
    //   /ossnas-escape-target); the client would follow it to its own /ossnas-escape-target.
    // - v3, relative: for the server /srv/nfs/../../../host-dir is /host-dir, absent; for the
    //   client, from the root of the setup mount (<mount root>/.ossnas-setup/<volume>), it is
    //   <plugin dir>/host-dir.
    const links = [
      { name: 'sym-abs', vers: '4.1', link: 'esc-abs', target: '/ossnas-escape-target', client: '/ossnas-escape-target', server: '/ossnas-escape-target' },
      { name: 'sym-rel', vers: '3', link: 'esc-rel', target: '../../../host-dir', client: path.join(plugin.dir, 'host-dir'), server: '/host-dir' },
    ] as const;
    assert.equal(path.join(plugin.mountRoot, '.ossnas-setup', 'sym-rel', links[1].target), links[1].client);
    for (const l of links) {
      await mkdir(l.client, { recursive: true });
      await symlink(l.target, `${EXPORT}/${l.link}`);
    }
    t.after(async () => {
      for (const l of links) await rm(`${EXPORT}/${l.link}`, { force: true });
      await rm('/ossnas-escape-target', { recursive: true, force: true }); // made by this test only
    });

    const errors: string[] = [];
    for (const l of links) {
      await create(l.name, { path: `${EXPORT}/${l.link}/data`, vers: l.vers });
      errors.push(String((await call('Mount', { Name: l.name, ID: ID(31) })).json.Err));
    }
    // Where the symlinks point, on the client host's own filesystem and on the server.
    const made: string[] = [];
    for (const l of links) {
      for (const f of await readdir(l.client)) made.push(path.join(l.client, f));
      if (l.server !== l.client && (await stat(l.server).catch(() => undefined))) made.push(`${l.server} on the server`);
    }
    assert.deepEqual(made, [], 'nothing was made where a symlink points');
    links.forEach((l, i) => {
      const source = `127\\.0\\.0\\.1:${EXPORT}/${l.link}`;
      assert.match(
        errors[i]!,
        new RegExp(`${source}/data does not exist and was not created: a symlink was refused: ${source} is a symlink \\(to ${l.target.replace(/\./g, '\\.')}\\)`),
        l.name,
      );
    });
    for (const l of links) assert.equal(await mountAt(path.join(plugin.mountRoot, l.name)), undefined, `${l.name} is not mounted`);
    const leftovers = (await readMounts()).filter((m) => m.mountPoint.includes('.ossnas-setup'));
    assert.deepEqual(leftovers, [], 'the setup mount is gone');
    for (const l of links) assert.deepEqual((await call('Remove', { Name: l.name })).json, { Err: '' });
  });

  for (const vers of ['3', '4.1'] as const) {
    it(`Two NAS volumes on one export (NFS v${vers}): a container holding one does not hold the other`, async (t) => {
      // Volumes on one server share one superblock, so one device number: only where in the
      // export each mount is tells their containers apart.
      const v = vers.replace('.', '');
      const [a, b, sameAsA] = [`two${v}-a`, `two${v}-b`, `two${v}-a-again`];
      for (const sub of ['a', 'b']) await mkdir(`${EXPORT}/two${v}/${sub}`, { recursive: true });
      await writeFile(`${EXPORT}/two${v}/a/held.txt`, 'held\n');
      await create(a, { path: `${EXPORT}/two${v}/a`, vers });
      await create(b, { path: `${EXPORT}/two${v}/b`, vers });
      await create(sameAsA, { path: `${EXPORT}/two${v}/a`, vers });
      const mpA = await mount(a, 41);
      const mpB = await mount(b, 42);
      const mpSame = await mount(sameAsA, 43);
      assert.equal((await mountAt(mpA))?.device, (await mountAt(mpB))?.device, 'the two volumes share one superblock');

      /** A "container": its own mount namespace holding a bind mount of the volume. */
      const hold = async (mp: string, dir: string) => {
        const h = await holdMount(mp, dir);
        t.after(() => h.release());
        return h;
      };
      const holderA = path.join(plugin.dir, `container-${a}`);
      const holdsA = await hold(mpA, holderA);
      // b's container ran and is gone, and its Unmount never came (the plugin was down).
      await (await hold(mpB, path.join(plugin.dir, `container-${b}`))).release();

      assert.deepEqual((await call('Remove', { Name: b })).json, { Err: '' }, "Remove of b, whose only holder is gone");
      assert.equal(await mountAt(mpB), undefined, 'b is unmounted');
      assert.match(plugin.output(), new RegExp(`"volume":"${b}","during":"Remove","staleIds":\\["2+"\\]`));
      assert.equal(await readFile(path.join(mpA, 'held.txt'), 'utf8'), 'held\n', 'a is still mounted and readable');

      const inUse = new RegExp(`is in use \\(1 mount reference, mounted in 1 other mount namespace: PID \\d+: ${holderA}\\)`);
      let r = await call('Remove', { Name: a });
      assert.match(String(r.json.Err), new RegExp(`volume ${a} ${inUse.source}`));
      // The same server:path is the same data: its containers are counted for both (the safe answer).
      r = await call('Remove', { Name: sameAsA });
      assert.match(String(r.json.Err), new RegExp(`volume ${sameAsA} ${inUse.source}`));
      assert.ok(await mountAt(mpA), 'a is still mounted');
      assert.ok(await mountAt(mpSame), 'a-again is still mounted');

      await holdsA.release();
      for (const name of [a, sameAsA]) assert.deepEqual((await call('Remove', { Name: name })).json, { Err: '' }, `Remove of ${name} once its holder is gone`);
      assert.equal(await readFile(`${EXPORT}/two${v}/a/held.txt`, 'utf8'), 'held\n', 'Remove never deletes data');
    });
  }

  it('mounts readonly, and applies options=none and the user options exactly', async () => {
    await create('ro', { path: EXPORT, vers: '4.1', readonly: 'true' });
    const mp = await mount('ro', 4);
    assert.match((await mountAt(mp))!.options, /(^|,)ro(,|$)/);
    await assert.rejects(writeFile(path.join(mp, 'no.txt'), 'x'), /EROFS/);
    await unmount('ro', 4);

    await create('opts', { path: EXPORT, vers: '3', options: 'soft,timeo=50,retrans=1,nolock,proto=tcp' });
    const mp2 = await mount('opts', 5);
    const sup = (await mountAt(mp2))!.superOptions;
    for (const o of ['soft', 'timeo=50', 'retrans=1', 'nolock', 'proto=tcp']) assert.match(sup, new RegExp(`(^|,)${o}(,|$)`), o);
    await unmount('opts', 5);

    const r = await call('Create', { Name: 'bad', Opts: { type: 'nas', server: '127.0.0.1', options: 'hard,addr=10.9.9.9' } });
    assert.match(String(r.json.Err), /invalid option 'options': 'addr' is not accepted here/);
  });

  it('a missing export fails with the server named, and a readonly volume never creates it', async () => {
    await create('ro-missing', { path: `${EXPORT}/nope`, vers: '3', readonly: 'true' });
    const r = await call('Mount', { Name: 'ro-missing', ID: ID(6) });
    assert.match(String(r.json.Err), /127\.0\.0\.1:\/srv\/nfs\/nope does not exist on the server/);
    await assert.rejects(stat(`${EXPORT}/nope`), /ENOENT/);
  });

  it('a mount is a kernel mount: it outlives the plugin process', async () => {
    await create('keep', { path: EXPORT, vers: '4.1' });
    const mp = await mount('keep', 7);
    plugin = await plugin.restart();
    assert.equal(await readFile(path.join(mp, 'hello.txt'), 'utf8'), 'hello from nfs\n');
    assert.equal(await mount('keep', 8), mp);
    assert.equal((await readMounts()).filter((m) => m.mountPoint === mp).length, 1, 'the healthy mount was reused');
    await unmount('keep', 7);
    await unmount('keep', 8);
    assert.equal(await mountAt(mp), undefined);
  });

  it('a server that accepts connections but never answers NFS fails at the mount deadline, leaving nothing mounted', async () => {
    const silent = await silentServer(12049);
    try {
      await create('silent', { path: '/', vers: '4.1', options: 'port=12049' });
      const t0 = Date.now();
      const r = await call('Mount', { Name: 'silent', ID: ID(9) });
      const took = Date.now() - t0;
      // Within what is left of the call's one deadline (OSSNAS_MOUNT_TIMEOUT=8) once the undo is set aside.
      assert.match(String(r.json.Err), /did not finish within [1-8] s; the server accepts connections but does not answer NFS requests/);
      assert.ok(took < 15_000, `took ${took} ms`);
      assert.equal(await mountAt(path.join(plugin.mountRoot, 'silent')), undefined);
    } finally {
      silent.close();
    }
  });

  it('a dead server: Mount fails in seconds, Unmount does not hang, and the volume works once it is back', async (t) => {
    await create('dead', { path: EXPORT, vers: '4.1' });
    await create('held', { path: EXPORT, vers: '4.1' });
    const held = await mount('held', 1);
    await nfsd('stop');
    let t0 = Date.now();
    try {
      const r = await call('Mount', { Name: 'dead', ID: ID(2) });
      assert.match(String(r.json.Err), /NFS server 127\.0\.0\.1 is not reachable: 127\.0\.0\.1 port 2049 refused the connection/);
      assert.ok(Date.now() - t0 < 5000, `failed in ${Date.now() - t0} ms`);
      const st = ((await call('Get', { Name: 'dead' })).json.Volume as { Status: Record<string, unknown> }).Status;
      assert.match(String(st.lastError), /not reachable/);

      t0 = Date.now();
      await unmount('held', 1);
      assert.equal(await mountAt(held), undefined, 'detached although the server is gone');
      assert.ok(Date.now() - t0 < 12_000, `unmount took ${Date.now() - t0} ms`);
      const how = /"volume":"held","how":"(\w+)","serverGone":true/.exec(plugin.output());
      assert.ok(how, 'Unmount knew the server was gone');
      t.diagnostic(`Unmount with the server gone: ${how[1]} in ${Date.now() - t0} ms`);
    } finally {
      await nfsd('start');
    }
    t0 = Date.now();
    const mp = await mount('dead', 3);
    t.diagnostic(`first Mount after the server came back: ${Date.now() - t0} ms`);
    assert.equal(await readFile(path.join(mp, 'hello.txt'), 'utf8'), 'hello from nfs\n');
    await unmount('dead', 3);
  });

  it('a server that hangs, then stops, across a plugin restart: calls answered while the restore waits on it, repaired once the server is back', async (t) => {
    await create('across', { path: EXPORT, vers: '4.1' });
    const mp = await mount('across', 11);
    // A container holds it (without one, the restart rightly releases the reference).
    const holder = await holdMount(mp, path.join(plugin.dir, 'container-across'));
    t.after(() => holder.release());
    await nfsd('stop');
    // In the server's place, something that accepts connections and never answers: the hard
    // mount's statfs hangs. The restore's repair of 'across' waits its 2 s probe for it, then keeps
    // the mount as it is; a call that waited for the repair would be answered after that verdict.
    // Checking that order in the plugin's own log, rather than a time, keeps this test meaningful
    // on a slow TCG guest.
    const hung = await silentServer(2049);
    try {
      plugin = await plugin.restart();
      await waitUntil(async () => /"msg":"state loaded"/.test(plugin.output()), 30_000);
      const t0 = Date.now();
      const listed = (await call('List', {})).json.Volumes as Array<{ Name: string }>;
      const st = ((await call('Get', { Name: 'across' })).json.Volume as { Status: Record<string, unknown> }).Status;
      const answeredMs = Date.now() - t0;
      t.diagnostic(`List and Get answered in ${answeredMs} ms while the restore was busy with the hung server`);
      assert.ok(listed.some((v) => v.Name === 'across'), 'still listed');
      assert.equal(st.refs, 1, 'the reference survived');
      // The hard mount is still there and its I/O waits: it is kept as it is, never replaced.
      await waitUntil(async () => /does not answer/.test(String((await status('across')).lastError)), 90_000);
      const log = plugin.output();
      const answered = log.search(/"call":"VolumeDriver.Get","volume":"across"/);
      const verdict = log.search(/"volume":"across","reason":[^\n]*"msg":"mount does not answer; kept as it is/);
      assert.ok(answered >= 0 && verdict > answered, `List and Get (${answeredMs} ms) waited for the repair of the hung server`);
      assert.equal((await status('across')).mounted, true);
      hung.close(); // now the server is simply gone: connections are refused
    } finally {
      hung.close();
      await nfsd('start');
    }
    const t1 = Date.now();
    await waitUntil(async () => {
      const st = await status('across');
      return st.mounted === true && st.health === 'ok';
    }, 120_000);
    t.diagnostic(`served again ${Date.now() - t1} ms after the server came back (re-checks back off up to 60 s)`);
    assert.equal(await readFile(path.join(mp, 'hello.txt'), 'utf8'), 'hello from nfs\n');
    assert.match(plugin.output(), /"volume":"across","attempt":\d+,"msg":"mount answers again"/);
    assert.doesNotMatch(plugin.output(), /"volume":"across"[^\n]*"msg":"mount restored"/, 'the kept mount was replaced');
    await unmount('across', 11);
    assert.equal(await mountAt(mp), undefined);
  });
});

// Keep the guest's export as the tests expect it, whatever an earlier run left.
before(async () => {
  if (inGuest) await mkdir(EXPORT, { recursive: true });
});
