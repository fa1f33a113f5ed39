// Who else has a filesystem mounted, read from every process's mount table on this host.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { mountUsers, showsPartOf } from '../../src/host/mount-users.js';
import { parseMountinfo, type MountEntry } from '../../src/host/mountinfo.js';

/** Mount points in `table` (mountinfo text) that `showsPartOf` counts as users of `mine`'s. */
function usersIn(table: string, mineAt: string): string[] {
  const mounts = parseMountinfo(table);
  const mine = mounts.find((m) => m.mountPoint === mineAt) as MountEntry;
  return mounts.filter((m) => m !== mine && showsPartOf(m, mine)).map((m) => m.mountPoint);
}

describe('which mounts show a part of our mount', () => {
  // One NFS server, one superblock (device 0:53) for every volume on it; NFS shows '/' as every
  // mount's root, and derives the source from the mount's own root directory.
  const nfs = [
    '40 30 0:53 / /mnt/volumes/a rw,relatime shared:90 - nfs 127.0.0.1:/srv/nfs/a rw,vers=3,addr=127.0.0.1',
    '41 30 0:53 / /mnt/volumes/b rw,relatime shared:91 - nfs 127.0.0.1:/srv/nfs/b rw,vers=3,addr=127.0.0.1',
    '42 30 0:53 / /mnt/volumes/ab rw,relatime shared:92 - nfs 127.0.0.1:/srv/nfs/ab rw,vers=3,addr=127.0.0.1',
    '43 30 0:53 / /mnt/volumes/all rw,relatime shared:93 - nfs 127.0.0.1:/srv/nfs rw,vers=3,addr=127.0.0.1',
    '44 30 0:53 / /mnt/volumes/a-again rw,relatime shared:94 - nfs 127.0.0.1:/srv/nfs/a rw,vers=3,addr=127.0.0.1',
    // containers: a bind of volume a, a volume-subpath bind of a/sub, a bind of b
    '50 45 0:53 / /c1/data rw,relatime - nfs 127.0.0.1:/srv/nfs/a rw,vers=3,addr=127.0.0.1',
    '51 45 0:53 / /c2/data rw,relatime - nfs 127.0.0.1:/srv/nfs/a/sub/dir rw,vers=3,addr=127.0.0.1',
    '52 45 0:53 / /c3/data rw,relatime - nfs 127.0.0.1:/srv/nfs/b rw,vers=3,addr=127.0.0.1',
    '53 45 0:99 / /c4/data rw,relatime - nfs 10.0.0.9:/srv/nfs/a rw,vers=3,addr=10.0.0.9',
  ].join('\n');

  it('NFS: a bind of the volume or of a sub-directory of it, never a sibling, an ancestor, or another server', () => {
    assert.deepEqual(usersIn(nfs, '/mnt/volumes/a'), ['/mnt/volumes/a-again', '/c1/data', '/c2/data']);
    assert.deepEqual(usersIn(nfs, '/mnt/volumes/b'), ['/c3/data']);
    assert.deepEqual(usersIn(nfs, '/mnt/volumes/ab'), [], "'/srv/nfs/a' is not a part of '/srv/nfs/ab'");
  });

  it('NFS: a volume of the whole export sees the mounts of every part of it', () => {
    assert.deepEqual(usersIn(nfs, '/mnt/volumes/all'), nfs.split('\n').map((l) => l.split(' ')[4]).filter((p) => !['/mnt/volumes/all', '/c4/data'].includes(p!)));
  });

  it('NFS v4, an IPv6 server and an export of /', () => {
    const v4 = [
      '40 30 0:60 / /mnt/volumes/root rw - nfs4 [fd00::1]:/ rw,vers=4.1',
      '41 30 0:60 / /mnt/volumes/x rw - nfs4 [fd00::1]:/x rw,vers=4.1',
      '50 45 0:60 / /c1/data rw - nfs4 [fd00::1]:/x/y rw,vers=4.1',
      '51 45 0:60 / /c2/data rw - nfs4 [fd00::1]:/xy rw,vers=4.1',
    ].join('\n');
    assert.deepEqual(usersIn(v4, '/mnt/volumes/x'), ['/c1/data']);
    assert.deepEqual(usersIn(v4, '/mnt/volumes/root'), ['/mnt/volumes/x', '/c1/data', '/c2/data']);
  });

  it('NFS: a source that cannot be read counts as a user (keeping a reference is the safe mistake)', () => {
    const odd = ['40 30 0:53 / /mnt/volumes/a rw - nfs 127.0.0.1:/srv/nfs/a rw', '50 45 0:53 / /c1/data rw - nfs weird rw'].join('\n');
    assert.deepEqual(usersIn(odd, '/mnt/volumes/a'), ['/c1/data']);
  });

  it('a local filesystem: the root field tells where a bind is; the source tells nothing', () => {
    const disk = [
      '40 30 7:3 / /mnt/volumes/disk rw - ext4 /dev/loop3 rw',
      '41 30 7:3 /data /mnt/volumes/part rw - ext4 /dev/loop3 rw',
      '50 45 7:3 /data/x /c1/data rw - ext4 /dev/loop3 rw',
      '51 45 7:3 /other /c2/data rw - ext4 /dev/disk/by-uuid/1234 rw',
      '52 45 7:3 /database /c3/data rw - ext4 /dev/loop3 rw',
    ].join('\n');
    assert.deepEqual(usersIn(disk, '/mnt/volumes/disk'), ['/mnt/volumes/part', '/c1/data', '/c2/data', '/c3/data']);
    assert.deepEqual(usersIn(disk, '/mnt/volumes/part'), ['/c1/data']);
  });
});

describe('mount users', () => {
  it('skips a zombie (its mount table reads EINVAL) instead of giving up', async (t) => {
    // The parent execs a sleep that never reaps its first child: a zombie for 3 s.
    const parent = spawn('sh', ['-c', 'sleep 0.05 & exec sleep 3'], { stdio: 'ignore' });
    t.after(() => parent.kill('SIGKILL'));
    await new Promise((r) => setTimeout(r, 300));
    const users = await mountUsers('/proc', ['/nonexistent-root']);
    assert.ok(users.some((u) => u.endsWith(': /proc')), `our own /proc is listed: ${users.join(', ')}`);
  });

  it('is empty for a path where nothing is mounted', async () => {
    assert.deepEqual(await mountUsers('/nonexistent-path-for-ossnas', []), []);
  });
});
