// A real S3 server (s3rver) on 127.0.0.1 with its own data directory, in a process of its own.
// Not in the test's process: a spawn from the test process while it holds a file open on an s3fs
// mount closes that file in the child before exec; s3fs then uploads it, and an s3rver in the
// spawning process (its event loop blocked in the spawn) could never answer: both wait for ever.
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { tempDir } from './env.js';
import { REPO_ROOT } from './plugin-process.js';

export interface S3Server {
  url: string;
  port: number;
  pid: number;
  dir: string;
  /** The object's content, read back over HTTP (s3rver answers anonymous GETs), or undefined. */
  getObject(bucket: string, key: string): Promise<string | undefined>;
  /** Object keys stored on disk for a bucket. */
  keys(bucket: string): Promise<string[]>;
  stop(): Promise<void>;
}

const S3RVER_BIN = path.join(REPO_ROOT, 'node_modules', 's3rver', 'bin', 's3rver.js');
const START_TIMEOUT_MS = 15_000;

export async function startS3(buckets: string[]): Promise<S3Server> {
  const t = await tempDir('ossnas-s3-');
  const args = [S3RVER_BIN, '-d', t.dir, '-a', '127.0.0.1', '-p', '0', '-s', ...buckets.flatMap((b) => ['--configure-bucket', b])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  // A test process that ends without stop() (a crash, a cancelled run) takes its server along.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let out = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`s3rver did not start within ${START_TIMEOUT_MS} ms: ${out}`)), START_TIMEOUT_MS);
    const onData = (c: Buffer) => {
      out += String(c);
      const m = /listening on [^\s:]+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited before listening: ${out}`));
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
    async stop() {
      process.off('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      await t.cleanup();
    },
  };
}
