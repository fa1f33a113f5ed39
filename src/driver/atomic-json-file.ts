// A lowdb adapter whose writes are atomic, durable and private: the JSON goes to a 0600 temp
// file that is fsynced and renamed over the old one, then the directory is fsynced. A crash at
// any instant leaves either the old or the new state, never half of one. Concurrent writes are
// coalesced: callers that arrive while a write is queued share the next write, which
// serialises the latest data, and every caller resolves only once its data is on disk.
import { open, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Adapter } from 'lowdb';

export class AtomicJsonFile<T> implements Adapter<T> {
  private chain: Promise<void> = Promise.resolve();
  private queued: { data: T; done: Promise<void> } | null = null;
  private seq = 0;

  constructor(readonly file: string) {}

  async read(): Promise<T | null> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new Error(`state file ${this.file} is not valid JSON (${(err as Error).message}); it was left untouched`);
    }
  }

  write(data: T): Promise<void> {
    if (this.queued) {
      this.queued.data = data;
      return this.queued.done;
    }
    const entry = { data, done: Promise.resolve() };
    entry.done = this.chain.then(() => {
      this.queued = null;
      return this.writeNow(entry.data);
    });
    this.queued = entry;
    this.chain = entry.done.catch(() => undefined);
    return entry.done;
  }

  private async writeNow(data: T): Promise<void> {
    const tmp = `${this.file}.${process.pid}.${++this.seq}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(data));
      await fh.sync();
    } catch (err) {
      await fh.close();
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await fh.close();
    await rename(tmp, this.file);
    const dir = await open(path.dirname(this.file), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}
