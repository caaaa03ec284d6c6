/**
 * Durable Raft storage in SQLite: entries, hard state and the latest snapshot.
 *
 * The whole live log (firstIndex..lastIndex) is mirrored in memory so the
 * core's frequent term()/entries() lookups never hit the disk; SQLite (WAL,
 * synchronous=FULL) is the durable copy written once per Ready — that single
 * transaction is the one fsync a batch of proposals costs — by a worker
 * thread, so the node keeps serving while the disk syncs (see log_writer.ts).
 */
import { DatabaseSync } from "node:sqlite";
import { LogWriter, type WriteBatch } from "./log_writer.ts";
import { writeFileDurably } from "./files.ts";
import { dirname, join } from "node:path";
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
      const data = Deno.readTextFileSync(join(this.snapDir, s.file));
      this.snap = { meta: { index: s.idx, term: s.term, conf: JSON.parse(s.conf) }, data };
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
    return this.writeSnapshotFile(snap).then(() => this.writer.write(batch)).then(() =>
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
      file: snapshotFileName(s),
    };
    const keepsTail = !discardLog || this.hasEntry(m.index, m.term);
    if (keepsTail) {
      batch.dropEntries = m.index;
      this.log = this.log.filter((e) => e.index > m.index);
      this.logBytes = this.log.reduce((n, e) => n + e.data.length, 0);
    } else {
      batch.dropEntries = "all";
      this.log = [];
      this.logBytes = 0;
    }
    this.snap = s;
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
  compact(index: number, conf: ConfState, data: string): Promise<void> {
    if (index <= this.snap.meta.index) return Promise.resolve();
    if (index > this.lastIndex()) throw new RangeError(`cannot compact beyond ${this.lastIndex()}`);
    const batch: WriteBatch = { sync: true };
    const snap: Snapshot = { meta: { index, term: this.term(index), conf }, data };
    this.installSnapshot(snap, false, batch);
    return this.writeSnapshotFile(snap).then(() => {
      // A snapshot received meanwhile is newer: recording ours would roll it back.
      if (this.snap !== snap) return;
      return this.writer.write(batch).then(() => this.removeOldSnapshotFiles());
    });
  }

  /** The data file is durable before the row that names it is written. */
  private async writeSnapshotFile(snap: Snapshot): Promise<void> {
    await writeFileDurably(join(this.snapDir, snapshotFileName(snap)), snap.data);
  }

  private async removeOldSnapshotFiles(): Promise<void> {
    const keep = snapshotFileName(this.snap);
    for await (const f of Deno.readDir(this.snapDir)) {
      if (f.name !== keep && f.name.startsWith("snap-")) {
        await Deno.remove(join(this.snapDir, f.name)).catch(() => {});
      }
    }
  }

  /** Waits for pending writes and closes the log. */
  async close(): Promise<void> {
    await this.writer.close();
  }
}

function snapshotFileName(s: Snapshot): string {
  return `snap-${s.meta.term}-${s.meta.index}.json`;
}
