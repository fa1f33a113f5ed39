// Appends that a FUSE client keeps while another process on the same mount reads the file: what
// s3fs 1.90 loses and rclone mount keeps (docs/operations.md, Known limitations). Not a speed
// benchmark: it counts lost lines, each client mounted on its own (no plugin), the anchor being a
// client that loses none.
//
//   node --import tsx bench/append-while-read.ts              15 rounds of 40 appends per client
//   node --import tsx bench/append-while-read.ts --quick      3 rounds of 20
//   options: --rounds 15  --lines 40  --clients s3fs,rclone  --out .cache/bench-append-while-read.json
// Needs root, Debian's s3fs and rclone. The S3 server is s3rver in a child process of its own.
//
// A round: one shell appends numbered lines to a new file (`echo N >> f`, one every 50 ms: each
// append an open, a write and a close, so s3fs uploads at each close), while another opens and
// reads the file every 20 ms. Once the writer is done and the client has uploaded (rclone
// uploads after close), the object must hold 1..N in order; a round that does not lost lines.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execa, type ResultPromise } from 'execa';
import { tempDir } from '../test/helpers/env.js';
import { startS3, type S3Server } from '../test/helpers/s3.js';
import { runMeta } from './build.js';
import { Cleanup, forceCleanBelow, log, requireRoot, runBench, sleep, textTable, writeJsonReport } from './fuse-host.js';
import { mountsBelow } from './process.js';

const BUCKET = 'append';
const APPEND_EVERY_S = 0.05;
const READ_EVERY_S = 0.02;
/** How long rclone may take to upload a closed file (its write-back delay is 5 s). */
const UPLOAD_WAIT_MS = 30_000;

type ClientName = 's3fs' | 'rclone';

interface ClientResult {
  client: ClientName;
  version: string;
  rounds: number;
  roundsWithLoss: number;
  linesLost: number;
  /** Lines written, over all rounds */
  linesWritten: number;
  /** Mean ms from the writer's end until the object held every line it was going to */
  settleMs: number;
}

/** The client, mounting the bucket at `mp` in the foreground; keys through a file or the environment, never argv. */
function startClient(name: ClientName, s3: S3Server, mp: string, dir: string): ResultPromise {
  if (name === 's3fs') {
    const o = [`url=${s3.url}`, 'use_path_request_style', `passwd_file=${path.join(dir, 'passwd')}`, `tmpdir=${dir}`];
    return execa('s3fs', [BUCKET, mp, '-f', ...o.flatMap((x) => ['-o', x])], { reject: false, all: true });
  }
  // A minimal environment: rclone 1.60 refuses to start with AWS_CA_BUNDLE set ("unable to load
  // custom CA bundle"), which some machines export.
  return execa('rclone', ['mount', `:s3:${BUCKET}`, mp, '--s3-provider', 'Other', '--s3-endpoint', s3.url, '--vfs-cache-mode', 'writes', '--cache-dir', path.join(dir, 'cache')], {
    reject: false,
    all: true,
    extendEnv: false,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, RCLONE_S3_ACCESS_KEY_ID: 'S3RVER', RCLONE_S3_SECRET_ACCESS_KEY: 'S3RVER' },
  });
}

async function versionOf(name: ClientName): Promise<string> {
  const out = (await execa(name, ['--version'], { reject: false, all: true })).all ?? '';
  return /\b[Vv]?(\d+\.\d+(?:\.\d+)?)\b/.exec(out)?.[1] ?? '?';
}

/** Lines of the object that are not 1..N in order: how many of 1..N it lacks. */
function missing(text: string, n: number): number {
  const have = new Set(text.split('\n').filter(Boolean).map(Number));
  let lost = 0;
  for (let i = 1; i <= n; i++) if (!have.has(i)) lost++;
  return lost;
}

