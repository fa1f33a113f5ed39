// What the driver persists, in OSSNAS_STATE_DIR (0700): every volume with its options and the
// mount IDs holding it. Only the driver uses this module.
//
// One durable operation must cost the same whatever the number of volumes, so a change is not a
// rewrite of everything: it is one line appended to a journal (`state.journal`) and an fdatasync.
// The whole state is a lowdb snapshot (`state.json`, written atomically by AtomicJsonFile), made
// again when the journal has grown larger than the snapshot (and at least 1 MiB), at a clean stop,
// and at a start that found a journal. Loading is the snapshot with the journal replayed over it.
// Both files are 0600.
//
// Inline secrets (keys given at Create) are the exception: each volume's are in a file of its own
// (secret-files.ts), written before the journal line that creates the volume and deleted after the
// line that removes it, so forgetting them never needs a rewrite of everything. A start deletes
// the files of volumes that no record holds (a crash between the two steps). Records saved by
// earlier versions hold their secrets inline: a start moves them to files, and a volume whose
// file could not be written keeps them inline (its Remove then rewrites the snapshot).
//
// The state filesystem fills up for real (disk images live beside it), so a write can fail
// half-way. A failed write must leave no trace: a change is visible in memory only once it is on
// disk, and the journal is written at a known offset and cut back to it when a write fails, so the
// next line never lands after half a line, and no line of a refused change is ever replayed. A
// start needs no free space: the snapshot is rewritten only when it can be, and the journal alone
// is a complete record.
import { constants } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Low } from 'lowdb';
import { ensureDir } from '../host/files.js';
import { AtomicJsonFile } from './atomic-json-file.js';
import { hasSecrets, SecretFiles, secretsOf, withoutSecrets, type Secrets } from './secret-files.js';

/** One volume as the driver knows it. Records are never changed: a change is a new record. */
export interface VolumeRecord {
  readonly name: string;
  /** RFC 3339 */
  readonly createdAt: string;
  /** Normalised options, secrets included: these files are root-only. */
  readonly options: Readonly<Record<string, string>>;
  /**
   * Mount ID -> how many times Docker mounted with that ID and has not yet unmounted. A Map, not
   * an object: IDs come from the caller, and `__proto__` or `constructor` must be plain keys.
   */
  readonly mounts: ReadonlyMap<string, number>;
  /** Whether ossnas believes the backend is mounted at the mountpoint. */
  readonly mounted: boolean;
  readonly lastError?: { readonly message: string; readonly at: string };
  /** When Status's health (ok, idle, error) last changed; RFC 3339. Absent: since createdAt. */
  readonly since?: string;
  /**
   * The host's boot ID when references were last recorded: a start in a later boot knows that
   * every reference it loads is stale, since no container outlives a reboot. Absent in records of
   * older versions.
   */
  readonly boot?: string;
}

/** A record as the files hold it (`mounts` as a JSON object). */
export interface StoredRecord extends Omit<VolumeRecord, 'mounts'> {
  mounts: Record<string, number>;
  /** Its secret options are in its secrets file, not in `options`. */
  secretsFile?: true;
}

export interface StateData {
  version: 1;
  volumes: Record<string, StoredRecord>;
}

export const STATE_FILE = 'state.json';
export const JOURNAL_FILE = 'state.journal';
const MIN_COMPACT_BYTES = 1 << 20;
/** After a snapshot could not be written (a full filesystem), how long until the next try. */
const COMPACT_RETRY_MS = 60_000;

/** One journal line: the volume's whole record after the change, or null once it is removed. */
interface JournalEntry {
  n: string;
  r: StoredRecord | null;
}

