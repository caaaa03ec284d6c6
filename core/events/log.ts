/**
 * The event log: the events derived from applied entries (derive.ts), kept in
 * the state machine's database in the same transaction as the entry that made
 * them, and replicated the same way as any other table (snapshots carry it).
 * So every node holds the same events under the same ids, and a client can
 * resume on any node.
 *
 * Ids are `<raftIndex>-<n>`: the entry's log index and the event's position
 * among that entry's events. They only grow, in commit order.
 *
 * Retention: the newest `events.keepCount` events (cluster config, default
 * 10,000), pruned while applying, so every replica keeps the same rows. One
 * more row is kept, the newest pruned one's place holder: a client whose last
 * id is at or after the oldest row resumes without loss; one whose last id is
 * older gets a gap (see {@link EventReads.window}).
 */
import { DEFAULT_CONFIG } from "../config/mod.ts";
import * as config from "../fsm/config.ts";
import type { Resource, Row, Store } from "../fsm/store.ts";
import type { EventDraft, EventType } from "./derive.ts";

/** An event as stored and as streamed. */
export interface ClusterEvent {
  /** `<raftIndex>-<n>`; what `Last-Event-ID` names to resume after it. */
  id: string;
  type: EventType;
  action: string;
  kind: string;
  resource: string;
  target: string | null;
  /** ISO time by the proposer's clock; null when the entry carried none. */
  at: string | null;
  details: Record<string, unknown>;
}

/** A position in the log: an event id, parsed. */
export interface EventPosition {
  index: number;
  n: number;
}

/** What a reader asks for: some types, one resource (by name, `kind/name`, or an operation's target). */
export interface EventFilter {
  types?: readonly EventType[];
  resource?: string;
}

/** The table, as the state machine creates and snapshots it. */
export const TABLE = {
  name: "events",
  ddl: `CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, idx INTEGER NOT NULL,
  n INTEGER NOT NULL, type TEXT NOT NULL, action TEXT NOT NULL, kind TEXT NOT NULL,
  resource TEXT NOT NULL, target TEXT, at INTEGER, details TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS events_pos ON events (idx, n);`,
};

/** The event log's table (no commands of its own: events come from every other command). */
export const resource: Resource = { tables: [TABLE], appliers: {} };

/** Longest text kept in an event's string fields (the same cut on every replica). */
export const MAX_TEXT = 512;

/** `events.keepCount` in force. */
export function keepCount(s: Store): number {
  return config.settings(s)["events.keepCount"] ?? DEFAULT_CONFIG["events.keepCount"];
}

/**
 * Stores the events of the entry at `index` (in order, numbered from 0) and
 * prunes beyond `keep`. Deterministic: reads nothing but the table.
 */
