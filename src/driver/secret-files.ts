// A volume's inline secrets (akId, akSecret, securityToken given at Create), each volume's in a
// file of its own: `<stateDir>/secrets/<volume>.json`, 0600 in a 0700 directory. They are never
// written to the state journal or snapshot, so removing a volume forgets its keys by deleting one
// file, whatever the number of volumes (the journal would keep them until a rewrite of everything).
// Only state.ts uses this module; volume names are path components already (names.ts).
import { readFileSync } from 'node:fs';
import { open, readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { ensureDir } from '../host/files.js';
import { SECRET_OPTION_KEYS } from '../redact.js';
import { AtomicJsonFile } from './atomic-json-file.js';

export const SECRETS_DIR = 'secrets';
const SUFFIX = '.json';
const READ_SLICE = 500;

export type Secrets = Record<string, string>;

/** The secret options of a volume's options; empty when it has none. */
export function secretsOf(options: Readonly<Record<string, string>>): Secrets {
  const out: Secrets = {};
  for (const k of SECRET_OPTION_KEYS) if (options[k] !== undefined) out[k] = options[k];
  return out;
}

/** The options without their secrets (what the journal and snapshot hold). */
export function withoutSecrets(options: Readonly<Record<string, string>>): Record<string, string> {
  const out = { ...options };
  for (const k of SECRET_OPTION_KEYS) delete out[k];
  return out;
}

export const hasSecrets = (options: Readonly<Record<string, string>>): boolean => SECRET_OPTION_KEYS.some((k) => options[k] !== undefined);

export class SecretFiles {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, SECRETS_DIR);
  }

  private file(volume: string): string {
    return path.join(this.dir, `${volume}${SUFFIX}`);
  }

  /** Every volume's secrets on disk, by volume name. */
  async readAll(): Promise<Map<string, Secrets>> {
    const found = new Map<string, Secrets>();
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return found;
      throw err;
    }
    // Temporary files of a write a crash interrupted (AtomicJsonFile's `<file>.<pid>.<n>.tmp`) never count.
    const files = names.filter((n) => n.endsWith(SUFFIX));
    // Read synchronously, a slice at a time: 10 000 files took 270 ms so, against 1.7-3.3 s through
    // the thread pool (four calls each, whatever the concurrency); the pauses between slices keep
    // the calls that arrive during a start answered.
    for (let i = 0; i < files.length; i++) {
      if (i > 0 && i % READ_SLICE === 0) await new Promise((r) => setImmediate(r));
      const file = path.join(this.dir, files[i]!);
      let secrets: unknown;
      try {
        secrets = JSON.parse(readFileSync(file, 'utf8'));
      } catch (err) {
        throw new Error(`secrets file ${file} could not be read (${(err as Error).message}); it was left untouched`);
      }
      found.set(files[i]!.slice(0, -SUFFIX.length), secrets as Secrets);
    }
    return found;
  }

  /** Names of files left by writes that never finished (a crash during a write). */
  async leftovers(): Promise<string[]> {
    return (await readdir(this.dir).catch(() => [] as string[])).filter((n) => !n.endsWith(SUFFIX));
  }

  /** Writes the volume's secrets durably (0600 temp file, fsync, rename, directory fsync). */
  async write(volume: string, secrets: Secrets): Promise<void> {
    await ensureDir(this.dir, 0o700);
    await new AtomicJsonFile<Secrets>(this.file(volume)).write(secrets);
  }

  /** Deletes the volume's secrets, durably; a file already gone is no error. */
  async remove(volume: string): Promise<void> {
    await this.removeFile(`${volume}${SUFFIX}`);
  }

  async removeFile(name: string): Promise<void> {
    try {
      await unlink(path.join(this.dir, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const dir = await open(this.dir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}
