// Which OSS volumes may share one FUSE client (client-group.ts): only those a single client would
// serve exactly as their own clients would, named so that the name gives nothing of the keys away.
import assert from 'node:assert/strict';
import { readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { clientGroup, groupKey } from '../../src/backends/oss/client-group.js';
import { toSpec } from '../../src/backends/oss/options.js';
import { OssBackend } from '../../src/backends/oss/index.js';
import { BackendError } from '../../src/backends/types.js';
import { fillUntilFull, mountTmpfs, Undo } from '../helpers/faults.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';

const KEY = Buffer.alloc(32, 1);
const SECRET = 'Group-Secret-5e2d';
const backend = new OssBackend();
// A profile: the volume's keys are then the ones resolved for the mount (a volume naming none would use the RAM role).
const spec = (o: Record<string, string>) => toSpec(backend.parse({ type: 'oss', bucket: 'data', url: 'http://s3.local:9000', credentials: 'team', ...o }));
const keys = { akId: 'AKID', akSecret: SECRET };

describe('OSS client groups', () => {
  it('put volumes that differ only in their path in one group, named after the bucket', () => {
    const a = clientGroup(spec({ path: '/a' }), keys, KEY);
    assert.equal(a, clientGroup(spec({ path: '/b/c' }), keys, KEY));
    assert.match(a, /^data\.[0-9a-f]{24}$/);
  });
  it('keep apart every option that changes what the client serves, and other keys', () => {
    const base = clientGroup(spec({}), keys, KEY);
    const others = [
      clientGroup(spec({ bucket: 'other' }), keys, KEY),
      clientGroup(spec({ url: 'http://s3.other:9000' }), keys, KEY),
      clientGroup(spec({ uid: '1000' }), keys, KEY),
      clientGroup(spec({ gid: '1000' }), keys, KEY),
      clientGroup(spec({ umask: '077' }), keys, KEY),
      clientGroup(spec({ readonly: 'true' }), keys, KEY),
      clientGroup(spec({ otherOpts: '-o stat_cache_expire=5' }), keys, KEY),
      clientGroup(spec({}), { akId: 'AKID', akSecret: 'another-secret' }, KEY),
      clientGroup(spec({}), { ...keys, securityToken: 'token' }, KEY),
      clientGroup(spec({}), undefined, KEY),
      clientGroup(spec({}), keys, Buffer.alloc(32, 2)),
    ];
    assert.equal(new Set([base, ...others]).size, others.length + 1);
  });
  it("group a RAM role's volumes by the role, whatever STS keys each mount was given", () => {
    const role = toSpec(backend.parse({ type: 'oss', bucket: 'data', url: 'http://s3.local:9000' }));
    assert.equal(role.ramRole, true);
    assert.equal(clientGroup(role, { akId: 'STS1', akSecret: 's1', securityToken: 't1' }, KEY), clientGroup(role, { akId: 'STS2', akSecret: 's2', securityToken: 't2' }, KEY));
  });
  it('keep the HMAC key in a root-only file, the same one after a restart', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const first = await groupKey(dir);
      assert.equal(first.length, 32);
      const file = path.join(dir, 'client-groups.key');
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      assert.deepEqual(await readFile(file), first);
      assert.ok(!(await readFile(file, 'latin1')).includes(SECRET));
    } finally {
      await cleanup();
    }
  });
  it('names the directory when the key cannot be kept (a full filesystem), and tries again once there is room', { skip: rootSkipReason() }, async () => {
    const { dir, cleanup } = await tempDir();
    const undo = new Undo();
    undo.add('the temporary directory', cleanup);
    try {
      const full = path.join(dir, 'full');
      await mountTmpfs(full, '64k', undo);
      const filler = path.join(full, 'filler');
      await fillUntilFull(filler);
      await assert.rejects(groupKey(full), (err: Error) => {
        assert.ok(err instanceof BackendError);
        assert.match(err.message, new RegExp(`^the key that names shared FUSE clients could not be kept in ${full}: ENOSPC`));
        return true;
      });
      await rm(filler);
      assert.equal((await groupKey(full)).length, 32);
    } finally {
      await undo.run();
    }
  });
});
