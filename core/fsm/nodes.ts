/** Hosts of the cluster: address, labels, inventory and scheduling state. */
import type { Command, Inventory, NodeState } from "./commands.ts";
import { NotFoundError } from "../errors/mod.ts";
import * as nodeMeta from "./node_meta.ts";
import { type Applied, applied, iso, type Resource, type Row, type Store } from "./store.ts";

/** A host as the scheduler and the API see it. */
export interface NodeRecord {
  name: string;
  url: string;
  state: NodeState;
  labels: Record<string, string>;
  inventory: Inventory | null;
  joinedAt: string;
  updatedAt: string;
}

const TABLE = {
  name: "nodes",
  ddl:
    `CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, url TEXT NOT NULL, state TEXT NOT NULL,
  labels TEXT NOT NULL, inventory TEXT NOT NULL, joined_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);`,
};

function toNodeRecord(r: Row): NodeRecord {
  return {
    name: String(r.name),
    url: String(r.url),
    state: r.state as NodeState,
    labels: JSON.parse(String(r.labels)),
    inventory: JSON.parse(String(r.inventory)),
    joinedAt: iso(r.joined_at),
    updatedAt: iso(r.updated_at),
  };
}

export function all(s: Store): NodeRecord[] {
  return (s.sql("SELECT * FROM nodes ORDER BY name").all() as Row[]).map(toNodeRecord);
}

/** How many hosts there are. */
export function count(s: Store): number {
  return Number((s.sql("SELECT COUNT(*) AS n FROM nodes").get() as Row).n);
}

/** Every host's name, in order, without reading its record. */
export function names(s: Store): string[] {
  return (s.sql("SELECT name FROM nodes ORDER BY name").all() as Row[]).map((r) => String(r.name));
}

export function get(s: Store, name: string): NodeRecord | null {
  const row = s.sql("SELECT * FROM nodes WHERE name = ?").get(name) as Row | undefined;
  return row ? toNodeRecord(row) : null;
}

/** Deletes a host's row (node.remove, and a member leaving the Raft group). */
export function deleteRow(s: Store, name: string): void {
  s.sql("DELETE FROM nodes WHERE name = ?").run(name);
  nodeMeta.forget(s, name);
}

function upsert(s: Store, c: Extract<Command, { op: "node.upsert" }>): Applied {
  const existing = get(s, c.name);
  s.sql(
    `INSERT INTO nodes (name, url, state, labels, inventory, joined_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT(name) DO UPDATE SET url = excluded.url, labels = excluded.labels,
       inventory = excluded.inventory, updated_at = excluded.updated_at`,
  ).run(
    c.name,
    c.url,
    existing?.state ?? "ready",
    JSON.stringify(c.labels),
    JSON.stringify(c.inventory),
    c.at,
    c.at,
  );
  return applied(null, { resource: "node", name: c.name });
}

function setState(s: Store, c: Extract<Command, { op: "node.state" }>): Applied {
  const res = s.sql("UPDATE nodes SET state = ?, updated_at = ? WHERE name = ?").run(
    c.state,
    c.at,
    c.name,
  );
  if (Number(res.changes) === 0) throw new NotFoundError("node", c.name);
  return applied({ name: c.name, state: c.state }, { resource: "node", name: c.name });
}

function remove(s: Store, c: Extract<Command, { op: "node.remove" }>): Applied {
  deleteRow(s, c.name);
  return applied(null, { resource: "node", name: c.name });
}

/** Hosts. */
export const resource: Resource<"node.upsert" | "node.state" | "node.remove"> = {
  tables: [TABLE],
  appliers: { "node.upsert": upsert, "node.state": setState, "node.remove": remove },
};
