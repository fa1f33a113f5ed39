// The process startS3 (s3.ts) runs: s3rver with the signature-checking front before it
// (s3-auth/front.ts), on one port of 127.0.0.1. The key pairs come over the IPC channel, never
// through argv or the environment, where the secrets tests look for secrets in every process.
import { createServer, type RequestListener } from 'node:http';
import { createRequire } from 'node:module';
import { signingFront, type Refusal } from './s3-auth/front.js';
import type { KeySet } from './s3-auth/keys.js';

export type ToServer =
  | { type: 'start'; dir: string; buckets: string[]; keys: KeySet }
  | { type: 'keys'; keys: KeySet };
export type FromServer =
  | { type: 'ready' }
  | { type: 'listening'; port: number }
  | { type: 'keys-set' }
  | { type: 'refused'; refusal: Refusal };

interface S3rver {
  configureBuckets(): Promise<unknown>;
  callback(): RequestListener;
}
type S3rverClass = new (options: Record<string, unknown>) => S3rver;

const send = (m: FromServer) => process.send!(m);

async function start(m: Extract<ToServer, { type: 'start' }>): Promise<void> {
  let keys = m.keys;
  process.on('message', (next: ToServer) => {
    if (next.type !== 'keys') return;
    keys = next.keys;
    send({ type: 'keys-set' });
  });
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverClass;
  const s3rver = new S3rver({
    directory: m.dir,
    silent: true,
    // The front has checked the signature, against the test's keys (see s3-auth/front.ts).
    allowMismatchedSignatures: true,
    configureBuckets: m.buckets.map((name) => ({ name, configs: [] })),
  });
  await s3rver.configureBuckets();
  const server = createServer(signingFront(s3rver.callback(), {
    keys: () => keys,
    onRefused: (refusal) => send({ type: 'refused', refusal }),
  }));
  server.listen(0, '127.0.0.1', () => send({ type: 'listening', port: (server.address() as { port: number }).port }));
}

// A test process that is gone takes its server along.
process.on('disconnect', () => process.exit(0));
process.once('message', (m: ToServer) => {
  if (m.type === 'start') {
    start(m).catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
  }
});
// Messages sent before a listener is attached are lost: the test waits for this one.
send({ type: 'ready' });