/** A change that could not be made durable; nothing of it was kept, in memory or on disk. */
export class StateWriteError extends Error {
  constructor(
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** Told of what the store could not do but survived (a snapshot not written, a damaged journal line skipped). */
export type StateWarn = (fields: Record<string, unknown>, message: string) => void;

export interface StateOptions {
  warn?: StateWarn;
  /** Opens the journal for reading and writing; tests give one that fails as a full disk does. */
  openJournal?: (file: string) => Promise<FileHandle>;
}

// O_APPEND would ignore the offsets every write gives.
const openJournalFile = (file: string) => open(file, constants.O_RDWR | constants.O_CREAT, 0o600);

export interface StateStore {
  /** The volumes as the last acknowledged change left them. */
  readonly volumes: ReadonlyMap<string, VolumeRecord>;
  /**
   * Makes `record` (null: the volume is removed) durable, then visible in `volumes`. On failure it
   * throws StateWriteError, and neither memory nor disk holds any part of the change. A record
   * equal to the one saved writes nothing.
   */
  put(name: string, record: VolumeRecord | null): Promise<void>;
  /** Waits for every write queued so far. */
  flush(): Promise<void>;
  /** Writes a new snapshot and empties the journal, so that nothing older survives on disk. */
  compact(): Promise<void>;
  close(): Promise<void>;
}

/** The record as the files hold it; `inline`: its secrets stay in `options` (see the top). */
export function toStored(r: VolumeRecord, inline = false): StoredRecord {
  // fromEntries defines own properties, so an ID named __proto__ stays an ordinary key.
  const mounts = Object.fromEntries(r.mounts);
  if (inline || !hasSecrets(r.options)) return { ...r, options: { ...r.options }, mounts };
  return { ...r, options: withoutSecrets(r.options), mounts, secretsFile: true };
}

/** The record as the driver holds it, with the secrets from its file (`secrets`) put back. */
export function fromStored(r: StoredRecord, secrets?: Secrets): VolumeRecord {
  const { secretsFile: _, ...rest } = r;
  return { ...rest, options: secrets ? { ...r.options, ...secrets } : r.options, mounts: new Map(Object.entries(r.mounts ?? {})) };
}

function checkFormat(data: StateData, stateDir: string): void {
  if (data.version !== 1 || typeof data.volumes !== 'object' || data.volumes === null) {
    throw new Error(`state file in ${stateDir} has an unknown format (version ${String(data.version)})`);
  }
}

function isEntry(e: unknown): e is JournalEntry {
  return typeof e === 'object' && e !== null && typeof (e as JournalEntry).n === 'string' && 'r' in e;
}

function parseEntry(text: string): JournalEntry | undefined {
  try {
    const e: unknown = JSON.parse(text);
    return isEntry(e) ? e : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A line that is not one entry. Versions before 0.2 appended after half a line left by a failed
 * write, so a damaged line can hold acknowledged entries after the broken start: each `{"n":`
 * (which only begins an entry: inside a JSON string its quotes are escaped) is tried in turn.
 */
function salvage(line: string): JournalEntry | undefined {
  for (let at = line.indexOf('{"n":', 1); at > 0; at = line.indexOf('{"n":', at + 1)) {
    const e = parseEntry(line.slice(at));
    if (e) return e;
  }
  return undefined;
}

export interface Replay {
  /** Lines applied. */
  applied: number;
  /** Bytes of whole lines: where the next line goes. A last line a crash cut short is not counted. */
  validBytes: number;
  /** 1-based numbers of damaged lines, with what was recovered from each. */
  damaged: Array<{ line: number; recovered: boolean }>;
}

/** Applies the journal's complete lines to `volumes`. */
export function replayJournal(volumes: Record<string, StoredRecord>, text: string): Replay {
  const replay: Replay = { applied: 0, validBytes: 0, damaged: [] };
  const end = text.lastIndexOf('\n') + 1; // after it: empty, or a line cut short (never acknowledged)
  const lines = text.slice(0, end).split('\n');
  lines.pop();
  lines.forEach((line, i) => {
    let e = parseEntry(line);
    if (!e) {
      e = salvage(line);
      replay.damaged.push({ line: i + 1, recovered: !!e });
      if (!e) return;
    }
    if (e.r === null) delete volumes[e.n];
    else volumes[e.n] = e.r;
    replay.applied++;
  });
  replay.validBytes = Buffer.byteLength(text.slice(0, end));
  return replay;
}

async function readJournal(file: string): Promise<string> {
  return readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
}

async function readSnapshot(stateDir: string): Promise<Low<StateData>> {
  const snapshot = new Low<StateData>(new AtomicJsonFile(path.join(stateDir, STATE_FILE)), { version: 1, volumes: {} });
  await snapshot.read();
  checkFormat(snapshot.data, stateDir);
  // Own properties only, whatever the names: a volume named like an Object.prototype member is a volume.
  snapshot.data.volumes = Object.assign(Object.create(null) as Record<string, StoredRecord>, snapshot.data.volumes);
  return snapshot;
}

/** The state as the last acknowledged operation left it (as the files hold it), read without changing any file. */
export async function loadState(stateDir: string): Promise<StateData> {
  const snapshot = await readSnapshot(stateDir);
  replayJournal(snapshot.data.volumes, await readJournal(path.join(stateDir, JOURNAL_FILE)));
  return snapshot.data;
}

/** What an error of the filesystem means for an operator. */
function describeWriteError(err: unknown, file: string): StateWriteError {
  const code = (err as NodeJS.ErrnoException).code;
  const why =
    code === 'ENOSPC' || code === 'EDQUOT'
      ? 'the state filesystem is full'
      : code === 'EROFS'
        ? 'the state filesystem is read-only'
        : code === 'EIO'
          ? 'the state filesystem reported an I/O error'
          : (err as Error).message;
  return new StateWriteError(code, `the change could not be saved: ${why} (${code ?? 'error'} writing ${file}); nothing was changed`);
}

/** One change waiting for the journal. */
interface QueuedPut {
  line: string;
  /** Before the line is written: the volume's new secrets file. */
  prepare?: () => Promise<void>;
  /** When the line could not be written: the secrets file that `prepare` wrote goes. */
  undo?: () => Promise<void>;
  /** Once the line is on disk: the secrets file of a removed volume goes. */
  after?: () => Promise<void>;
  apply: () => void;
  resolve: () => void;
  reject: (err: unknown) => void;
}

class JournaledState implements StateStore {
  private readonly records: Map<string, VolumeRecord>;
  private queue: QueuedPut[] = [];
  private compactWaiters: Array<{ resolve: () => void; reject: (err: unknown) => void }> = [];
  private draining: Promise<void> | undefined;
  /** Bytes of acknowledged lines: where the next write goes. */
  private journalBytes: number;
  /** A failed write may have left bytes after journalBytes: cut them before writing again. */
  private tailDirty = false;
  private snapshotBytes = 0;
  private compactWanted = false;
  private compactFailedAt = -Infinity;

  constructor(
    private readonly snapshot: Low<StateData>,
    private readonly journal: FileHandle,
    private readonly journalFile: string,
    validBytes: number,
    private readonly warn: StateWarn,
    private readonly secrets: SecretFiles,
    /** Volumes whose records keep their secrets inline (see the top of this file). */
    private readonly inline: Set<string>,
    records: Map<string, VolumeRecord>,
  ) {
    this.records = records;
    this.journalBytes = validBytes;
    this.snapshotBytes = Buffer.byteLength(JSON.stringify(snapshot.data));
  }

  get volumes(): ReadonlyMap<string, VolumeRecord> {
    return this.records;
  }

  put(name: string, record: VolumeRecord | null): Promise<void> {
    // Saying again what is saved changes nothing on disk: such a change (a Mount of an ID that was
    // counted once already) then works on a full state filesystem too.
    const current = this.records.get(name);
    if (record && current && sameRecord(current, record)) return Promise.resolve();
    const inline = this.inline.has(name);
    const entry: JournalEntry = { n: name, r: record && toStored(record, inline) };
    const put: Omit<QueuedPut, 'resolve' | 'reject'> = {
      line: `${JSON.stringify(entry)}\n`,
      apply: () => (record ? this.records.set(name, record) : this.records.delete(name)),
    };
    if (record && !inline && hasSecrets(record.options) && record.options !== current?.options) {
      // A new volume (options never change otherwise): its secrets are on disk before its record.
      put.prepare = () => this.secrets.write(name, secretsOf(record.options)).catch((err: unknown) => {
        throw describeWriteError(err, path.join(this.secrets.dir, `${name}.json`));
      });
      put.undo = () => this.secrets.remove(name);
    } else if (!record && current && hasSecrets(current.options)) {
      put.after = inline
        ? async () => {
            // The journal and snapshot still hold the keys: only a rewrite of everything forgets them.
            this.inline.delete(name);
            this.compactWanted = true;
          }
        : () => this.secrets.remove(name);
    }
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ ...put, resolve, reject });
      this.draining ??= this.drain();
    });
  }

