// The process startS3 (s3.ts) runs: s3rver with the signature-checking front before it
// (s3-auth/front.ts), on one port of 127.0.0.1. The key pairs come over the IPC channel, never
// through argv or the environment, where the secrets tests look for secrets in every process.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { createServer, type RequestListener } from 'node:http';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createRequire } from 'node:module';
import { signingFront, type Refusal } from './s3-auth/front.js';
import type { KeySet } from './s3-auth/keys.js';
import { KeyedMutex } from '../../src/keyed-mutex.js';

export type ToServer =
  | { type: 'start'; dir: string; buckets: string[]; keys: KeySet }
  | { type: 'keys'; keys: KeySet };
export type FromServer =
  | { type: 'ready' }
  | { type: 'listening'; port: number }
  | { type: 'keys-set' }
  | { type: 'refused'; refusal: Refusal };

interface S3rverStore {
  getResourcePath(bucket: string, key: string, resource: string): string;
  getObject(bucket: string, key: string, options?: unknown): Promise<unknown>;
  getBucketPath(bucket: string): string;
  listObjects(bucket: string, options: ListOptions): Promise<ListResult>;
  putMetadata(bucket: string, key: string, metadata: unknown, md5: string): Promise<unknown>;
  putObject(object: { bucket: string; key: string; metadata: unknown; content: Buffer | NodeJS.ReadableStream }): Promise<{ size: number; md5: string }>;
}

interface S3rver {
  configureBuckets(): Promise<unknown>;
  callback(): RequestListener;
  store: S3rverStore;
}
interface ListOptions {
  delimiter?: string;
  prefix?: string;
  startAfter?: string;
  maxKeys?: number;
}
interface ListResult {
  objects: unknown[];
  commonPrefixes: string[];
  isTruncated: boolean;
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
    // Path-style requests only: s3rver would take a Host that is a name (s3.proxied.invalid, which
    // a test reaches through a proxy) for a virtual-host bucket. Every other test uses an IP address.
    vhostBuckets: false,
  });
  atomicPuts(s3rver.store);
  everyCommonPrefix(s3rver.store);
  await s3rver.configureBuckets();
  const server = createServer(signingFront(s3rver.callback(), {
    keys: () => keys,
    onRefused: (refusal) => send({ type: 'refused', refusal }),
  }));
  server.listen(0, '127.0.0.1', () => send({ type: 'listening', port: (server.address() as { port: number }).port }));
}

/**
 * s3rver writes an object in place (truncate, then stream), so a HEAD or GET during a PUT that
 * replaces it sees a short or empty object. S3 and OSS replace an object whole: readers see the
 * old one or the new one. s3fs re-uploads a whole file at each close, so a container appending
 * to a file while another reads it met s3rver's window, not a real server's. Written beside the
 * object and renamed over it, as a real server behaves.
 *
 * The object and its metadata (which holds the length) are two files. A GET reads the metadata,
 * then opens the object: one that fell between the rename and the new metadata sent the old
 * length with the new body, and Node cut the connection at the mismatch (a test polling an object
 * rclone was replacing failed with "other side closed"). So a GET, up to the moment its file is
 * open, and the swap of both files, take turns per object.
 */
function atomicPuts(store: S3rverStore): void {
  const perObject = new KeyedMutex();
  const objectId = (bucket: string, key: string) => `${bucket}/${key}`;
  const getObject = store.getObject.bind(store);
  store.getObject = (bucket, key, options) => perObject.run(objectId(bucket, key), () => getObject(bucket, key, options));
  store.putObject = async (object) => {
    const objectPath = store.getResourcePath(object.bucket, object.key, 'object');
    const temp = `${objectPath}.${process.pid}.${randomBytes(6).toString('hex')}.uploading`;
    await mkdir(path.dirname(objectPath), { recursive: true });
    const md5 = createHash('md5');
    let size = 0;
    const source = Buffer.isBuffer(object.content) ? Readable.from([object.content]) : object.content;
    try {
      await pipeline(
        source,
        new Transform({
          transform(chunk: Buffer, _enc, done) {
            md5.update(chunk);
            size += chunk.length;
            done(null, chunk);
          },
        }),
        createWriteStream(temp),
      );
      const digest = md5.digest('hex');
      await perObject.run(objectId(object.bucket, object.key), async () => {
        await rename(temp, objectPath);
        await store.putMetadata(object.bucket, object.key, object.metadata, digest);
      });
      return { size, md5: digest };
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
  };
}

/**
 * s3rver lists a "directory" that holds only other directories as nothing: with the delimiter /,
 * its walk stops one level below the prefix, so the keys team/a/f.txt list as no CommonPrefixes
 * at the bucket root, where S3 and OSS give team/. s3fs finds such a directory by name anyway;
 * rclone, which trusts the listing, could not open team/a/f.txt. Added here: every directory
 * below the prefix's that holds an object, however deep.
 */
function everyCommonPrefix(store: S3rverStore): void {
  const listObjects = store.listObjects.bind(store);
  store.listObjects = async (bucket, options) => {
    const result = await listObjects(bucket, options);
    const prefix = options.prefix ?? '';
    if (options.delimiter !== '/' || result.isTruncated) return result;
    const base = prefix.slice(0, prefix.lastIndexOf('/') + 1);
    const partial = prefix.slice(base.length);
    const dir = path.join(store.getBucketPath(bucket), base);
    const found = new Set(result.commonPrefixes);
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const commonPrefix = `${base}${e.name}/`;
      if (!e.isDirectory() || !e.name.startsWith(partial) || found.has(commonPrefix)) continue;
      if (commonPrefix <= (options.startAfter ?? '')) continue;
      if (await holdsObject(path.join(dir, e.name))) found.add(commonPrefix);
    }
    return { ...result, commonPrefixes: [...found].sort() };
  };
}

async function holdsObject(dir: string): Promise<boolean> {
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (e.isFile() && e.name.endsWith('._S3rver_object')) return true;
    if (e.isDirectory() && (await holdsObject(path.join(dir, e.name)))) return true;
  }
  return false;
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
