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
// uploads after close), the object must hold every line 1..N; a round where it does not lost lines.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { startS3, type S3Server } from '../test/helpers/s3.js';
import { runMeta } from './build.js';
import { Cleanup, log, requireRoot, runBench, sleep, textTable, writeJsonReport } from './fuse-host.js';
import { clientVersion, mountRaw, parseClients, type RawClientName } from './raw-clients.js';

const BUCKET = 'append';
const APPEND_EVERY_S = 0.05;
const READ_EVERY_S = 0.02;
/** How long rclone may take to upload a closed file (its write-back delay is 5 s). */
const UPLOAD_WAIT_MS = 30_000;

interface ClientResult {
  client: RawClientName;
  version: string;
  rounds: number;
  roundsWithLoss: number;
  linesLost: number;
  /** Lines written, over all rounds */
  linesWritten: number;
  /** Mean ms from the writer's end until the object held every line it was going to */
  settleMs: number;
}

/** How many of the lines 1..N the object lacks (an overwritten line is one it lacks). */
function missing(text: string, n: number): number {
  const have = new Set(text.split('\n').filter(Boolean).map(Number));
  let lost = 0;
  for (let i = 1; i <= n; i++) if (!have.has(i)) lost++;
  return lost;
}

async function runClient(name: RawClientName, s3: S3Server, rounds: number, lines: number, cleanup: Cleanup): Promise<ClientResult> {
  const m = await mountRaw(name, s3, BUCKET);
  cleanup.add(`${name} client`, m.stop);
  const mp = m.mp;
  const result: ClientResult = { client: name, version: await clientVersion(name), rounds, roundsWithLoss: 0, linesLost: 0, linesWritten: 0, settleMs: 0 };
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
  const clients = parseClients(values.clients);
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