  async flush(): Promise<void> {
    while (this.draining) await this.draining;
  }

  /** Queued like a put, so that no append runs while the snapshot is taken and the journal emptied. */
  compact(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.compactWaiters.push({ resolve, reject });
      this.draining ??= this.drain();
    });
  }

  async close(): Promise<void> {
    await this.flush();
    await this.journal.close();
  }

  /**
   * Writes what is queued, in batches: callers that arrive during a sync share the next one.
   * `draining` is cleared with no await between the last check for work and the clearing, so a
   * put() either finds a drain that will take its line or starts one.
   */
  private async drain(): Promise<void> {
    await Promise.resolve(); // let the caller store this promise in `draining` first
    while (this.queue.length > 0 || this.compactWaiters.length > 0) {
      const batch = await this.prepared(this.queue);
      this.queue = [];
      if (batch.length > 0) {
        try {
          await this.append(batch.map((b) => b.line).join(''));
          for (const b of batch) b.apply();
          await this.afterAppend(batch); // a Remove answers once its keys are gone
          for (const b of batch) b.resolve();
        } catch (err) {
          await Promise.all(batch.map((b) => b.undo?.().catch(() => undefined))); // a start deletes what stays
          for (const b of batch) b.reject(err);
        }
      }
      const waiters = this.compactWaiters;
      this.compactWaiters = [];
      const wanted = this.compactWanted || this.journalBytes > Math.max(MIN_COMPACT_BYTES, this.snapshotBytes);
      if (waiters.length > 0 || (wanted && performance.now() - this.compactFailedAt > COMPACT_RETRY_MS)) {
        try {
          await this.compactNow();
          this.compactWanted = false;
          for (const w of waiters) w.resolve();
        } catch (err) {
          // The journal still holds everything: only the snapshot is older. Tried again later.
          this.compactFailedAt = performance.now();
          this.compactWanted = waiters.length > 0 || this.compactWanted;
          if (waiters.length === 0) this.warn({ err: (err as Error).message }, 'state snapshot not written; the journal keeps every change');
          for (const w of waiters) w.reject(err);
        }
      }
    }
    this.draining = undefined;
  }

  /** The puts whose secrets file could be written; the others are refused here, with nothing kept. */
  private async prepared(batch: QueuedPut[]): Promise<QueuedPut[]> {
    const outcomes = await Promise.allSettled(batch.map((b) => b.prepare?.()));
    return batch.filter((b, i) => {
      const o = outcomes[i]!;
      if (o.status === 'rejected') b.reject(o.reason);
      return o.status === 'fulfilled';
    });
  }

  /** The secrets files of removed volumes; one that cannot be deleted now is deleted by the next start. */
  private async afterAppend(batch: QueuedPut[]): Promise<void> {
    await Promise.all(
      batch.map((b) =>
        b.after?.().catch((err: Error) => this.warn({ err: err.message }, 'secrets file of a removed volume not deleted; the next start deletes it')),
      ),
    );
  }

  /** Writes `lines` at the end of the acknowledged journal; on any failure, cuts the journal back. */
  private async append(lines: string): Promise<void> {
    const data = Buffer.from(lines);
    try {
      if (this.tailDirty) {
        await this.journal.truncate(this.journalBytes);
        this.tailDirty = false;
      }
      this.tailDirty = true;
      let written = 0;
      while (written < data.length) {
        const { bytesWritten } = await this.journal.write(data, written, data.length - written, this.journalBytes + written);
        written += bytesWritten;
      }
      await this.journal.datasync();
      this.tailDirty = false;
      this.journalBytes += data.length;
    } catch (err) {
      // Shrinking needs no space: this normally works even on a full filesystem. If it does not,
      // tailDirty stays set and the next write tries again before anything is appended.
      await this.journal
        .truncate(this.journalBytes)
        .then(() => (this.tailDirty = false))
        .catch(() => undefined);
      throw describeWriteError(err, this.journalFile);
    }
  }

  /** A new snapshot of everything, then an empty journal. Runs only between appends. */
  private async compactNow(): Promise<void> {
    this.snapshot.data = {
      version: 1,
      volumes: Object.fromEntries([...this.records].map(([n, r]) => [n, toStored(r, this.inline.has(n))])),
    };
    await this.snapshot.write();
    this.snapshotBytes = Buffer.byteLength(JSON.stringify(this.snapshot.data));
    await this.journal.truncate(0);
    await this.journal.sync();
    this.journalBytes = 0;
    this.tailDirty = false;
  }
}