async function runClient(name: ClientName, s3: S3Server, rounds: number, lines: number, cleanup: Cleanup): Promise<ClientResult> {
  const t = await tempDir(`ossnas-bench-append-${name}-`);
  const mp = path.join(t.dir, 'mnt');
  await mkdir(mp);
  await writeFile(path.join(t.dir, 'passwd'), 'S3RVER:S3RVER\n', { mode: 0o600 });
  const client = startClient(name, s3, mp, t.dir);
  let out = '';
  let exited = false;
  client.all?.on('data', (c: Buffer) => (out += String(c)));
  client.once('exit', () => (exited = true));
  const stop = async () => {
    await execa('fusermount', ['-u', mp], { reject: false });
    if ((await mountsBelow(t.dir)).length) await execa('umount', ['-l', mp], { reject: false });
    client.kill('SIGTERM');
    await client;
    const left = await forceCleanBelow(t.dir);
    if (left.length) log(`cleanup (${name}): ${left.join('; ')}`);
    await t.cleanup();
  };
  cleanup.add(`${name} client`, stop);
  for (let i = 0; !(await mountsBelow(t.dir)).includes(mp); i++) {
    if (i > 200 || exited) throw new Error(`${name} did not mount ${mp}: ${out.slice(-500)}`);
    await sleep(50);
  }
  const result: ClientResult = { client: name, version: await versionOf(name), rounds, roundsWithLoss: 0, linesLost: 0, linesWritten: 0, settleMs: 0 };
  for (let r = 0; r < rounds; r++) {
    const key = `${name}-${r}`;
    const file = path.join(mp, key);
    const done = `${file}.done`;
    const reader = execa('sh', ['-c', `while [ ! -e ${done} ]; do wc -l < ${file} >/dev/null 2>&1; sleep ${READ_EVERY_S}; done`], { reject: false });
    await execa('sh', ['-c', `i=0; while [ $i -lt ${lines} ]; do i=$((i+1)); echo $i >> ${file}; sleep ${APPEND_EVERY_S}; done; touch ${done}`]);
    await reader;
    // Until the object holds every line, or stops changing for UPLOAD_WAIT_MS (rclone uploads later).
    const t0 = performance.now();
    let text = '';
    for (;;) {
      text = (await s3.getObject(BUCKET, key)) ?? '';
      if (missing(text, lines) === 0 || name === 's3fs' || performance.now() - t0 > UPLOAD_WAIT_MS) break;
      await sleep(100);
    }
    result.settleMs += (performance.now() - t0) / rounds;
    const lost = missing(text, lines);
    result.linesWritten += lines;
    result.linesLost += lost;
    if (lost > 0) result.roundsWithLoss++;
    log(`${name} round ${r + 1}/${rounds}: ${lost ? `${lost} of ${lines} lines lost` : 'every line kept'}`);
  }
  return result;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      lines: { type: 'string' },
      clients: { type: 'string', default: 's3fs,rclone' },
      out: { type: 'string', default: '.cache/bench-append-while-read.json' },
    },
  });
  requireRoot('append-while-read');
  const rounds = Number(values.rounds ?? (values.quick ? 3 : 15));
  const lines = Number(values.lines ?? (values.quick ? 20 : 40));
  const clients = values.clients.split(',') as ClientName[];
  for (const c of clients) if (c !== 's3fs' && c !== 'rclone') throw new Error(`--clients: unknown client '${c}' (s3fs, rclone)`);
  const started = new Date();
  const cleanup = new Cleanup();
  const results: ClientResult[] = [];
  try {
    const s3 = await startS3([BUCKET]);
    cleanup.add('S3 server', () => s3.stop());
    for (const c of clients) results.push(await runClient(c, s3, rounds, lines, cleanup));
  } finally {
    await cleanup.run();
  }
  console.log(`\nAppends while the same mount reads the file: ${rounds} rounds of ${lines} appends per client\n`);
  console.log(textTable(
    ['client', 'version', 'rounds with a loss', 'lines lost', 'lines written', 'ms to upload after the writer'],
    results.map((r) => [r.client, r.version, `${r.roundsWithLoss} of ${r.rounds}`, String(r.linesLost), String(r.linesWritten), r.settleMs.toFixed(0)]),
  ));
  await writeJsonReport(values.out, { meta: runMeta(started), rounds, lines, results });
}

runBench(main);
