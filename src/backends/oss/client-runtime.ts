// What a FUSE client reads and writes while it serves, kept in the state directory (a host
// directory bound into the plugin) and reached through the client's working directory.
// `docker plugin upgrade` (and `docker plugin rm`) deletes the old rootfs and detaches every mount
// below it, in the namespace the clients of running containers still serve from: their
// /tmp, /etc and even the state mount are gone by path. s3fs makes a temporary file for every file
// opened (`tmpdir`) and reads the CA bundle for every new TLS connection (`CURL_CA_BUNDLE`); with
// absolute paths, every open in those containers failed with EIO after an upgrade. A working
// directory is a reference, not a path: the detached state mount stays reachable through it, so
// both are given relative to it. (/etc/resolv.conf is detached too: a client of a running
// container resolves no new host name after an upgrade.)
import path from 'node:path';
import { copyIfChanged, ensureDir } from '../../host/files.js';

/** Where the rootfs (Debian's ca-certificates) keeps the bundle s3fs would read. */
const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const CA_COPY = 'ca-certificates.crt';
const TMP = 'tmp';

export interface ClientRuntime {
  /** The client's working directory: the runtime directory in the state directory. */
  cwd: string;
  /** s3fs `-o` options, relative to cwd */
  options: string[];
  /** relative to cwd */
  env: Record<string, string>;
}

const prepared = new Map<string, Promise<ClientRuntime>>();

/** Prepared once per state directory and process (the bundle is copied again at each start). */
export function clientRuntime(stateDir: string, caBundle = CA_BUNDLE): Promise<ClientRuntime> {
  let p = prepared.get(stateDir);
  if (!p) {
    p = prepare(path.join(stateDir, 'fuse'), caBundle);
    p.catch(() => prepared.delete(stateDir)); // tried again at the next mount
    prepared.set(stateDir, p);
  }
  return p;
}

async function prepare(dir: string, caBundle: string): Promise<ClientRuntime> {
  await ensureDir(dir, 0o700);
  await ensureDir(path.join(dir, TMP), 0o700);
  const env: Record<string, string> = {};
  if (await copyIfChanged(caBundle, path.join(dir, CA_COPY))) env.CURL_CA_BUNDLE = CA_COPY;
  return { cwd: dir, options: [`tmpdir=${TMP}`], env };
}
