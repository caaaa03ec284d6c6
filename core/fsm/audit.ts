/**
 * The audit log in replicated state: who did what to which resource, when,
 * from where, and with what result: every mutating API request (failed ones
 * too) and every action the cluster takes on its own (HA restart, fencing,
 * rebalance move, drain step).
 *
 * Records reach the log in batches: each node buffers what it saw and
 * proposes one `audit.append` command per batch (core/cluster/audit.ts). So
 * a record is not in the same Raft entry as the change it describes; it
 * follows it. A node that crashes between answering a request and its flush
 * loses that request's record: on the leader the window is the next Ready
 * batch (the record is proposed as soon as the response is built), on a
 * follower up to the flush interval (~100 ms) plus the round trip to the
 * leader, and longer while no leader is reachable (the buffer is capped;
 * `novactl_audit_dropped_total` counts what it dropped).
 *
 * Retention is applied while applying, with the command's own timestamp
 * (chosen by its proposer and carried in the log), so every replica keeps
 * exactly the same rows: `audit.keepCount` newest records and none older than
 * `audit.keepDays` (0 = no age limit).
 */
import type { StatementSync } from "node:sqlite";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import * as config from "./config.ts";
import { type Applied, applied, type Resource, type Store } from "./store.ts";

/** One record as a node buffers and proposes it. */
export interface AuditInput {
  /** When it happened (epoch ms, the recording node's clock). */
  at: number;
  /** A token's name, "anonymous" (no valid token), or "system:<component>" (e.g. system:ha). */
  principal: string;
  /** The token's role; null for anonymous and system records. */
  role: string | null;
  /** The client's address; for system records the node that acted. */
  source: string;
  /** The node that served the request or took the action. */
  node: string;
  /** The request's id (its `x-request-id`); null for system records. */
  requestId: string | null;
  /** HTTP method, or "SYSTEM" for actions the cluster took on its own. */
  method: string;
  /** The route pattern (`/api/v1/vms/:name/start`), or the action (`ha.restart`). */
  route: string;
  /** The request path; "" for system records. */
  path: string;
  /** What it acted on, as kind/name (`vm/web1`, `node/n2`); null when unknown. */
  resource: string | null;
  /** The HTTP status answered; null for system records. */
  code: number | null;
  /** How long the request took (0 for system records). */
  ms: number;
  /** Free text: why the cluster acted, or what failed. */
  detail?: string | null;
}

/** A stored record: its position in the log (increasing in commit order) and its fields. */
export interface AuditEntry extends Required<AuditInput> {
  id: number;
}

/** The replicated command carrying one batch of records. */
export interface AuditAppend {
  op: "audit.append";
  records: AuditInput[];
  /** Stamped by the proposer; retention is computed from it. */
  at: number;
}

/** Filters of {@link list}. */
export interface AuditQuery {
  /** Only records at or after this time (epoch ms). */
  since?: number;
  /** Exact principal name. */
  principal?: string;
  /** `kind/name` exactly, or a bare `kind` (every record about that kind). */
  resource?: string;
  /** At most this many (newest first); capped at {@link MAX_LIST} + 1 (a page and a peek). */
  limit?: number;
  /** Only records older than this `[at, id]` (the last of the previous page). */
  before?: readonly [number, number];
}

/** The retention settings (config keys `audit.keepCount` and `audit.keepDays`). */
export interface AuditRetention {
  keepCount: number;
  keepDays: number;
}

/** The retention settings in force (defaults for versions written before they existed). */
export function retention(s: Store): AuditRetention {
  const cfg = config.settings(s);
  return {
    keepCount: cfg["audit.keepCount"] ?? DEFAULT_CONFIG["audit.keepCount"],
    keepDays: cfg["audit.keepDays"] ?? DEFAULT_CONFIG["audit.keepDays"],
  };
}

function applyAppend(s: Store, c: AuditAppend): Applied {
  return applied(append(s, c, retention(s)), { resource: "audit" });
}

/** Records per `audit.append`: more are refused (a node never proposes more per batch). */
export const MAX_RECORDS_PER_APPEND = 1000;
/** The most records one read returns. */
export const MAX_LIST = 10_000;
/** Longest stored text field; longer ones are cut (the same way on every replica). */
export const MAX_FIELD_CHARS = 512;

/** The table, as the state machine creates and snapshots it. */
export const TABLE = {
  name: "audit",
  ddl: `CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at INTEGER NOT NULL,
  principal TEXT NOT NULL, role TEXT, source TEXT NOT NULL, node TEXT NOT NULL, request_id TEXT,
  method TEXT NOT NULL, route TEXT NOT NULL, path TEXT NOT NULL, resource TEXT, code INTEGER,
  ms INTEGER NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);`,
};

/** What the audit functions need of the state machine's database. */
export interface AuditStore {
  sql(text: string): StatementSync;
}

const DAY_MS = 86_400_000;

/**
 * Applies an `audit.append`: stores the records in order, then prunes.
 * Deterministic: it reads no clock and no local state but the table itself.
 * @returns how many records were stored.
 */
