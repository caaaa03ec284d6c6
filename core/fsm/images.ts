/** Images VMs boot from: a kernel (+ initrd) or a disk, with the nodes that hold the blobs. */
import { ConflictError, NotFoundError } from "../errors/mod.ts";
import type { Command, ImageRecord, ImageSpec } from "./commands.ts";
import * as vms from "./vms.ts";
import {
  type Applied,
  applied,
  iso,
  RecordCache,
  type Resource,
  type Row,
  type Store,
} from "./store.ts";

const TABLE = {
  name: "images",
  ddl:
    `CREATE TABLE IF NOT EXISTS images (name TEXT PRIMARY KEY, data TEXT NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL);`,
};

function toImageRecord(r: Row): ImageRecord {
  return {
    ...(JSON.parse(String(r.data)) as ImageSpec),
    createdAt: iso(r.created_at),
    createdBy: String(r.created_by),
  };
}

export function all(s: Store): ImageRecord[] {
  return (s.sql("SELECT * FROM images ORDER BY name").all() as Row[]).map(toImageRecord);
}

/** Images as last read (frozen); create and delete forget their row. */
const byName = new RecordCache<ImageRecord>(256);

export function get(s: Store, name: string): ImageRecord | null {
  return byName.get(s, name, () => {
    const row = s.sql("SELECT * FROM images WHERE name = ?").get(name) as Row | undefined;
    return row ? toImageRecord(row) : null;
  });
}

function create(s: Store, c: Extract<Command, { op: "image.create" }>): Applied {
  const { image } = c;
  if (get(s, image.name)) throw new ConflictError(`image "${image.name}" already exists`);
  byName.forget(s, image.name);
  s.sql("INSERT INTO images (name, data, created_at, created_by) VALUES (?, ?, ?, ?)")
    .run(image.name, JSON.stringify(image), c.at, c.by);
  return applied(get(s, image.name), { resource: "image", name: image.name });
}

function remove(s: Store, c: Extract<Command, { op: "image.delete" }>): Applied {
  const { name } = c;
  if (!get(s, name)) throw new NotFoundError("image", name);
  const users = vms.all(s).filter((v) => v.image === name).map((v) => v.name);
  if (users.length) {
    throw new ConflictError(`image "${name}" is used by VMs: ${users.join(", ")}`, {
      vms: users,
    });
  }
  byName.forget(s, name);
  s.sql("DELETE FROM images WHERE name = ?").run(name);
  return applied({ deleted: name }, { resource: "image", name });
}

/** Images. */
export const resource: Resource<"image.create" | "image.delete"> = {
  tables: [TABLE],
  appliers: { "image.create": create, "image.delete": remove },
};
