/**
 * Long operations (migrations, drains, backups, and VM lifecycle actions: ./vm_operations.ts):
 * progress and outcome, replicated.
 */
import { NotFoundError } from "../errors/mod.ts";
import type { Command, OperationRecord, OperationSpec, OperationState } from "./commands.ts";
import * as config from "./config.ts";
import {
  type Applied,
  applied,
  DAY_MS,
  iso,
  type Resource,
  type Row,
  type Store,
} from "./store.ts";

const TABLE = {
  name: "operations",
  ddl:
    `CREATE TABLE IF NOT EXISTS operations (id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL,
  progress TEXT NOT NULL, result TEXT, error TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
  CREATE INDEX IF NOT EXISTS operations_created ON operations (created_at, id);`,
};

function toOperationRecord(r: Row): OperationRecord {
  return {
    ...(JSON.parse(String(r.spec)) as OperationSpec),
    state: r.state as OperationState,
    progress: JSON.parse(String(r.progress)),
    result: r.result ? JSON.parse(String(r.result)) : null,
    error: (r.error as string | null) ?? null,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

export function get(s: Store, id: string): OperationRecord | null {
  const row = s.sql("SELECT * FROM operations WHERE id = ?").get(id) as Row | undefined;
  return row ? toOperationRecord(row) : null;
}

/** An operation's state alone (a hot path's check: no record parsed), or null when unknown. */
export function stateOf(s: Store, id: string): OperationState | null {
  const row = s.sql("SELECT state FROM operations WHERE id = ?").get(id) as Row | undefined;
  return row ? row.state as OperationState : null;
}

/** The newest 1000 operations, newest first. */
export function all(s: Store): OperationRecord[] {
  return page(s, { limit: 1000 });
}

/** Which operations {@link page} reads. */
export interface OperationPage {
  /** At most this many. */
  limit: number;
  /** Only operations older than `[createdAt (epoch ms), id]`: the last of the previous page. */
  before?: readonly [number, string];
}

/** Operations newest first (by creation time, then id), read off the index a page at a time. */
export function page(s: Store, q: OperationPage): OperationRecord[] {
  const limit = Math.max(1, Math.floor(q.limit));
  const rows = q.before === undefined
    ? s.sql("SELECT * FROM operations ORDER BY created_at DESC, id DESC LIMIT ?").all(limit)
    : s.sql(
      // The bare range on created_at lets SQLite start the index scan at the page's edge.
      `SELECT * FROM operations WHERE created_at <= ? AND (created_at < ? OR id < ?)
       ORDER BY created_at DESC, id DESC LIMIT ?`,
    ).all(q.before[0], q.before[0], q.before[1], limit);
  return (rows as Row[]).map(toOperationRecord);
}

/** The operations still running (bounded: at most one lifecycle operation per VM, and the rare others). */
export function running(s: Store): OperationRecord[] {
  return (s.sql(
    "SELECT * FROM operations WHERE state = 'running' ORDER BY created_at DESC",
  ).all() as Row[]).map(toOperationRecord);
}

/** Records a new running operation (without pruning: see {@link prune}). */
export function insert(s: Store, spec: OperationSpec, at: number): void {
  s.sql(
    "INSERT INTO operations (id, spec, state, progress, result, error, created_at, updated_at) VALUES (?, ?, 'running', '{}', NULL, NULL, ?, ?)",
  ).run(spec.id, JSON.stringify(spec), at, at);
}

/** Ends a running operation (a finished one is immutable: nothing changes then). */
export function finish(
  s: Store,
  id: string,
  state: Exclude<OperationState, "running">,
  outcome: { result?: Record<string, unknown>; error?: string },
  at: number,
): void {
  s.sql(
    "UPDATE operations SET state = ?, result = ?, error = ?, updated_at = ? WHERE id = ? AND state = 'running'",
  ).run(
    state,
    outcome.result ? JSON.stringify(outcome.result) : null,
    outcome.error ?? null,
    at,
    id,
  );
}

function create(s: Store, c: Extract<Command, { op: "operation.create" }>): Applied {
  insert(s, c.operation, c.at);
  prune(s, c.at);
  return applied(get(s, c.operation.id), { resource: "operation", name: c.operation.id });
}

function update(s: Store, c: Extract<Command, { op: "operation.update" }>): Applied {
  const op = get(s, c.id);
  if (!op) throw new NotFoundError("operation", c.id);
  const changed = { resource: "operation", name: c.id } as const;
  if (op.state !== "running") return applied(op, changed); // finished operations are immutable
  s.sql(
    "UPDATE operations SET state = ?, progress = ?, result = ?, error = ?, updated_at = ? WHERE id = ?",
  ).run(
    c.state ?? op.state,
    JSON.stringify(c.progress ?? op.progress),
    c.result ? JSON.stringify(c.result) : (op.result ? JSON.stringify(op.result) : null),
    c.error ?? op.error,
    c.at,
    c.id,
  );
  return applied(get(s, c.id), changed);
}

/**
 * Finished operations beyond operations.keepCount, or older than
 * operations.keepDays, go; with the adding command's timestamp, so every
 * replica removes the same rows. Both walk the index of finished operations
 * (operations_done): the age rule from its oldest end, the count rule to the
 * first operation beyond the count (O(keepCount), so hot paths call it only
 * now and then: see core/fsm/vm_operations.ts).
 */
export function prune(s: Store, at: number): void {
  const r = config.retentionOf(config.settings(s));
  if (r.operationDays > 0) {
    s.sql("DELETE FROM operations WHERE state != 'running' AND updated_at < ?")
      .run(at - r.operationDays * DAY_MS);
  }
  const edge = s.sql(
    `SELECT updated_at, id FROM operations WHERE state != 'running'
     ORDER BY updated_at DESC, id DESC LIMIT 1 OFFSET ?`,
  ).get(r.operationCount) as Row | undefined;
  if (!edge) return;
  s.sql(
    `DELETE FROM operations WHERE state != 'running'
     AND (updated_at < ? OR (updated_at = ? AND id <= ?))`,
  ).run(Number(edge.updated_at), Number(edge.updated_at), String(edge.id));
}

/** Operations. */
export const resource: Resource<"operation.create" | "operation.update"> = {
  tables: [TABLE],
  migrate(db) {
    // Running ones, and pruning finished ones: by index, not by a scan and sort of every
    // operation (VM starts and stops are operations too; lists use operations_created).
    db.exec(
      "CREATE INDEX IF NOT EXISTS operations_running ON operations(created_at) WHERE state = 'running'",
    );
    db.exec(
      "CREATE INDEX IF NOT EXISTS operations_done ON operations(updated_at, id) WHERE state != 'running'",
    );
  },
  appliers: { "operation.create": create, "operation.update": update },
};