export function append(s: AuditStore, cmd: AuditAppend, keep: AuditRetention): {
  appended: number;
} {
  if (!Array.isArray(cmd.records) || cmd.records.length > MAX_RECORDS_PER_APPEND) {
    throw new TypeError(`audit.append takes 0..${MAX_RECORDS_PER_APPEND} records`);
  }
  const insert = s.sql(
    `INSERT INTO audit (at, principal, role, source, node, request_id, method, route, path,
       resource, code, ms, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  for (const r of cmd.records) {
    insert.run(
      int(r.at),
      text(r.principal),
      textOrNull(r.role),
      text(r.source),
      text(r.node),
      textOrNull(r.requestId),
      text(r.method),
      text(r.route),
      text(r.path),
      textOrNull(r.resource),
      r.code === null || r.code === undefined ? null : int(r.code),
      Math.max(0, int(r.ms)),
      textOrNull(r.detail),
    );
  }
  prune(s, cmd.at, keep);
  return { appended: cmd.records.length };
}

/** The id range, read on every append (exported so a test can check that it reads no table). */
export const SPAN_SQL =
  "SELECT (SELECT MIN(id) FROM audit) AS lo, (SELECT MAX(id) FROM audit) AS hi";

/**
 * Removes records beyond the retention settings, as of `at`. The count rule
 * runs only once the table holds {@link PRUNE_SLACK} records too many, so the
 * (linear) offset scan is paid once per batch of that size, not on every append.
 */
export function prune(s: AuditStore, at: number, keep: AuditRetention): void {
  if (keep.keepDays > 0) {
    s.sql("DELETE FROM audit WHERE at < ?").run(at - keep.keepDays * DAY_MS);
  }
  // One aggregate per SELECT: SQLite reads MIN or MAX alone off the index, both together by a scan.
  const span = s.sql(SPAN_SQL).get() as {
    lo: number | null;
    hi: number | null;
  };
  // Ids only grow and only old rows go, so hi - lo + 1 bounds the count from above.
  if (span.hi === null || span.hi - span.lo! + 1 <= keep.keepCount + slackOf(keep.keepCount)) {
    return;
  }
  const count = (s.sql("SELECT COUNT(*) AS n FROM audit").get() as { n: number }).n;
  if (count <= keep.keepCount + slackOf(keep.keepCount)) return;
  s.sql(
    "DELETE FROM audit WHERE id IN (SELECT id FROM audit ORDER BY id DESC LIMIT -1 OFFSET ?)",
  ).run(keep.keepCount);
}

/** Records kept beyond keepCount before the count rule prunes (1 %, at most 1000). */
export const PRUNE_SLACK = 1000;

function slackOf(keepCount: number): number {
  return Math.min(PRUNE_SLACK, Math.floor(keepCount / 100));
}

/** Records matching `q`, newest first (by time, then by log position). */
export function list(s: AuditStore, q: AuditQuery = {}): AuditEntry[] {
  const where: string[] = [];
  const args: (string | number)[] = [];
  if (q.since !== undefined) {
    where.push("at >= ?");
    args.push(q.since);
  }
  if (q.principal !== undefined) {
    where.push("principal = ?");
    args.push(q.principal);
  }
  if (q.resource !== undefined) {
    if (q.resource.includes("/")) {
      where.push("resource = ?");
      args.push(q.resource);
    } else {
      where.push("(resource = ? OR substr(resource, 1, ?) = ?)");
      args.push(q.resource, q.resource.length + 1, q.resource + "/");
    }
  }
  if (q.before !== undefined) {
    // The bare range on `at` lets SQLite start the index scan at the page's edge.
    where.push("at <= ? AND (at < ? OR id < ?)");
    args.push(q.before[0], q.before[0], q.before[1]);
  }
  // One past MAX_LIST: a full page and whether another follows (api/pagination.ts).
  const limit = Math.max(1, Math.min(MAX_LIST + 1, Math.floor(q.limit ?? 100)));
  const sql = `SELECT * FROM audit ${where.length ? "WHERE " + where.join(" AND ") : ""}
    ORDER BY at DESC, id DESC LIMIT ${limit}`;
  return (s.sql(sql).all(...args) as Record<string, unknown>[]).map(toEntry);
}

/** How many records are stored. */
export function count(s: AuditStore): number {
  return (s.sql("SELECT COUNT(*) AS n FROM audit").get() as { n: number }).n;
}

function toEntry(r: Record<string, unknown>): AuditEntry {
  return {
    id: Number(r.id),
    at: Number(r.at),
    principal: String(r.principal),
    role: (r.role as string | null) ?? null,
    source: String(r.source),
    node: String(r.node),
    requestId: (r.request_id as string | null) ?? null,
    method: String(r.method),
    route: String(r.route),
    path: String(r.path),
    resource: (r.resource as string | null) ?? null,
    code: r.code === null ? null : Number(r.code),
    ms: Number(r.ms),
    detail: (r.detail as string | null) ?? null,
  };
}

/** A finite integer, or a malformed-command TypeError (rejected the same way everywhere). */
function int(v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new TypeError(`audit record: expected a number, got ${typeof v}`);
  }
  return Math.round(v);
}

function text(v: unknown): string {
  if (typeof v !== "string") throw new TypeError(`audit record: expected text, got ${typeof v}`);
  return v.length > MAX_FIELD_CHARS ? v.slice(0, MAX_FIELD_CHARS) : v;
}

function textOrNull(v: unknown): string | null {
  return v === null || v === undefined ? null : text(v);
}

/** The audit log: its table and the `audit.append` applier. */
export const resource: Resource<"audit.append"> = {
  tables: [TABLE],
  appliers: { "audit.append": applyAppend },
};
