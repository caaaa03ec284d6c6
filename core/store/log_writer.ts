/**
 * Durable Raft log writes on a worker thread. SQLite in Deno is synchronous;
 * doing the fsync on the main thread would stop HTTP handling for the length
 * of every sync. The worker owns the only writing connection and applies
 * write batches strictly in the order they were posted.
 *
 * The worker's source is inlined (a Blob URL) so the single-file bundle and
 * compiled binary carry it without a second file.
 */

/** One transaction: what a Ready (or a compaction) changes in the log tables. */
export interface WriteBatch {
  snapshot?: { index: number; term: number; conf: string; file: string };
  /** After installing `snapshot`: delete entries <= this index, or all entries when "all". */
  dropEntries?: number | "all";
  /** Delete entries >= this index before inserting (a conflicting suffix). */
  truncateFrom?: number;
  entries?: [number, number, string, string][];
  hardState?: [number, string | null, number];
  /**
   * False when only the commit index moved: it can be re-learned, so its commit is not
   * fsynced on its own (as etcd); it becomes durable with the next synced batch.
   */
  sync: boolean;
}

const WORKER_SOURCE = `
import { DatabaseSync } from "node:sqlite";
let db, st;
function open(path) {
  db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
  st = {
    insert: db.prepare("INSERT OR REPLACE INTO entries (idx, term, type, data) VALUES (?, ?, ?, ?)"),
    truncateFrom: db.prepare("DELETE FROM entries WHERE idx >= ?"),
    dropUpTo: db.prepare("DELETE FROM entries WHERE idx <= ?"),
    hard: db.prepare("INSERT OR REPLACE INTO hard_state (id, term, vote, commit_idx) VALUES (1, ?, ?, ?)"),
    snap: db.prepare("INSERT OR REPLACE INTO snapshot (id, idx, term, conf, file) VALUES (1, ?, ?, ?, ?)"),
  };
}
// A batch that only moves the commit index is committed with synchronous=NORMAL:
// in WAL mode that skips the fsync of this commit only. The WAL is append-only and
// checksummed frame by frame, so a power loss can lose at most a suffix of commits;
// the next FULL commit fsyncs the whole WAL, this one included. Checkpoints (which
// SQLite runs inside commits) still fsync the WAL before copying it into the database
// and the database before reusing the WAL, so synced entries and votes are never lost
// or torn. (OFF, used before, also skipped those checkpoint fsyncs: a checkpoint could
// reuse the WAL while the database pages it copied were still only in the page cache.)
function write(b) {
  if (!b.sync) db.exec("PRAGMA synchronous=NORMAL");
  try {
    writeTx(b);
  } finally {
    if (!b.sync) db.exec("PRAGMA synchronous=FULL");
  }
}
function writeTx(b) {
  db.exec("BEGIN IMMEDIATE");
  try {
    if (b.snapshot) st.snap.run(b.snapshot.index, b.snapshot.term, b.snapshot.conf, b.snapshot.file);
    if (b.dropEntries === "all") db.exec("DELETE FROM entries");
    else if (b.dropEntries !== undefined) st.dropUpTo.run(b.dropEntries);
    if (b.truncateFrom !== undefined) st.truncateFrom.run(b.truncateFrom);
    if (b.entries) for (const e of b.entries) st.insert.run(e[0], e[1], e[2], e[3]);
    if (b.hardState) st.hard.run(b.hardState[0], b.hardState[1], b.hardState[2]);
    db.exec("COMMIT");
  } catch (err) {
    db.exec("ROLLBACK");
    throw err;
  }
}
self.onmessage = (ev) => {
  const { id, op, arg } = ev.data;
  try {
    if (op === "open") open(arg);
    else if (op === "write") write(arg);
    else if (op === "close") { db.close(); }
    self.postMessage({ id, ok: true });
  } catch (err) {
    self.postMessage({ id, ok: false, error: String(err && err.stack || err) });
  }
};
`;

export class LogWriter {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private failed: Error | null = null;

  constructor(path: string) {
    const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "application/javascript" }));
    this.worker = new Worker(url, { type: "module" });
    URL.revokeObjectURL(url);
    this.worker.onmessage = (ev: MessageEvent<{ id: number; ok: boolean; error?: string }>) => {
      const p = this.pending.get(ev.data.id);
      if (!p) return;
      this.pending.delete(ev.data.id);
      if (ev.data.ok) p.resolve();
      else p.reject(this.fail(new Error(`raft log write failed: ${ev.data.error}`)));
    };
    this.worker.onerror = (ev) => {
      ev.preventDefault();
      const err = this.fail(new Error(`raft log writer crashed: ${ev.message}`));
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    void this.call("open", path);
  }

  private fail(err: Error): Error {
    this.failed ??= err;
    return err;
  }

  private call(op: string, arg?: unknown): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const id = ++this.nextId;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, arg });
    });
  }

  /** Resolves once the batch is committed and synced to disk. */
  write(batch: WriteBatch): Promise<void> {
    return this.call("write", batch);
  }

  /** Waits for every posted write, then closes the database and the worker. */
  async close(): Promise<void> {
    try {
      await this.call("close");
    } finally {
      this.worker.terminate();
    }
  }
}
