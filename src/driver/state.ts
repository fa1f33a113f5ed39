// What the driver persists, in OSSNAS_STATE_DIR (0700): every volume with its options and the
// mount IDs holding it. Only the driver uses this module.
//
// One durable operation must cost the same whatever the number of volumes, so a change is not a
// rewrite of everything: it is one line appended to a journal (`state.journal`) and an fdatasync.
// The whole state is a lowdb snapshot (`state.json`, written atomically by AtomicJsonFile), made
// again when the journal has grown larger than the snapshot (and at least 1 MiB), and at every
// start. Loading is the snapshot with the journal replayed over it; a last line cut short by a
// crash was never acknowledged and is dropped. Both files are 0600.
import { open, readFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Low } from 'lowdb';
import { ensureDir } from '../host/files.js';
import { AtomicJsonFile } from './atomic-json-file.js';

export interface VolumeRecord {
  name: string;
  /** RFC 3339 */
  createdAt: string;
  /** Normalised options, secrets included: these files are root-only. */
  options: Record<string, string>;
  /** Mount ID -> how many times Docker mounted with that ID and has not yet unmounted. */
  mounts: Record<string, number>;
  /** Whether ossnas believes the backend is mounted at the mountpoint. */
  mounted: boolean;
  lastError?: { message: string; at: string };
  /** When Status's health (ok, idle, error) last changed; RFC 3339. Absent: since createdAt. */
  since?: string;
}

export interface StateData {
  version: 1;
  volumes: Record<string, VolumeRecord>;
}

export const STATE_FILE = 'state.json';
export const JOURNAL_FILE = 'state.journal';
const MIN_COMPACT_BYTES = 1 << 20;

/** One journal line: the volume's whole record after the change, or null once it is removed. */
interface JournalEntry {
  n: string;
  r: VolumeRecord | null;
}

export interface StateStore {
  /** Mutated in place by the driver; `save` makes a change durable. */
  readonly data: StateData;
  /** Records the current state of each named volume durably; resolves once it is on disk. */
  save(...names: string[]): Promise<void>;
  /** Waits for every write queued so far. */
  flush(): Promise<void>;
  /** Writes a new snapshot and empties the journal, so that nothing older survives on disk. */
  compact(): Promise<void>;
}

function checkFormat(data: StateData, stateDir: string): void {
  if (data.version !== 1 || typeof data.volumes !== 'object' || data.volumes === null) {
    throw new Error(`state file in ${stateDir} has an unknown format (version ${String(data.version)})`);
  }
}

/** Applies the journal's complete lines to `data`; returns how many were applied. */
export function replayJournal(data: StateData, text: string, file: string): number {
  const lines = text.split('\n');
  lines.pop(); // after the last newline: empty, or a line a crash cut short (never acknowledged)
  lines.forEach((line, i) => {
    let e: JournalEntry;
    try {
      e = JSON.parse(line) as JournalEntry;
    } catch (err) {
      throw new Error(`state journal ${file} line ${i + 1} is not valid JSON (${(err as Error).message.slice(0, 60)}); it was left untouched`);
    }
    if (e.r === null) delete data.volumes[e.n];
    else data.volumes[e.n] = e.r;
  });
  return lines.length;
}

async function readJournal(file: string): Promise<string> {
  return readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
}

/** The state as the last acknowledged operation left it, read without changing any file. */
export async function loadState(stateDir: string): Promise<StateData> {
  const snapshot = new Low<StateData>(new AtomicJsonFile(path.join(stateDir, STATE_FILE)), { version: 1, volumes: {} });
  await snapshot.read();
  checkFormat(snapshot.data, stateDir);
  const journal = path.join(stateDir, JOURNAL_FILE);
  replayJournal(snapshot.data, await readJournal(journal), journal);
  return snapshot.data;
}

class JournaledState implements StateStore {
  private pending: string[] = [];
  private waiters: Array<{ resolve: () => void; reject: (err: unknown) => void }> = [];
  private draining: Promise<void> | undefined;
  private journalBytes = 0;
  private compactWanted = false;
  private snapshotBytes = 0;

  constructor(
    private readonly snapshot: Low<StateData>,
    private readonly journal: FileHandle,
  ) {}

  get data(): StateData {
    return this.snapshot.data;
  }

  save(...names: string[]): Promise<void> {
    // The record as it is now: later changes are saved by their own call.
    for (const n of names) this.pending.push(`${JSON.stringify({ n, r: this.data.volumes[n] ?? null })}\n`);
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.draining ??= this.drain();
    return done;
  }

  async flush(): Promise<void> {
    while (this.draining) await this.draining;
  }

  /**
   * Appends what is pending, in batches: callers that arrive during a sync share the next one.
   * `draining` is cleared with no await between the last check for waiters and the clearing, so a
   * save() either finds a drain that will take its line or starts one.
   */
  private async drain(): Promise<void> {
    await Promise.resolve(); // let the caller store this promise in `draining` first
    while (this.waiters.length > 0) {
      const lines = this.pending.join('');
      const waiters = this.waiters;
      this.pending = [];
      this.waiters = [];
      try {
        if (lines) {
          await this.journal.appendFile(lines);
          await this.journal.datasync();
          this.journalBytes += Buffer.byteLength(lines);
        }
        if (this.compactWanted || this.journalBytes > Math.max(MIN_COMPACT_BYTES, this.snapshotBytes)) {
          this.compactWanted = false;
          await this.compactNow();
        }
        for (const w of waiters) w.resolve();
      } catch (err) {
        for (const w of waiters) w.reject(err);
      }
    }
    this.draining = undefined;
  }

  /** Queued like a save, so that no append runs while the snapshot is taken and the journal emptied. */
  compact(): Promise<void> {
    this.compactWanted = true;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.draining ??= this.drain();
    return done;
  }

  /** A new snapshot of everything, then an empty journal. Runs only between appends. */
  private async compactNow(): Promise<void> {
    await this.snapshot.write();
    this.snapshotBytes = Buffer.byteLength(JSON.stringify(this.data));
    await this.journal.truncate(0);
    await this.journal.sync();
    this.journalBytes = 0;
  }
}

/** Loads the state and starts it afresh: a new snapshot, an empty journal. */
export async function openState(stateDir: string): Promise<StateStore> {
  await ensureDir(stateDir, 0o700);
  const snapshot = new Low<StateData>(new AtomicJsonFile(path.join(stateDir, STATE_FILE)), { version: 1, volumes: {} });
  await snapshot.read();
  checkFormat(snapshot.data, stateDir);
  const journalFile = path.join(stateDir, JOURNAL_FILE);
  replayJournal(snapshot.data, await readJournal(journalFile), journalFile);
  const journal = await open(journalFile, 'a', 0o600);
  const dir = await open(stateDir, 'r');
  try {
    await dir.sync(); // the journal's directory entry, if it was just created
  } finally {
    await dir.close();
  }
  const store = new JournaledState(snapshot, journal);
  await store.compact();
  return store;
}

export function refCount(v: VolumeRecord): number {
  return Object.values(v.mounts).reduce((a, b) => a + b, 0);
}
