/**
 * A host's own metrics history, in a SQLite file of its own beside the node's databases. Two
 * ring tables: 10-second points for 24 hours and 5-minute points for 30 days. A point's row is
 * keyed by `slot = floor(t / step) mod slots`, so a series never holds more rows than its
 * ring has slots: a new point overwrites the one a whole ring period older.
 *
 * The 5-minute ring is fed from the 10-second samples as they come (the average of the rates,
 * the last of the gauges, see samples.ts); a 5-minute point is written when its interval is
 * over. A series is a VM (`vm:NAME`) or the host (`host`).
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { ensurePrivateFileSync } from "../../core/store/permissions.ts";
import { combine, type FieldKind, type Fields } from "./samples.ts";

/** One ring table: points `stepMs` apart, `slots` of them. */
export interface Ring {
  readonly table: string;
  readonly stepMs: number;
  readonly slots: number;
}

export const FINE: Ring = { table: "ring_10s", stepMs: 10_000, slots: 8_640 };
export const COARSE: Ring = { table: "ring_5m", stepMs: 300_000, slots: 8_640 };

/** How far back each ring reaches. */
export function spanMs(ring: Ring): number {
  return ring.stepMs * ring.slots;
}

/** A point of a series: its time (ms, the start of its interval) and its fields. */
export interface Point {
  t: number;
  fields: Fields;
}

interface Pending {
  bucket: number;
  samples: Fields[];
  kinds: Record<string, FieldKind>;
}

export class MetricsHistory {
  readonly #db: DatabaseSync;
  readonly #put = new Map<string, StatementSync>();
  readonly #read = new Map<string, StatementSync>();
  /** Per series, the 10-second samples of the 5-minute interval still open. */
  readonly #pending = new Map<string, Pending>();

  /** @param path the SQLite file (created when missing); ":memory:" for tests */
  constructor(path: string) {
    // It names the host's VMs and what they do: private, as the node's other databases are.
    if (path !== ":memory:") ensurePrivateFileSync(path);
    this.#db = new DatabaseSync(path);
    // History is rebuilt by sampling: losing the last writes in a crash costs a point or two.
    this.#db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;");
    for (const ring of [FINE, COARSE]) {
      this.#db.exec(
        `CREATE TABLE IF NOT EXISTS ${ring.table} (series TEXT NOT NULL, slot INTEGER NOT NULL,
          t INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (series, slot)) WITHOUT ROWID`,
      );
      this.#put.set(
        ring.table,
        this.#db.prepare(
          `INSERT OR REPLACE INTO ${ring.table} (series, slot, t, data) VALUES (?, ?, ?, ?)`,
        ),
      );
      this.#read.set(
        ring.table,
        this.#db.prepare(
          `SELECT t, data FROM ${ring.table} WHERE series = ? AND t >= ? AND t <= ? ORDER BY t`,
        ),
      );
    }
  }

  /**
   * Records a 10-second sample of `series` taken at `t`, and the 5-minute point of the
   * interval before when `t` starts a new one.
   */
  record(series: string, t: number, fields: Fields, kinds: Record<string, FieldKind>): void {
    this.#write(FINE, series, t, fields);
    const bucket = Math.floor(t / COARSE.stepMs);
    const open = this.#pending.get(series);
    if (open && open.bucket !== bucket) this.#flush(series, open);
    if (!open || open.bucket !== bucket) {
      this.#pending.set(series, { bucket, samples: [fields], kinds });
    } else open.samples.push(fields);
  }

  /** Forgets the open interval of a series that is no longer sampled (its VM left). */
  endSeries(series: string): void {
    const open = this.#pending.get(series);
    if (open) this.#flush(series, open);
    this.#pending.delete(series);
  }

  /**
   * The points of `series` from `from` to `to` (ms) from `ring`, each `stepMs` apart (a
   * multiple of the ring's step) and combined from the ring's points in it.
   */
  query(
    series: string,
    opts: { ring: Ring; from: number; to: number; stepMs: number },
    kinds: Record<string, FieldKind>,
  ): Point[] {
    const rows = this.#read.get(opts.ring.table)!.all(series, opts.from, opts.to) as {
      t: number;
      data: string;
    }[];
    const out: Point[] = [];
    let bucket: number | null = null;
    let group: Fields[] = [];
    const emit = () => {
      if (bucket !== null) out.push({ t: bucket * opts.stepMs, fields: combine(group, kinds) });
    };
    for (const row of rows) {
      const b = Math.floor(Number(row.t) / opts.stepMs);
      if (b !== bucket) {
        emit();
        bucket = b;
        group = [];
      }
      group.push(JSON.parse(row.data) as Fields);
    }
    emit();
    return out;
  }

  /** Rows of a ring (all series): what the bounded-size tests count. */
  rowCount(ring: Ring): number {
    const r = this.#db.prepare(`SELECT count(*) AS n FROM ${ring.table}`).get() as { n: number };
    return Number(r.n);
  }

  /**
   * Deletes the points older than each ring's span: the rows of series that stopped (a VM
   * that left the host) are never overwritten by their slot, so they go by age.
   */
  prune(now: number): void {
    for (const ring of [FINE, COARSE]) {
      this.#db.prepare(`DELETE FROM ${ring.table} WHERE t < ?`).run(now - spanMs(ring));
    }
  }

  /** Closes the database (the node stops). */
  close(): void {
    this.#db.close();
  }

  #flush(series: string, open: Pending): void {
    this.#write(COARSE, series, open.bucket * COARSE.stepMs, combine(open.samples, open.kinds));
  }

  #write(ring: Ring, series: string, t: number, fields: Fields): void {
    const slot = Math.floor(t / ring.stepMs) % ring.slots;
    this.#put.get(ring.table)!.run(series, slot, t, JSON.stringify(fields));
  }
}
