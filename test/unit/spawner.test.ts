// The spawn helper (native/ossnas-spawn.c through src/host/spawner.ts): real processes, started
// by the helper and never forked from this process.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { run } from '../../src/host/exec.js';
import { SpawnError, startProcess } from '../../src/host/spawner.js';
import { startTime, statFields } from '../../src/host/proc.js';

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

async function ppid(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^PPid:\s+(\d+)$/m.exec(status)![1]);
}

describe('spawn helper', () => {
  it('starts a command found on the PATH of the environment given, with that environment only, in the directory given', async () => {
    let out = '';
    const p = await startProcess('sh', ['-c', 'echo "$GREETING from $(pwd)"; echo oops >&2; env | wc -l >&2; exit 3'], {
      env: { PATH, GREETING: 'hello ü' },
      cwd: '/tmp',
      onOutput: (stream, text) => (out += `${stream}:${text}`),
    });
    assert.deepEqual(await p.exited, { code: 3, signal: undefined });
    assert.match(out, /stdout:hello ü from \/tmp\n/);
    assert.match(out, /stderr:oops\n/);
    // PATH, GREETING, and what sh itself sets (PWD, maybe SHLVL and _): nothing of ours.
    assert.ok(Number(/(\d+)\s*$/.exec(out)![1]) <= 5, out);
  });

  it('runs the child in a process of the helper, not of this process, and in a session of its own when detached', async () => {
    const p = await startProcess('sleep', ['5'], { env: { PATH }, detached: true });
    try {
      const parent = await ppid(p.pid);
      assert.notEqual(parent, process.pid, 'the child was forked by this process');
      assert.match(await readFile(`/proc/${parent}/cmdline`, 'utf8'), /ossnas-spawn/);
      const fields = await statFields(p.pid);
      assert.equal(Number(fields![3]), p.pid, 'session id (field 6) is its own pid');
    } finally {
      p.kill('SIGKILL');
    }
    assert.deepEqual(await p.exited, { code: undefined, signal: 'SIGKILL' });
  });

  it('refuses a command that is not on the PATH, with ENOENT, and starts nothing', async () => {
    await assert.rejects(startProcess('no-such-command-ossnas', [], { env: { PATH } }), (e: unknown) => e instanceof SpawnError && e.code === 'ENOENT');
    await assert.rejects(run('no-such-command-ossnas', []), /no-such-command-ossnas failed \(ENOENT\)/);
  });

  it('passes everything a child wrote before its end, large output included, split anywhere', async () => {
    const chunks: string[] = [];
    const p = await startProcess('sh', ['-c', 'yes é | head -c 300000'], { env: { PATH }, onOutput: (_s, t) => chunks.push(t) });
    await p.exited;
    const text = chunks.join('');
    assert.ok(chunks.length > 1, 'in one piece: nothing was split');
    assert.equal(text.length, 200000, 'every two-byte character once, none cut in half');
    assert.ok(/^(é\n)+$/.test(text));
  });

  it('run(): stdout without its final newline, errors with the command\'s words, a timeout kills', async () => {
    assert.equal(await run('printf', ['a\\nb\\n']), 'a\nb');
    await assert.rejects(run('sh', ['-c', 'echo secret-value-1234 is wrong >&2; exit 2'], { secrets: ['secret-value-1234'] }), /Error: sh exited with code 2: \[redacted\] is wrong$/);
    await assert.rejects(run('sleep', ['30'], { timeoutMs: 200 }), /sleep timed out after 200 ms/);
  });

  it('many at once: each gets its own output and status', async () => {
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => run('sh', ['-c', `echo ${i}; exit 0`])),
    );
    assert.deepEqual(results, Array.from({ length: 40 }, (_, i) => String(i)));
  });

  it('a helper killed with kill -9 leaves what it started running; their ends are still seen, and the next start gets a new helper', async () => {
    const long = await startProcess('sleep', ['30'], { env: { PATH }, detached: true });
    const helper = await ppid(long.pid);
    process.kill(helper, 'SIGKILL');
    while ((await startTime(helper)) !== undefined) await new Promise((r) => setTimeout(r, 20));
    assert.notEqual(await startTime(long.pid), undefined, 'the child died with the helper');

    const next = await startProcess('sleep', ['5'], { env: { PATH } });
    try {
      const newHelper = await ppid(next.pid);
      assert.notEqual(newHelper, helper);
      assert.match(await readFile(`/proc/${newHelper}/cmdline`, 'utf8'), /ossnas-spawn/);
    } finally {
      next.kill('SIGKILL');
    }
    assert.deepEqual(await next.exited, { code: undefined, signal: 'SIGKILL' });
    assert.equal(await run('sh', ['-c', 'echo after']), 'after');

    // The orphan's end is noticed through /proc, without its status (its parent is gone).
    long.kill('SIGKILL');
    assert.deepEqual(await long.exited, { code: undefined, signal: undefined });
  });
});
