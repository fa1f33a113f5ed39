// A real S3 server (s3rver) on 127.0.0.1, in the test process, with its own data directory.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import S3rver from 's3rver';
import { tempDir } from './env.js';

export interface S3Server {
  url: string;
  port: number;
  dir: string;
  /** The object's content, read back over HTTP (s3rver answers anonymous GETs), or undefined. */
  getObject(bucket: string, key: string): Promise<string | undefined>;
  /** Object keys stored on disk for a bucket. */
  keys(bucket: string): Promise<string[]>;
  stop(): Promise<void>;
}

export async function startS3(buckets: string[]): Promise<S3Server> {
  const t = await tempDir('ossnas-s3-');
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    directory: t.dir,
    silent: true,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  const { port } = await server.run();
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    port,
    dir: t.dir,
    async getObject(bucket, key) {
      const res = await fetch(`${url}/${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`);
      return res.ok ? await res.text() : undefined;
    },
    async keys(bucket) {
      const out: string[] = [];
      const walk = async (dir: string, prefix: string) => {
        for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
          if (e.isDirectory()) await walk(path.join(dir, e.name), `${prefix}${e.name}/`);
          else if (e.name.endsWith('._S3rver_object')) out.push(prefix + e.name.slice(0, -'._S3rver_object'.length));
        }
      };
      await walk(path.join(t.dir, bucket), '');
      return out.sort();
    },
    async stop() {
      server.httpServer?.closeAllConnections();
      await server.close().catch(() => undefined);
      await t.cleanup();
    },
  };
}
