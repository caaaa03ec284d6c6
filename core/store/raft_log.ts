/**
 * Durable Raft storage in SQLite: entries, hard state and the latest snapshot.
 *
 * The whole live log (firstIndex..lastIndex) is mirrored in memory so the
 * core's frequent term()/entries() lookups never hit the disk; SQLite (WAL,
 * synchronous=FULL) is the durable copy written once per Ready — that single
 * transaction is the one fsync a batch of proposals costs.
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
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
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL, term INTEGER NOT NULL, conf TEXT NOT NULL, data TEXT NOT NULL);
`;

const EMPTY_SNAPSHOT: Snapshot = {
  meta: { index: 0, term: 0, conf: { voters: [], learners: [] } },
  data: "",
};

export class SqliteRaftLog implements Storage {
  private readonly db: DatabaseSync;
  private hard: HardState = { term: 0, vote: null, commit: 0 };
  private snap: Snapshot = EMPTY_SNAPSHOT;
  /** entries[i] has index snap.meta.index + 1 + i. */
  private log: Entry[] = [];
  private readonly stmts: Record<string, StatementSync>;

  constructor(path: string) {
    this.db = new DatabaseSync(path);
    this.db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
    this.db.exec(SCHEMA);
    this.stmts = {
      insert: this.db.prepare(
        "INSERT OR REPLACE INTO entries (idx, term, type, data) VALUES (?, ?, ?, ?)",
      ),
      truncateFrom: this.db.prepare("DELETE FROM entries WHERE idx >= ?"),
      truncateUpTo: this.db.prepare("DELETE FROM entries WHERE idx <= ?"),
      hard: this.db.prepare(
        "INSERT OR REPLACE INTO hard_state (id, term, vote, commit_idx) VALUES (1, ?, ?, ?)",
      ),
      snap: this.db.prepare(
        "INSERT OR REPLACE INTO snapshot (id, idx, term, conf, data) VALUES (1, ?, ?, ?, ?)",
      ),
    };
    this.load();
  }

  private load(): void {
    const h = this.db.prepare("SELECT term, vote, commit_idx FROM hard_state WHERE id = 1").get() as
      | { term: number; vote: string | null; commit_idx: number }
      | undefined;
    if (h) this.hard = { term: h.term, vote: h.vote, commit: h.commit_idx };
    const s = this.db.prepare("SELECT idx, term, conf, data FROM snapshot WHERE id = 1").get() as
      | { idx: number; term: number; conf: string; data: string }
      | undefined;
    if (s) {
      this.snap = { meta: { index: s.idx, term: s.term, conf: JSON.parse(s.conf) }, data: s.data };
    }
    const rows = this.db.prepare(
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
    }
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

  /** Durably stores what a Ready asks for, in one transaction. */
  save(rd: { snapshot: Snapshot | null; entries: Entry[]; hardState: HardState | null }): void {
    if (!rd.snapshot && rd.entries.length === 0 && !rd.hardState) return;
    this.db.exec("BEGIN IMMEDIATE");
    try {
      if (rd.snapshot) this.writeSnapshot(rd.snapshot, true);
      if (rd.entries.length) this.writeEntries(rd.entries);
      if (rd.hardState) this.writeHardState(rd.hardState);
      this.db.exec("COMMIT");
    } catch (err) {
      this.db.exec("ROLLBACK");
      this.load();
      throw err;
    }
  }

  private writeEntries(entries: Entry[]): void {
    const first = entries[0].index;
    if (first <= this.snap.meta.index) {
      entries = entries.filter((e) => e.index > this.snap.meta.index);
      if (!entries.length) return;
    }
    const start = entries[0].index;
    if (start > this.lastIndex() + 1) {
      throw new RangeError(`log gap: appending ${start} after ${this.lastIndex()}`);
    }
    if (start <= this.lastIndex()) this.stmts.truncateFrom.run(start);
    for (const e of entries) this.stmts.insert.run(e.index, e.term, e.type, e.data);
    this.log.length = start - this.snap.meta.index - 1;
    for (const e of entries) this.log.push(e);
  }

  private writeHardState(h: HardState): void {
    this.stmts.hard.run(h.term, h.vote, h.commit);
    this.hard = { ...h };
  }

  /**
   * Installs a snapshot. A received snapshot (`discardLog`) replaces the whole
   * log unless our log already contains the snapshot's entry with the same term.
   */
  private writeSnapshot(s: Snapshot, discardLog: boolean): void {
    this.stmts.snap.run(s.meta.index, s.meta.term, JSON.stringify(s.meta.conf), s.data);
    const keepsTail = !discardLog || this.hasEntry(s.meta.index, s.meta.term);
    if (keepsTail) {
      this.stmts.truncateUpTo.run(s.meta.index);
      this.log = this.log.filter((e) => e.index > s.meta.index);
    } else {
      this.db.exec("DELETE FROM entries");
      this.log = [];
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
  compact(index: number, conf: ConfState, data: string): void {
    if (index <= this.snap.meta.index) return;
    if (index > this.lastIndex()) throw new RangeError(`cannot compact beyond ${this.lastIndex()}`);
    const snap: Snapshot = { meta: { index, term: this.term(index), conf }, data };
    this.db.exec("BEGIN IMMEDIATE");
    try {
      this.writeSnapshot(snap, false);
      this.db.exec("COMMIT");
    } catch (err) {
      this.db.exec("ROLLBACK");
      this.load();
      throw err;
    }
  }

  close(): void {
    this.db.close();
  }
}