export function append(s: Store, index: number, drafts: EventDraft[], keep: number): void {
  if (!drafts.length) return;
  const insert = s.sql(
    `INSERT INTO events (seq, idx, n, type, action, kind, resource, target, at, details)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const last = s.sql("SELECT MAX(seq) AS hi FROM events").get() as { hi: number | null };
  let seq = last.hi ?? 0;
  drafts.forEach((d, n) => {
    insert.run(
      ++seq,
      index,
      n,
      d.type,
      cut(d.action),
      cut(d.kind),
      cut(d.resource),
      d.target === null ? null : cut(d.target),
      d.at === null || !Number.isFinite(d.at) ? null : Math.round(d.at),
      JSON.stringify(d.details, (_k, v) => typeof v === "string" ? cut(v) : v),
    );
  });
  // keep + 1: the oldest row only marks where a lossless resume may start.
  s.sql("DELETE FROM events WHERE seq <= ?").run(seq - keep - 1);
}

function cut(s: string): string {
  return s.length > MAX_TEXT ? s.slice(0, MAX_TEXT) : s;
}

/** Parses an event id (`12-0`); null when it is not one. */
export function parseEventId(id: string): EventPosition | null {
  const m = /^(\d{1,15})-(\d{1,9})$/.exec(id.trim());
  return m ? { index: Number(m[1]), n: Number(m[2]) } : null;
}

/** `a` before `b`. */
export function before(a: EventPosition, b: EventPosition): boolean {
  return a.index < b.index || (a.index === b.index && a.n < b.n);
}

/** What a reader sees of the log. */
export interface EventReads {
  /**
   * Up to `limit` events after `after` (from the oldest kept when null) that match `filter`,
   * in order; `scanned`: the position they were looked for up to (the newest event when fewer
   * than `limit` came back), to go on from.
   */
  after(
    after: EventPosition | null,
    filter: EventFilter,
    limit: number,
  ): { events: ClusterEvent[]; scanned: EventPosition | null };
  /** The newest `limit` events matching `filter`, in order. */
  tail(filter: EventFilter, limit: number): ClusterEvent[];
  /** The oldest and newest kept positions (null when there are no events). */
  window(): { oldest: EventPosition; newest: EventPosition } | null;
  /** How many events are kept. */
  count(): number;
}

/** The reads of the log over `s`. */
export function readsOf(s: Store): EventReads {
  const position = (sql: string): EventPosition | null => {
    const r = s.sql(sql).get() as { idx: number; n: number } | undefined;
    return r ? { index: r.idx, n: r.n } : null;
  };
  const newest = () => position("SELECT idx, n FROM events ORDER BY seq DESC LIMIT 1");
  return {
    after(after, filter, limit) {
      const where = filterSql(filter);
      if (after) {
        where.terms.unshift("(idx > ? OR (idx = ? AND n > ?))");
        where.args.unshift(after.index, after.index, after.n);
      }
      const rows = s.sql(
        `SELECT * FROM events ${where.terms.length ? `WHERE ${where.terms.join(" AND ")}` : ""}
         ORDER BY idx, n LIMIT ?`,
      ).all(...where.args, limit) as Row[];
      const events = rows.map(toEvent);
      const last = rows.length
        ? { index: Number(rows.at(-1)!.idx), n: Number(rows.at(-1)!.n) }
        : null;
      if (rows.length >= limit) return { events, scanned: last };
      const top = newest();
      const scanned = top && (!after || before(after, top)) ? top : after;
      return { events, scanned };
    },
    tail(filter, limit) {
      const where = filterSql(filter);
      const rows = s.sql(
        `SELECT * FROM events ${where.terms.length ? `WHERE ${where.terms.join(" AND ")}` : ""}
         ORDER BY seq DESC LIMIT ?`,
      ).all(...where.args, limit) as Row[];
      return rows.reverse().map(toEvent);
    },
    window() {
      const oldest = position("SELECT idx, n FROM events ORDER BY seq LIMIT 1");
      const top = newest();
      return oldest && top ? { oldest, newest: top } : null;
    },
    count() {
      return (s.sql("SELECT COUNT(*) AS n FROM events").get() as { n: number }).n;
    },
  };
}

function filterSql(f: EventFilter): { terms: string[]; args: (string | number)[] } {
  const terms: string[] = [];
  const args: (string | number)[] = [];
  if (f.types?.length) {
    terms.push(`type IN (${f.types.map(() => "?").join(", ")})`);
    args.push(...f.types);
  }
  if (f.resource !== undefined) {
    terms.push("(resource = ? OR kind || '/' || resource = ? OR target = ?)");
    args.push(f.resource, f.resource, f.resource);
  }
  return { terms, args };
}

function toEvent(r: Row): ClusterEvent {
  return {
    id: `${r.idx}-${r.n}`,
    type: r.type as EventType,
    action: String(r.action),
    kind: String(r.kind),
    resource: String(r.resource),
    target: (r.target as string | null) ?? null,
    at: r.at === null ? null : new Date(Number(r.at)).toISOString(),
    details: JSON.parse(String(r.details)),
  };
}
