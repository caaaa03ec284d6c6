/**
 * Volumes: disks that exist on their own in a pool and are attached to VMs
 * (core/fsm/vm_disks.ts) as needed, as Incus's custom volumes. A VM's own
 * disks (its root disk, made by `vm create`) stay part of its record.
 *
 * A volume is recorded only once its host made it (the API runs the request
 * on the host that holds the pool, which then proposes `volume.create`), so a
 * record always has its file; when the proposal is refused the host removes
 * what it made. Deletion goes the other way: the record first (refused while
 * attached), then the file.
 *
 * Invariants, kept by the appliers:
 * - a volume is attached to at most one VM, and that VM lists it as a disk
 *   (`source.kind === "attached"`, `volume` = its name);
 * - a volume of a host-local pool (`node` set) is attached only to a VM on
 *   that host; a migration that moves the VM moves the volume's `node` along.
 *
 * @module
 */
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import type { Command, VolumeSpec } from "./commands.ts";
import * as images from "./images.ts";
import * as pools from "./pools.ts";
import { type Applied, applied, type Resource, type Row, type Store } from "./store.ts";

/** Volume names: as pool names (they are file and subvolume names on hosts). */
export const VOLUME_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Caps on the number of volumes (each is measured by its host's inventory pass). */
export const VOLUME_LIMITS = {
  volumes: 100_000,
  maxBytes: 64 * 2 ** 40,
  minBytes: 2 ** 20,
} as const;

const TABLE = {
  name: "volumes",
  ddl: `CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY, pool TEXT NOT NULL, node TEXT, attached_to TEXT, data TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS volumes_pool ON volumes (pool);
    CREATE INDEX IF NOT EXISTS volumes_attached ON volumes (attached_to);`,
};

/** A volume as recorded. */
export interface VolumeRecord extends VolumeSpec {
  /** The VM it is attached to, or null. */
  attachedTo: string | null;
  createdAt: number;
  by: string;
}

function toRecord(r: Row): VolumeRecord {
  return {
    ...(JSON.parse(String(r.data)) as VolumeRecord),
    node: r.node === null ? null : String(r.node),
    attachedTo: r.attached_to === null ? null : String(r.attached_to),
  };
}

export function get(s: Store, name: string): VolumeRecord | null {
  const row = s.sql("SELECT * FROM volumes WHERE name = ?").get(name) as Row | undefined;
  return row ? toRecord(row) : null;
}

export function all(s: Store): VolumeRecord[] {
  return (s.sql("SELECT * FROM volumes ORDER BY name").all() as Row[]).map(toRecord);
}

/** Read-only access for callers outside the state machine. */
export interface VolumeReads {
  get(name: string): VolumeRecord | null;
  all(): VolumeRecord[];
  /** Throws a ValidationError naming the field unless `v` could be created; its pool. */
  check(v: VolumeSpec): pools.PoolRecord;
}

export function readsOf(s: Store): VolumeReads {
  return { get: (name) => get(s, name), all: () => all(s), check: (v) => checkSpec(s, v) };
}

/**
 * Throws a ValidationError naming the field unless `v` is well-formed and its
 * pool, host and image exist: shared by the API (before the host makes the
 * file) and the applier.
 */
export function checkSpec(s: Store, v: VolumeSpec): pools.PoolRecord {
  if (!VOLUME_NAME.test(v.name)) {
    throw ValidationError.field("name", "lowercase letters, digits and '-' (1-63 chars)");
  }
  checkSize(v.sizeBytes);
  const pool = pools.get(s, v.pool);
  if (!pool) throw ValidationError.field("pool", `no pool named "${v.pool}"`);
  if (pools.isShared(pool)) {
    if (v.node !== null) {
      throw ValidationError.field("node", `pool "${pool.name}" is shared; leave --node out`);
    }
  } else if (pool.node !== null && v.node !== null && v.node !== pool.node) {
    throw ValidationError.field("node", `pool "${pool.name}" is on ${pool.node}, not ${v.node}`);
  } else if (pool.node === null && v.node === null) {
    throw ValidationError.field(
      "node",
      `pool "${pool.name}" is local to each host: say which host holds the volume (--node)`,
    );
  }
  if (v.fromImage !== null) {
    const img = images.get(s, v.fromImage);
    if (!img) throw ValidationError.field("fromImage", `no image named "${v.fromImage}"`);
    if (img.kind !== "disk") {
      throw ValidationError.field("fromImage", `image "${v.fromImage}" has no disk`);
    }
    if (img.disk!.virtualBytes > v.sizeBytes) {
      throw ValidationError.field(
        "size",
        `image "${v.fromImage}" needs at least ${img.disk!.virtualBytes} bytes`,
      );
    }
  }
  return pool;
}

/** The host a volume of `pool` lives on (`node` as asked for a pool on every host). */
export function hostOf(pool: pools.PoolRecord, node: string | null): string | null {
  return pools.isShared(pool) ? null : pool.node ?? node;
}

export function checkSize(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < VOLUME_LIMITS.minBytes) {
    throw ValidationError.field("size", "must be at least 1 MiB");
  }
  if (bytes > VOLUME_LIMITS.maxBytes) throw ValidationError.field("size", "must be at most 64 TiB");
  if (bytes % 512 !== 0) throw ValidationError.field("size", "must be a multiple of 512 bytes");
}

