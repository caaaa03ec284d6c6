/**
 * Durable Raft storage in SQLite: entries, hard state and the latest snapshot.
 *
 * The whole live log (firstIndex..lastIndex) is mirrored in memory so the
 * core's frequent term()/entries() lookups never hit the disk; SQLite (WAL,
 * synchronous=FULL) is the durable copy written once per Ready — that single
 * transaction is the one fsync a batch of proposals costs — by a worker
 * thread, so the node keeps serving while the disk syncs (see log_writer.ts).
 *
 * Snapshot data is never held in memory: it lives in a file in `snapshots/`
 * (written by the state machine, or received from the leader in chunks) that
 * the in-memory Snapshot names in `file`; a row in SQLite records which one
 * is current, and is written only after the file is durably in place.
 */
import { DatabaseSync } from "node:sqlite";
import { LogWriter, type WriteBatch } from "./log_writer.ts";
import { renameDurably, TEMP_PREFIX, writeFileDurably } from "./files.ts";
import { ensurePrivateFileSync } from "./permissions.ts";
import { basename, dirname, join } from "node:path";
import {
  CompactedError,
  type ConfState,
  type Entry,
  type HardState,
  type Snapshot,
  type Storage,
} from "../raft/types.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hard_state (id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER NOT NULL, vote TEXT, commit_idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL, term INTEGER NOT NULL, conf TEXT NOT NULL, file TEXT NOT NULL);
`;

const EMPTY_SNAPSHOT: Snapshot = {
  meta: { index: 0, term: 0, conf: { voters: [], learners: [] } },
  data: "",
};

export class SqliteRaftLog implements Storage {
  private readonly writer: LogWriter;
  private hard: HardState = { term: 0, vote: null, commit: 0 };
  private snap: Snapshot = EMPTY_SNAPSHOT;
  /** entries[i] has index snap.meta.index + 1 + i. */
  private log: Entry[] = [];

  /** Snapshot data lives in files beside the database: large, written once, read rarely. */
  private readonly snapDir: string;

  constructor(path: string) {
    this.snapDir = join(dirname(path), "snapshots");
    Deno.mkdirSync(this.snapDir, { recursive: true });
    this.removeUnfinishedSnapshotFiles();
    ensurePrivateFileSync(path); // else SQLite creates it (and its -wal/-shm) 0644
    const db = new DatabaseSync(path);
    try {
      db.exec("PRAGMA journal_mode=WAL;");
      db.exec(SCHEMA);
      this.load(db);
    } finally {
      db.close();
    }
    this.writer = new LogWriter(path);
  }

  /** Reads the durable state into memory (once, at open). */
  private load(db: DatabaseSync): void {
    const h = db.prepare("SELECT term, vote, commit_idx FROM hard_state WHERE id = 1").get() as
      | { term: number; vote: string | null; commit_idx: number }
      | undefined;
    if (h) this.hard = { term: h.term, vote: h.vote, commit: h.commit_idx };
    const s = db.prepare("SELECT idx, term, conf, file FROM snapshot WHERE id = 1").get() as
      | { idx: number; term: number; conf: string; file: string }
      | undefined;
    if (s) {
      // Only the file's name is kept: the data is streamed from it when needed.
      const file = join(this.snapDir, s.file);
      this.snapBytes = Deno.statSync(file).size;
      this.snap = {
        meta: { index: s.idx, term: s.term, conf: JSON.parse(s.conf) },
        data: "",
        file,
      };
    }
    const rows = db.prepare(
      "SELECT idx, term, type, data FROM entries WHERE idx > ? ORDER BY idx",
    )
      .all(this.snap.meta.index) as unknown as {
        idx: number;
        term: number;
        type: string;
        data: string;
      }[];
    this.log = [];
    for (const r of rows) {
      if (r.idx !== this.snap.meta.index + 1 + this.log.length) break; // a gap can only follow a torn write; ignore the tail
      this.log.push({ index: r.idx, term: r.term, type: r.type as Entry["type"], data: r.data });
      this.logBytes += r.data.length;
    }
  }

  /** Payload bytes of the entries after the snapshot (what a compaction would drop). */
  private logBytes = 0;
  /** Size of the current snapshot's data. */
  private snapBytes = 0;

  /** Where snapshot files live; received snapshots are written here too (same file system). */
  get snapshotDir(): string {
    return this.snapDir;
  }

  snapshotBytes(): number {
    return this.snapBytes;
  }

  /** The file the snapshot with `meta` is kept in once installed. */
  snapshotPath(meta: { index: number; term: number }): string {
    return join(this.snapDir, snapshotFileName(meta));
  }

  /** A fresh name for a snapshot being written locally (removed at startup if left over). */
  tempSnapshotPath(): string {
    return join(this.snapDir, `${TEMP_PREFIX}${crypto.randomUUID()}`);
  }

  /** Leftovers of a crash while writing or receiving a snapshot. */
  private removeUnfinishedSnapshotFiles(): void {
    for (const f of Deno.readDirSync(this.snapDir)) {
      if (f.name.startsWith(TEMP_PREFIX) || f.name.startsWith(RECEIVED_PREFIX)) {
        Deno.removeSync(join(this.snapDir, f.name));
      }
    }
  }

  bytesAfterSnapshot(): number {
    return this.logBytes;
  }

  /** True when nothing was ever stored (a brand-new data dir). */
  isEmpty(): boolean {
    return this.hard.term === 0 && this.snap.meta.index === 0 && this.log.length === 0;
  }

  /**
   * Membership the core starts from must match the state machine's applied
   * index (conf entries after it are re-delivered and re-applied by the core),
   * so the driver supplies it; the snapshot's conf is the fallback.
   */
  confAtApplied: (() => ConfState) | null = null;

  initialState(): { hardState: HardState; conf: ConfState } {
    const conf = this.confAtApplied?.() ?? structuredClone(this.snap.meta.conf);
    return { hardState: { ...this.hard }, conf };
  }

  firstIndex(): number {
    return this.snap.meta.index + 1;
  }

  lastIndex(): number {
    return this.snap.meta.index + this.log.length;
  }

  term(i: number): number {
    if (i === this.snap.meta.index) return this.snap.meta.term;
    if (i < this.snap.meta.index) throw new CompactedError(i);
    const e = this.log[i - this.snap.meta.index - 1];
    if (!e) throw new RangeError(`log entry ${i} is beyond the last index ${this.lastIndex()}`);
    return e.term;
  }

  entries(lo: number, hi: number, maxBytes?: number): Entry[] {
    if (lo <= this.snap.meta.index) throw new CompactedError(lo);
    if (hi > this.lastIndex() + 1) {
      throw new RangeError(`entries [${lo}, ${hi}) beyond ${this.lastIndex()}`);
    }
    const base = this.snap.meta.index + 1;
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.log[i - base];
      bytes += e.data.length + 32;
      if (maxBytes !== undefined && out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  hardState(): HardState {
    return { ...this.hard };
  }

  /**
   * Records what a Ready asks for: the in-memory mirror changes at once (the
   * core may read it), the returned promise resolves when the same changes
   * are durable. Writes are applied in call order.
   */
  save(
    rd: { snapshot: Snapshot | null; entries: Entry[]; hardState: HardState | null },
  ): Promise<void> {
    if (!rd.snapshot && rd.entries.length === 0 && !rd.hardState) return Promise.resolve();
    const batch: WriteBatch = { sync: this.mustSync(rd) };
    if (rd.snapshot) this.installSnapshot(rd.snapshot, true, batch);
    if (rd.entries.length) this.appendEntries(rd.entries, batch);
    if (rd.hardState) {
      this.hard = { ...rd.hardState };
      batch.hardState = [rd.hardState.term, rd.hardState.vote, rd.hardState.commit];
    }
    if (!rd.snapshot) return this.writer.write(batch);
    const snap = rd.snapshot;
    return this.placeSnapshotFile(snap).then(() => this.writer.write(batch)).then(() =>
      this.removeOldSnapshotFiles()
    );
  }

  /**
   * The commit index is written without fsync, so after a power loss it can
   * trail what the state machine already applied; applied entries were
   * committed, so the commit index may be raised to them.
   */
  raiseCommitTo(index: number): void {
    if (index > this.hard.commit && index <= this.lastIndex()) {
      this.hard = { ...this.hard, commit: index };
    }
  }

  /** Entries, snapshots, term and vote must be on disk before we act on them; the commit index need not. */
  private mustSync(
    rd: { snapshot: Snapshot | null; entries: Entry[]; hardState: HardState | null },
  ): boolean {
    if (rd.snapshot || rd.entries.length) return true;
    const h = rd.hardState;
    return h !== null && (h.term !== this.hard.term || h.vote !== this.hard.vote);
  }

  private appendEntries(entries: Entry[], batch: WriteBatch): void {
    entries = entries.filter((e) => e.index > this.snap.meta.index);
    if (!entries.length) return;
    const start = entries[0].index;
    if (start > this.lastIndex() + 1) {
      throw new RangeError(`log gap: appending ${start} after ${this.lastIndex()}`);
    }
    if (start <= this.lastIndex()) batch.truncateFrom = start;
    batch.entries = entries.map((e) => [e.index, e.term, e.type, e.data]);
    const keep = start - this.snap.meta.index - 1;
    for (let i = keep; i < this.log.length; i++) this.logBytes -= this.log[i].data.length;
    this.log.length = keep;
    for (const e of entries) {
      this.log.push(e);
      this.logBytes += e.data.length;
    }
  }

  /**
   * Installs a snapshot. A received snapshot (`discardLog`) replaces the whole
   * log unless our log already contains the snapshot's entry with the same term.
   */
  private installSnapshot(s: Snapshot, discardLog: boolean, batch: WriteBatch): void {
    const m = s.meta;
    batch.snapshot = {
      index: m.index,
      term: m.term,
      conf: JSON.stringify(m.conf),
      file: snapshotFileName(m),
    };
    const keepsTail = !discardLog || this.hasEntry(m.index, m.term);
    const installed: Snapshot = { meta: m, data: "", file: this.snapshotPath(m) };
    if (keepsTail) {
      batch.dropEntries = m.index;
      this.log = this.log.filter((e) => e.index > m.index);
      this.logBytes = this.log.reduce((n, e) => n + e.data.length, 0);
    } else {
      batch.dropEntries = "all";
      this.log = [];
      this.logBytes = 0;
    }
    this.snap = installed;
    this.snapBytes = s.file ? fileSize(s.file) : s.data.length;
  }

  private hasEntry(index: number, term: number): boolean {
    if (index <= this.snap.meta.index || index > this.lastIndex()) return false;
    return this.term(index) === term;
  }

  /**
   * Local log compaction: records a snapshot of the state machine taken at
   * `index` (which must be applied) and drops the entries it covers. Peers
   * that lag behind it catch up through InstallSnapshot.
   */
  compact(index: number, conf: ConfState, file: string, bytes: number): Promise<void> {
    if (index <= this.snap.meta.index) return Deno.remove(file).catch(() => {});
    if (index > this.lastIndex()) throw new RangeError(`cannot compact beyond ${this.lastIndex()}`);
    const batch: WriteBatch = { sync: true };
    const snap: Snapshot = { meta: { index, term: this.term(index), conf }, data: "", file };
    this.installSnapshot(snap, false, batch);
    this.snapBytes = bytes;
    const installed = this.snap;
    return this.placeSnapshotFile(snap).then(() => {
      // A snapshot received meanwhile is newer: recording ours would roll it back.
      if (this.snap !== installed) return;
      return this.writer.write(batch).then(() => this.removeOldSnapshotFiles());
    });
  }

  /**
   * Puts the snapshot's data at its final path, durably, before the row that
   * names it is written: a file (written or received) is renamed there, inline
   * data (bootstrap) is written there.
   */
  /** Received snapshot files being renamed to their final path right now. */
  private readonly placing = new Set<string>();

  private async placeSnapshotFile(snap: Snapshot): Promise<void> {
    const dest = this.snapshotPath(snap.meta);
    if (snap.file === undefined) return await writeFileDurably(dest, snap.data);
    if (snap.file === dest) return;
    this.placing.add(snap.file);
    try {
      await renameDurably(snap.file, dest);
    } finally {
      this.placing.delete(snap.file);
    }
  }

  /**
   * Removes snapshots older than the current one, and received snapshots the
   * core refused (they are not newer than what we hold, so never installed).
   */
  private async removeOldSnapshotFiles(): Promise<void> {
    const keep = basename(this.snap.file ?? snapshotFileName(this.snap.meta));
    for await (const f of Deno.readDir(this.snapDir)) {
      // A received file still on its way to its final name is the newest snapshot, not stale.
      if (f.name === keep || this.placing.has(join(this.snapDir, f.name))) continue;
      const stale = f.name.startsWith("snap-") ||
        (f.name.startsWith(RECEIVED_PREFIX) &&
          receivedSnapshotIndex(f.name) <= this.snap.meta.index);
      if (stale) await Deno.remove(join(this.snapDir, f.name)).catch(() => {});
    }
  }

  /** Waits for pending writes and closes the log. */
  async close(): Promise<void> {
    await this.writer.close();
  }
}

/** Prefix of snapshots received from the leader, before the core installs them. */
export const RECEIVED_PREFIX = "recv-";

function snapshotFileName(meta: { index: number; term: number }): string {
  return `snap-${meta.term}-${meta.index}.snap`;
}

/** Name of a fully received snapshot file: its index is in it, for clean-up. */
export function receivedSnapshotName(meta: { index: number; term: number }): string {
  return `${RECEIVED_PREFIX}${meta.term}-${meta.index}.snap`;
}

function fileSize(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    throw err;
  }
}

function receivedSnapshotIndex(name: string): number {
  const m = /^recv-\d+-(\d+)\.snap$/.exec(name);
  // Partial transfers have no index: they are only removed at startup or by the receiver.
  return m ? Number(m[1]) : Infinity;
}
