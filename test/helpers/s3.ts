// A real S3 server (s3rver) on 127.0.0.1 with its own data directory, in a process of its own,
// behind a front that checks request signatures against the test's key pairs as S3 and OSS do
// (s3rver alone checks no V4 signature: a wrong secret would mount). See s3-server.ts.
// Not in the test's process: a spawn from the test process while it holds a file open on an s3fs
// mount closes that file in the child before exec; s3fs then uploads it, and an s3rver in the
// spawning process (its event loop blocked in the spawn) could never answer: both wait for ever.
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { tempDir } from './env.js';
import { REPO_ROOT } from './plugin-process.js';
import type { Refusal } from './s3-auth/front.js';
import { DEFAULT_KEYS, type KeySet } from './s3-auth/keys.js';
import type { FromServer, ToServer } from './s3-server.js';

export type { KeySet } from './s3-auth/keys.js';
export type { Refusal } from './s3-auth/front.js';

export interface S3Server {
  url: string;
  port: number;
  pid: number;
  dir: string;
  /** The object's content, read back over HTTP (anonymous GETs are answered), or undefined. */
  getObject(bucket: string, key: string): Promise<string | undefined>;
  /** Object keys stored on disk for a bucket. */
  keys(bucket: string): Promise<string[]>;
  /** From now on only these key pairs sign (a rotation: the old ones are refused). */
  setKeys(keys: KeySet): Promise<void>;
  /** Every request the front refused so far, oldest first. */
  refusals(): Refusal[];
  stop(): Promise<void>;
}

export interface S3Options {
  /** Access key id -> secret (or an STS key's secret and token); default S3RVER:S3RVER. */
  keys?: KeySet;
  /** ms for the server to listen; default 15 s (node + tsx + s3rver: under TCG, in the NFS guest, more) */
  startTimeoutMs?: number;
}

const SERVER_SCRIPT = path.join(REPO_ROOT, 'test', 'helpers', 's3-server.ts');
const START_TIMEOUT_MS = 15_000;

export async function startS3(buckets: string[], options: S3Options = {}): Promise<S3Server> {
  const t = await tempDir('ossnas-s3-');
  // tsx from the repository (cwd), as the tests themselves run.
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER_SCRIPT], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  // A test process that ends without stop() (a crash, a cancelled run) takes its server along.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const send = (m: ToServer) => child.send(m);
  const refused: Refusal[] = [];
  const keysSet: Array<() => void> = [];
  let out = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const port = await new Promise<number>((resolve, reject) => {
    const startTimeout = options.startTimeoutMs ?? START_TIMEOUT_MS;
    const timer = setTimeout(() => reject(new Error(`the S3 server did not start within ${startTimeout} ms: ${out}`)), startTimeout);
    child.stdout!.on('data', (c: Buffer) => (out += String(c)));
    child.stderr!.on('data', (c: Buffer) => (out += String(c)));
    child.on('message', (m: FromServer) => {
      if (m.type === 'ready') send({ type: 'start', dir: t.dir, buckets, keys: options.keys ?? DEFAULT_KEYS });
      else if (m.type === 'listening') {
        clearTimeout(timer);
        resolve(m.port);
      } else if (m.type === 'refused') refused.push(m.refusal);
      else if (m.type === 'keys-set') keysSet.shift()?.();
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`the S3 server exited before listening: ${out}`));
    });
  }).catch(async (err: unknown) => {
    child.kill('SIGKILL');
    await t.cleanup();
    throw err;
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    port,
    pid: child.pid!,
    dir: t.dir,
    async getObject(bucket, key) {
      const res = await fetch(`${url}/${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`);
      return res.ok ? await res.text() : undefined;
    },
    async keys(bucket) {
      const found: string[] = [];
      const walk = async (dir: string, prefix: string) => {
        for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
          if (e.isDirectory()) await walk(path.join(dir, e.name), `${prefix}${e.name}/`);
          else if (e.name.endsWith('._S3rver_object')) found.push(prefix + e.name.slice(0, -'._S3rver_object'.length));
        }
      };
      await walk(path.join(t.dir, bucket), '');
      return found.sort();
    },
    setKeys(keys) {
      return new Promise<void>((resolve) => {
        keysSet.push(resolve);
        send({ type: 'keys', keys });
      });
    },
    refusals: () => [...refused],
    async stop() {
      process.off('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      await t.cleanup();
    },
  };
}