// ---- appliers ---------------------------------------------------------------------------

function create(s: Store, c: Extract<Command, { op: "volume.create" }>): Applied {
  const pool = checkSpec(s, c.volume);
  const v: VolumeSpec = { ...c.volume, node: hostOf(pool, c.volume.node) };
  if (get(s, v.name)) {
    throw new ConflictError(`name: volume "${v.name}" already exists`, { field: "name" });
  }
  const count = Number((s.sql("SELECT COUNT(*) AS n FROM volumes").get() as Row).n);
  if (count >= VOLUME_LIMITS.volumes) {
    throw new ConflictError(`at most ${VOLUME_LIMITS.volumes} volumes`);
  }
  const record: VolumeRecord = { ...v, attachedTo: null, createdAt: c.at, by: c.by };
  s.sql("INSERT INTO volumes (name, pool, node, attached_to, data) VALUES (?, ?, ?, NULL, ?)").run(
    v.name,
    v.pool,
    v.node,
    JSON.stringify(record),
  );
  return applied(record, { resource: "volume", name: v.name });
}

function save(s: Store, v: VolumeRecord): void {
  s.sql("UPDATE volumes SET node = ?, attached_to = ?, data = ? WHERE name = ?").run(
    v.node,
    v.attachedTo,
    JSON.stringify(v),
    v.name,
  );
}

/**
 * Records a volume's new size (its host grew it already) and, when it is attached, the
 * size of that VM's disk: the hook writes the VM (./vm_disks.ts owns the VM side).
 */
export function resize(
  s: Store,
  c: Extract<Command, { op: "volume.resize" }>,
  onAttached: (vm: string, sizeBytes: number) => void,
): Applied {
  const v = get(s, c.name);
  if (!v) throw new NotFoundError("volume", c.name);
  checkSize(c.sizeBytes);
  if (c.sizeBytes < v.sizeBytes) {
    throw ValidationError.field("size", `cannot shrink ${c.name} below ${v.sizeBytes} bytes`);
  }
  save(s, { ...v, sizeBytes: c.sizeBytes });
  if (v.attachedTo) onAttached(v.attachedTo, c.sizeBytes);
  return applied(get(s, c.name), { resource: "volume", name: c.name });
}

function remove(s: Store, c: Extract<Command, { op: "volume.delete" }>): Applied {
  const v = get(s, c.name);
  if (!v) throw new NotFoundError("volume", c.name);
  if (v.attachedTo) {
    throw new ConflictError(
      `volume "${c.name}" is attached to VM "${v.attachedTo}"; detach it first`,
      { vm: v.attachedTo },
    );
  }
  s.sql("DELETE FROM volumes WHERE name = ?").run(c.name);
  return applied({ name: c.name, deleted: true }, { resource: "volume", name: c.name });
}

/** Marks `volume` attached to `vm` (null: detached). */
export function setAttached(s: Store, volume: string, vm: string | null): void {
  const v = get(s, volume);
  if (v) save(s, { ...v, attachedTo: vm });
}

/** A VM that is gone lets go of its volumes (they stay, detached). */
export function releaseVm(s: Store, vm: string): void {
  for (const r of s.sql("SELECT name FROM volumes WHERE attached_to = ?").all(vm) as Row[]) {
    setAttached(s, String(r.name), null);
  }
}

/** A VM moved to `to`: the host-local volumes attached to it moved with it (migration). */
export function followVm(s: Store, vm: string, to: string): void {
  for (const r of s.sql("SELECT name FROM volumes WHERE attached_to = ?").all(vm) as Row[]) {
    const v = get(s, String(r.name))!;
    if (v.node !== null) save(s, { ...v, node: to });
  }
}

/** Volumes (attach and detach live in ./vm_disks.ts, which also writes the VM). */
export const resource: Resource<"volume.create" | "volume.delete"> = {
  tables: [TABLE],
  appliers: { "volume.create": create, "volume.delete": remove },
};
