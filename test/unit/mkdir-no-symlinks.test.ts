// Directories made as root inside a mount whose content someone else controls: a symlink planted
// there must be refused, never followed. A tmpfs stands in for the NFS export (the kernel's
// nosymfollow is the same for every filesystem); test/guest/nas.test.ts does it on real NFS.
import assert from 'node:assert/strict';
import { mkdir, stat, symlink } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { run } from '../../src/host/exec.js';
import type { HostNamespace } from '../../src/host/hostns.js';
import { mkdirNoSymlinks, SymlinkRefused } from '../../src/host/mkdir-no-symlinks.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';

/** Our own namespace as the host's, as for a plain host process. */
const here: HostNamespace = { pid: undefined, run: (c, a, o) => run(c, a, o), hostPath: async (p) => p };

describe('mkdir without following symlinks', () => {
  it('creates real directories, and refuses a symlink at any depth, naming it, with nothing made where it points', { skip: rootSkipReason() }, async (t) => {
    const { dir, cleanup } = await tempDir();
    const mnt = path.join(dir, 'setup', 'vol');
    const outside = path.join(dir, 'outside');
    let mounted = false;
    t.after(async () => {
      if (mounted) await execa('umount', ['-l', mnt]); // before the delete, which must not walk into it
      await cleanup();
    });
    await mkdir(mnt, { recursive: true });
    await mkdir(outside);
    await execa('mount', ['-t', 'tmpfs', 'export', mnt]);
    mounted = true;
    await mkdir(path.join(mnt, 'real'));
    await symlink(outside, path.join(mnt, 'abs')); // to the host's own filesystem
    await symlink('../../outside', path.join(mnt, 'real', 'rel')); // out of the mount by '..'
    await symlink(path.join(outside, 'gone'), path.join(mnt, 'dangling'));

    for (const [parts, at, target] of [
      [['abs', 'data'], ['abs'], outside],
      [['real', 'rel', 'x', 'y'], ['real', 'rel'], '../../outside'],
      [['dangling', 'data'], ['dangling'], path.join(outside, 'gone')],
      [['dangling'], ['dangling'], path.join(outside, 'gone')],
    ] as const) {
      await assert.rejects(mkdirNoSymlinks(here, mnt, [...parts], 5000), (err: unknown) => {
        assert.ok(err instanceof SymlinkRefused, String(err));
        assert.deepEqual(err.at, at);
        assert.equal(err.target, target);
        return true;
      });
    }
    await assert.rejects(stat(path.join(outside, 'data')), /ENOENT/, 'nothing made through the absolute symlink');
    await assert.rejects(stat(path.join(outside, 'x')), /ENOENT/, 'nothing made through the relative one');
    await assert.rejects(stat(path.join(outside, 'gone')), /ENOENT/, 'nothing made at a dangling target');

    await mkdirNoSymlinks(here, mnt, ['real', 'a', 'b'], 5000);
    assert.ok((await stat(path.join(mnt, 'real', 'a', 'b'))).isDirectory());
  });
});
