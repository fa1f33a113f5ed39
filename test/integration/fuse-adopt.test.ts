// adoptFuseClient with two s3fs clients whose argv names the same mountpoint, one mounted in our
// mount namespace and one in a private namespace of its own: what two ossnas plugins on one host
// look like to each other through pidhost (each mounts at /mnt/volumes/NAME in its own namespace).
// Only the client of the mount we see may be adopted, whichever was started first. Real s3fs
// against a local S3 server; needs root (FUSE mounts, unshare).
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { execa, type ResultPromise } from 'execa';
import { adoptFuseClient } from '../../src/host/fuse.js';
import { findMount, readMounts } from '../../src/host/mountinfo.js';
import { rootSkipReason, tempDir } from '../helpers/env.js';
import { startS3, type S3Server } from '../helpers/s3.js';

/** adoptFuseClient reuses its scan of /proc for this long: a case's clients must be newer than the last scan. */
const SCAN_REUSE_MS = 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The topmost mount at `target` as process `pid` sees it. */
async function mountSeenBy(pid: number | 'self', target: string) {
  return (await readMounts(`/proc/${pid}/mountinfo`).catch(() => [])).findLast((m) => m.mountPoint === target);
}

describe('adopting the FUSE client of a mount', { skip: rootSkipReason(), timeout: 120_000 }, () => {
  let s3: S3Server;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let passwd: string;
  let n = 0;
  let target: string;
  let clients: ResultPromise[] = [];

  before(async () => {
    s3 = await startS3(['bucket']);
    tmp = await tempDir('ossnas-adopt-');
    passwd = path.join(tmp.dir, 'passwd');
    await writeFile(passwd, 'S3RVER:S3RVER\n', { mode: 0o600 });
  });
  after(async () => {
    await tmp?.cleanup();
    await s3?.stop();
  });
  afterEach(async () => {
    // Ours first: unmounting it ends its client. The foreign client's mount goes with its namespace.
    if (await findMount(target)) await execa('umount', [target], { reject: false });
    for (const c of clients) c.kill('SIGTERM');
    const left = await Promise.race([Promise.all(clients).then(() => false), sleep(5000).then(() => true)]);
    if (left) for (const c of clients) c.kill('SIGKILL');
    await Promise.all(clients);
    clients = [];
    assert.equal(await findMount(target), undefined, 'a mount was left behind');
  });

  async function newTarget(): Promise<string> {
    target = path.join(tmp.dir, 'volumes', `v${++n}`);
    await mkdir(target, { recursive: true });
    return target;
  }

  /**
   * s3fs mounting the bucket at `target`, in our namespace or (foreign) in a private one of its
   * own, where its mount stays unseen by us. Resolves with its PID once its mount is there.
   */
  async function s3fs(where: 'ours' | 'foreign'): Promise<number> {
    const opts = { reject: false, stdin: 'ignore', stdout: 'ignore' } as const;
    const args = ['bucket', target, '-f', '-o', `url=${s3.url}`, '-o', `passwd_file=${passwd}`, '-o', 'use_path_request_style'];
    // unshare execs s3fs in the new namespace: the PID is the client's.
    const child =
      where === 'ours'
        ? execa('s3fs', args, opts)
        : execa('unshare', ['--mount', '--propagation', 'private', '--', 's3fs', ...args], opts);
    clients.push(child);
    const before = await findMount(target);
    // Usually some 50 ms; once in a full CI run over 10 s (a busy machine): a generous bound.
    for (let i = 0; i < 1500; i++) {
      const m = await mountSeenBy(where === 'ours' ? 'self' : child.pid!, target);
      if (m?.fsType === 'fuse.s3fs' && m.device !== before?.device) return child.pid!;
      if (child.exitCode !== null) break;
      await sleep(20);
    }
    child.kill('SIGKILL');
    throw new Error(`s3fs (${where}) did not mount at ${target}: ${String((await child).stderr)}`);
  }

  for (const order of ['foreign first', 'foreign last'] as const) {
    it(`adopts the client of the mount in our namespace, not another namespace's at the same path (${order})`, async () => {
      await newTarget();
      let foreign: number | undefined;
      if (order === 'foreign first') foreign = await s3fs('foreign');
      const ours = await s3fs('ours');
      if (order === 'foreign last') foreign = await s3fs('foreign');
      assert.notEqual(foreign, ours);
      // The foreign client's mount is not ours to see.
      assert.notEqual((await mountSeenBy(foreign!, target))!.device, (await findMount(target))!.device);

      await sleep(SCAN_REUSE_MS + 100);
      const adopted = await adoptFuseClient(target, ['s3fs']);
      assert.equal(adopted?.pid, ours, `adopted ${adopted?.pid}; ours is ${ours}, the other namespace's ${foreign}`);
      assert.equal(adopted.command, 's3fs');
    });
  }

  it('adopts nothing when only another namespace has a client at the path', async () => {
    await newTarget();
    await s3fs('foreign');
    assert.equal(await findMount(target), undefined);
    await sleep(SCAN_REUSE_MS + 100);
    assert.equal(await adoptFuseClient(target, ['s3fs']), undefined);
  });
});
