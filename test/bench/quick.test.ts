// The benchmarks' short versions (--quick: small N, few rounds), so that the suite under bench/
// cannot rot: each must finish, clean up, and write numbers. The numbers are not judged here (the
// machines are shared and noisy); `npm run bench` prints them with their targets.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { readMounts } from '../../src/host/mountinfo.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { REPO_ROOT } from '../helpers/plugin-process.js';

/** Every finite number in a JSON document. */
function numbersIn(x: unknown): number[] {
  if (typeof x === 'number') return Number.isFinite(x) ? [x] : [];
  if (x && typeof x === 'object') return Object.values(x).flatMap(numbersIn);
  return [];
}

async function runQuick(script: string, args: string[] = []): Promise<Record<string, unknown>> {
  const { dir, cleanup } = await tempDir('ossnas-bench-quick-');
  try {
    const out = path.join(dir, `${script}.json`);
    const r = await execa(process.execPath, ['--import', 'tsx', path.join('bench', `${script}.ts`), '--quick', ...args, '--out', out], {
      cwd: REPO_ROOT,
      reject: false,
      all: true,
      timeout: 15 * 60_000,
    });
    assert.equal(r.exitCode, 0, `bench/${script}.ts --quick failed:\n${String(r.all).slice(-3000)}`);
    return JSON.parse(await readFile(out, 'utf8')) as Record<string, unknown>;
  } finally {
    await cleanup();
  }
}

/** runQuick, and then no mount is left that was not there before. */
async function runQuickLeavingNothingMounted(script: string, args: string[] = []): Promise<Record<string, unknown>> {
  const mountsBefore = new Set((await readMounts()).map((m) => m.mountPoint));
  const j = await runQuick(script, args);
  const left = (await readMounts()).map((m) => m.mountPoint).filter((mp) => !mountsBefore.has(mp));
  assert.deepEqual(left, [], 'the benchmark left mounts behind');
  return j;
}

describe('benchmarks, short versions', { skip: rootSkipReason(), timeout: 40 * 60_000 }, () => {
  it('protocol: ossnas (with and without inline keys), rclone and the floor each answered every phase', async () => {
    const j = await runQuick('protocol');
    const results = j.results as { server: string; create: { opsPerSec: number }; getSeq: { p99Ms: number }; remove: { opsPerSec: number } }[];
    assert.deepEqual([...new Set(results.map((r) => r.server))].sort(), ['floor', 'ossnas', 'ossnas-keys', 'rclone']);
    for (const r of results) {
      assert.ok(r.create.opsPerSec > 0 && r.getSeq.p99Ms > 0 && r.remove.opsPerSec > 0, `${r.server}: ${JSON.stringify(r).slice(0, 300)}`);
    }
  });

  it('append-while-read: each client wrote every round and nothing is left mounted (losses are counted, not judged)', async () => {
    const j = await runQuickLeavingNothingMounted('append-while-read');
    const results = j.results as { client: string; rounds: number; linesWritten: number; linesLost: number; roundsWithLoss: number }[];
    assert.deepEqual(results.map((r) => r.client), ['s3fs', 'rclone']);
    // Losses are not judged, but a client whose writes never reached the bucket lost every line.
    for (const r of results) assert.ok(r.rounds > 0 && r.linesLost < r.linesWritten && r.roundsWithLoss <= r.rounds, JSON.stringify(r));
  });

  it('listing: each client listed every object, cold and warm, and nothing is left mounted', async () => {
    const j = await runQuickLeavingNothingMounted('listing');
    const results = j.results as { client: string; n: number; coldMs: number; warmMs: number; rssMiB: number }[];
    assert.deepEqual(results.map((r) => `${r.client} ${r.n}`), ['s3fs 100', 'rclone 100']);
    for (const r of results) assert.ok(r.coldMs > 0 && r.warmMs > 0 && r.rssMiB > 0, JSON.stringify(r));
  });

  it('clients: every configuration measured every case through the plugin (every write uploaded), and nothing is left mounted', async () => {
    const j = await runQuickLeavingNothingMounted('clients');
    const results = j.results as { config: string; case: string; n: number; value: number; samples: number[] }[];
    const failures = j.failures as { config: string; case: string; error: string }[];
    // A write never uploaded (rclone lost renamed files at vfs_write_back=0s) is a failure here.
    assert.deepEqual(failures, []);
    const cases = [
      'list-cold', 'list-warm', 'rss-after-listing',
      'large-write', 'large-write-uploaded', 'large-read', 'large-read-bucket',
      'small-write', 'small-write-uploaded', 'small-read', 'small-read-bucket',
      'append', 'append-uploaded', 'find', 'git-clone', 'git-clone-uploaded',
    ];
    for (const config of ['s3fs-raw', 'ossnas-s3fs', 'ossnas-rclone']) {
      for (const kase of cases) {
        const r = results.find((x) => x.config === config && x.case === kase);
        assert.ok(r, `${config} ${kase}: no result`);
        assert.ok(r.value > 0 && r.samples.length > 0 && r.samples.every((v) => v > 0), JSON.stringify(r));
      }
    }
  });

  const runs: Array<[string, string[]]> = [
    ['mount-cycle', []],
    ['restore', []],
    ['restore', ['--share']],
    ['data-path', []],
    ['docker-run', []],
    ['burst', []],
    ['shared-clients', []],
  ];
  for (const [script, args] of runs) {
    it(`${[script, ...args].join(' ')}: finishes, writes numbers and leaves nothing mounted`, async () => {
      const j = await runQuickLeavingNothingMounted(script, args);
      const numbers = numbersIn(j);
      assert.ok(numbers.filter((n) => n > 0).length >= 10, `too few numbers: ${JSON.stringify(j).slice(0, 500)}`);
    });
  }
});
