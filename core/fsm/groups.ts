/** Placement groups (affinity / anti-affinity between VMs). */
import { ConflictError } from "../errors/mod.ts";
import type { Command, PlacementGroup } from "./commands.ts";
import * as vms from "./vms.ts";
import { type Applied, applied, type Resource, type Row, type Store } from "./store.ts";

const TABLE = {
  name: "groups",
  ddl:
    `CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, data TEXT NOT NULL, created_at INTEGER NOT NULL);`,
};

export function get(s: Store, name: string): PlacementGroup | null {
  const row = s.sql("SELECT data FROM groups WHERE name = ?").get(name) as Row | undefined;
  return row ? JSON.parse(String(row.data)) : null;
}

export function all(s: Store): PlacementGroup[] {
  return (s.sql("SELECT data FROM groups ORDER BY name").all() as Row[]).map((r) =>
    JSON.parse(String(r.data))
  );
}

function create(s: Store, c: Extract<Command, { op: "group.create" }>): Applied {
  if (get(s, c.group.name)) throw new ConflictError(`group "${c.group.name}" already exists`);
  s.sql("INSERT INTO groups (name, data, created_at) VALUES (?, ?, ?)").run(
    c.group.name,
    JSON.stringify(c.group),
    c.at,
  );
  return applied(c.group, { resource: "group", name: c.group.name });
}

function remove(s: Store, c: Extract<Command, { op: "group.delete" }>): Applied {
  const members = vms.all(s).filter((v) => v.group === c.name).map((v) => v.name);
  if (members.length) {
    throw new ConflictError(`group "${c.name}" has members: ${members.join(", ")}`);
  }
  s.sql("DELETE FROM groups WHERE name = ?").run(c.name);
  return applied({ name: c.name, deleted: true }, { resource: "group", name: c.name });
}

/** Placement groups. */
export const resource: Resource<"group.create" | "group.delete"> = {
  tables: [TABLE],
  appliers: { "group.create": create, "group.delete": remove },
};