/**
 * Loads the state (snapshot and journal) and opens the journal for writing. Needs no free space:
 * a torn last line is cut off (shrinking a file), and a new snapshot is only attempted, when a
 * journal was found, after which the journal is emptied.
 */
export async function openState(stateDir: string, opts: StateOptions = {}): Promise<StateStore> {
  const warn = opts.warn ?? (() => undefined);
  await ensureDir(stateDir, 0o700);
  const snapshot = await readSnapshot(stateDir);
  const journalFile = path.join(stateDir, JOURNAL_FILE);
  const text = await readJournal(journalFile);
  const replay = replayJournal(snapshot.data.volumes, text);
  for (const d of replay.damaged) {
    warn(
      { journal: journalFile, line: d.line },
      d.recovered
        ? 'damaged state journal line (a write that failed half-way, before version 0.2): the entry after the damage was recovered'
        : 'damaged state journal line skipped: it held no complete entry',
    );
  }
  const journal = await (opts.openJournal ?? openJournalFile)(journalFile);
  try {
    const stats = await journal.stat();
    if (stats.size > replay.validBytes) await journal.truncate(replay.validBytes);
    const dir = await open(stateDir, 'r');
    try {
      await dir.sync(); // the journal's directory entry, if it was just created
    } finally {
      await dir.close();
    }
  } catch (err) {
    await journal.close();
    throw err;
  }
  const secrets = new SecretFiles(stateDir);
  const { records, inline, moved } = await withSecrets(snapshot.data.volumes, secrets, warn);
  const store = new JournaledState(snapshot, journal, journalFile, replay.validBytes, warn, secrets, inline, records);
  if (replay.validBytes > 0 || moved.length > 0) {
    await store.compact().catch((err: Error) => {
      // The files still hold the moved keys inline: such a volume's Remove must rewrite them.
      for (const name of moved) inline.add(name);
      warn({ err: err.message }, 'state snapshot not written at start (is the state filesystem full?); the journal keeps every change');
    });
  }
  return store;
}

