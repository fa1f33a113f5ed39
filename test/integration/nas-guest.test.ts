// Real NFS for the NAS volume type. This machine's kernel has no NFS, so scripts/nfs-guest.sh
// boots a Debian kernel that has it under qemu, with an NFS server on the guest's loopback, and
// runs test/guest/*.test.ts there: the program driven over its socket, under a real dockerd, and
// under a swarm of two dockerd nodes.
// Each guest test is reported here as a test of its own, so a failure names the case.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { rootSkipReason } from '../helpers/env.js';
import { parseTap } from '../helpers/tap.js';
import { REPO_ROOT } from '../helpers/plugin-process.js';

describe('NAS volumes in an NFS guest kernel (qemu)', { skip: rootSkipReason(), timeout: 45 * 60_000 }, () => {
  it('runs the NAS suite against a real NFS server', async (t) => {
    const t0 = Date.now();
    const r = await execa(
      'bash',
      [path.join(REPO_ROOT, 'scripts/nfs-guest.sh'), 'env', 'OSSNAS_NFS_GUEST=1', 'node', '--import', 'tsx', '--test', '--test-reporter=tap', '--test-concurrency=1', 'test/guest/nas.test.ts', 'test/guest/nas-docker.test.ts', 'test/guest/nas-swarm.test.ts'],
      { reject: false, all: true, cwd: REPO_ROOT, timeout: 40 * 60_000 },
    );
    const output = String(r.all ?? '');
    t.diagnostic(`guest run: ${((Date.now() - t0) / 1000).toFixed(1)} s, exit ${r.exitCode}`);
    const results = parseTap(output);
    for (const res of results) {
      await t.test(res.name, { skip: res.skipped }, (tt) => {
        for (const d of res.diagnostics) tt.diagnostic(d);
        if (!res.ok) assert.fail(`in the guest:\n${res.detail}`);
      });
    }
    const passed = results.filter((x) => x.ok && !x.skipped).length;
    assert.ok(passed >= 13, `expected the guest suites to run (at least 13 passing tests), got ${passed}; output:\n${output.slice(-6000)}`);
    assert.equal(r.exitCode, 0, `the guest run failed; output:\n${output.slice(-6000)}`);
  });
});
