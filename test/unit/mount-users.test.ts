// Who else has a filesystem mounted, read from every process's mount table on this host.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { mountUsers } from '../../src/host/mount-users.js';

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