/**
 * The records as the driver holds them, each with its secrets from its file. On the way: files
 * that no record holds are deleted (a crash between a secrets file and its journal line), and
 * secrets that records of older versions hold inline are moved to files (`moved`: a snapshot
 * without them is due). A volume whose file could not be written keeps its secrets inline.
 */
async function withSecrets(
  stored: Record<string, StoredRecord>,
  files: SecretFiles,
  warn: StateWarn,
): Promise<{ records: Map<string, VolumeRecord>; inline: Set<string>; moved: string[] }> {
  const onDisk = await files.readAll();
  const records = new Map<string, VolumeRecord>();
  const inline = new Set<string>();
  const moved: string[] = [];
  for (const [name, r] of Object.entries(stored)) {
    if (r.secretsFile) {
      const secrets = onDisk.get(name);
      if (!secrets) warn({ volume: name, dir: files.dir }, 'the secrets file of a volume with inline keys is missing; its mounts will ask for credentials');
      records.set(name, fromStored(r, secrets));
    } else if (hasSecrets(r.options)) {
      const saved = await files.write(name, secretsOf(r.options)).then(
        () => true,
        (err: Error) => (warn({ volume: name, err: err.message }, 'inline keys not moved to a secrets file; the state keeps them'), false),
      );
      if (saved) moved.push(name);
      else inline.add(name);
      records.set(name, fromStored(r));
    } else {
      records.set(name, fromStored(r));
    }
  }
  const orphans = [...onDisk.keys()].filter((n) => !records.has(n) || inline.has(n)).map((n) => `${n}.json`);
  for (const f of [...orphans, ...(await files.leftovers())]) {
    await files.removeFile(f).catch((err: Error) => warn({ file: f, err: err.message }, 'secrets file of no volume not deleted'));
  }
  return { records, inline, moved };
}

/** Whether two records say the same: saving the second would change nothing on disk. */
function sameRecord(a: VolumeRecord, b: VolumeRecord): boolean {
  if (a.mounts.size !== b.mounts.size) return false;
  for (const [id, n] of a.mounts) if (b.mounts.get(id) !== n) return false;
  return (
    a.name === b.name &&
    a.createdAt === b.createdAt &&
    a.options === b.options &&
    a.mounted === b.mounted &&
    a.since === b.since &&
    a.boot === b.boot &&
    a.lastError?.message === b.lastError?.message &&
    a.lastError?.at === b.lastError?.at
  );
}

/** References held over all mount IDs. */
export function countRefs(mounts: ReadonlyMap<string, number>): number {
  let n = 0;
  for (const c of mounts.values()) n += c;
  return n;
}

export function refCount(v: VolumeRecord): number {
  return countRefs(v.mounts);
}
