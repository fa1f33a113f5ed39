// Real NFS for the NAS volume type. This machine's kernel has no NFS, so scripts/nfs-guest.sh
// boots a Debian kernel that has it under qemu, with an NFS server on the guest's loopback, and
// runs test/guest/*.test.ts there: the program driven over its socket, under a real dockerd, and
// under a swarm of two dockerd nodes. The same boot is our cgroup v2 host (this machine is v1):
// the managed plugin, from the bundle built here, under the guest's dockerd
// (test/guest/cgroup-v2.test.ts).
// Each guest test is reported here as a test of its own, so a failure names the case.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { rootSkipReason } from '../helpers/env.js';
import { buildPlugin } from '../helpers/docker.js';
import { parseTap } from '../helpers/tap.js';
import { REPO_ROOT } from '../helpers/plugin-process.js';

const GUEST_FILES = ['test/guest/nas.test.ts', 'test/guest/nas-docker.test.ts', 'test/guest/nas-swarm.test.ts', 'test/guest/cgroup-v2.test.ts'];
/**
 * The guest run's limit, from qemu's start. Measured under TCG on a 2-core host: 3.5-4.3 min for
 * the NAS suites, 5.5 min more for cgroup-v2.test.ts (3.8 of them `docker plugin create`), 9.7
 * min on a host busy with other work (create: 7.2 min).
 */
const GUEST_TIMEOUT_S = 40 * 60;

describe('NAS volumes (and cgroup v2) in an NFS guest kernel (qemu)', { skip: rootSkipReason(), timeout: GUEST_TIMEOUT_S * 1000 + 20 * 60_000 }, () => {
  it('runs the NAS suite against a real NFS server, and the managed plugin on cgroup v2', async (t) => {
    let t0 = Date.now();
    // rootfs.build.sh (cached: ~15 s); the guest has no network to build it.
    const bundle = await buildPlugin();
    t.diagnostic(`plugin bundle: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    // One retry, only when the guest's kernel locked up (seen once in four runs on a busy host:
    // both emulated CPUs spinning inside `docker plugin create`, under TCG). softlockup_panic
    // ends such a guest (scripts/nfs-guest.sh), which exits 125 with the console's last lines.
    // A test that fails, or a guest that dies any other way, is never run again.
    const runGuest = () =>
      execa(
        'bash',
        [path.join(REPO_ROOT, 'scripts/nfs-guest.sh'), 'env', 'OSSNAS_NFS_GUEST=1', 'OSSNAS_E2E_BUNDLE=/ossnas-bundle', 'node', '--import', 'tsx', '--test', '--test-reporter=tap', '--test-concurrency=1', ...GUEST_FILES],
        {
          reject: false,
          all: true,
          cwd: REPO_ROOT,
          env: { NFS_GUEST_BUNDLE: bundle, NFS_GUEST_TIMEOUT: String(GUEST_TIMEOUT_S) },
          timeout: (GUEST_TIMEOUT_S + 5 * 60) * 1000,
        },
      );
    t0 = Date.now();
    let r = await runGuest();
    if (r.exitCode === 125 && /soft lockup/.test(String(r.all ?? ''))) {
      t.diagnostic(`the guest's kernel locked up after ${((Date.now() - t0) / 1000).toFixed(1)} s (an emulation fault, not a test's): booting it once more`);
      t0 = Date.now();
      r = await runGuest();
    }
    const output = String(r.all ?? '');
    t.diagnostic(`guest run: ${((Date.now() - t0) / 1000).toFixed(1)} s, exit ${r.exitCode}`);
    // The script's own timing line: image, boot, command, qemu.
    for (const l of output.split('\n').filter((x) => x.startsWith('[nfs-guest] exit '))) t.diagnostic(l);
    const results = parseTap(output);
    for (const res of results) {
      await t.test(res.name, { skip: res.skipped }, (tt) => {
        for (const d of res.diagnostics) tt.diagnostic(d);
        if (!res.ok) assert.fail(`in the guest:\n${res.detail}`);
      });
    }
    const passed = results.filter((x) => x.ok && !x.skipped).length;
    assert.ok(passed >= 16, `expected the guest suites to run (at least 16 passing tests), got ${passed}; output:\n${output.slice(-6000)}`);
    assert.equal(r.exitCode, 0, `the guest run failed; output:\n${output.slice(-6000)}`);
  });
});
