/**
 * Storage pools: where VM disks and volumes live. A pool is a driver (`dir`,
 * `shared-dir`, `btrfs`), a path, and optionally the one host that has it.
 * The host side (host/storage/host_pools.ts) turns a record into a backend;
 * nothing here touches a disk.
 *
 * Two pools are built in and are not rows: `dir` (every host's own
 * `DATA_DIR/pool`) and, when `storage.sharedDir` is set, `shared` (that
 * path, mounted on every host). They are what VM disks used before pools
 * were resources (`VmDisk.pool` absent, "dir" or "shared"), so a cluster
 * state written by an older version, or a snapshot of one, needs no
 * conversion: its disks name pools that exist.
 *
 * Capacity is what each host reports in its inventory (`inventory.pools`,
 * replicated, so every replica decides alike); a host that cannot use a pool
 * reports why.
 *
 * Invariants, kept by the appliers:
 * - a pool with VM disks or volumes in it is never deleted;
 * - a btrfs pool has a host (`node`) unless its source is a mount every host has.
 *
 * @module
 */
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import type { Command, PoolHostUsage, PoolSpec } from "./commands.ts";
import * as config from "./config.ts";
import * as nodes from "./nodes.ts";
import { type Applied, applied, type Resource, type Row, type Store } from "./store.ts";
import type { PoolRule } from "../scheduler/types.ts";

/** Pool names: as routers and networks (they appear in paths and logs). */
export const POOL_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** The built-in pools' names: reserved. */
export const BUILTIN_POOLS = ["dir", "shared"] as const;
/** Caps: every pool is measured by its hosts on each inventory refresh. */
export const POOL_LIMITS = { pools: 64, sourceChars: 1024 } as const;

const TABLE = {
  name: "pools",
  ddl: `CREATE TABLE IF NOT EXISTS pools (
    name TEXT PRIMARY KEY, node TEXT, data TEXT NOT NULL, created_at INTEGER NOT NULL);`,
};

/** A pool as stored (or built in). */
export interface PoolRecord extends PoolSpec {
  builtin: boolean;
  createdAt: number;
  by: string;
}

/** A pool with what its hosts report and what the cluster put in it. */
export interface PoolView extends PoolRecord {
  /** Per host: capacity and usage as measured there. */
  hosts: Record<string, PoolHostUsage>;
  /** VM disks and volumes recorded in the pool. */
  vmDisks: number;
  volumes: number;
}

function builtins(s: Store): PoolRecord[] {
  const dir: PoolRecord = {
    name: "dir",
    driver: "dir",
    source: null,
    node: null,
    loop: null,
    builtin: true,
    createdAt: 0,
    by: "system",
  };
  const shared = config.settings(s)["storage.sharedDir"];
  if (!shared) return [dir];
  return [dir, { ...dir, name: "shared", driver: "shared-dir", source: shared }];
}

export function get(s: Store, name: string): PoolRecord | null {
  const b = builtins(s).find((p) => p.name === name);
  if (b) return b;
  const row = s.sql("SELECT data FROM pools WHERE name = ?").get(name) as Row | undefined;
  return row ? JSON.parse(String(row.data)) : null;
}

export function all(s: Store): PoolRecord[] {
  const rows = (s.sql("SELECT data FROM pools ORDER BY name").all() as Row[])
    .map((r) => JSON.parse(String(r.data)) as PoolRecord);
  return [...builtins(s), ...rows];
}

/** The name a disk's pool field stands for (absent: the host's `dir`). */
export function poolNameOf(disk: { pool?: string }): string {
  return disk.pool ?? "dir";
}

/** Whether the pool's files are the same on every host (live migration leaves them in place). */
export function isShared(p: Pick<PoolSpec, "driver">): boolean {
  return p.driver === "shared-dir";
}

/** What host `node` reports for pool `name`; the built-in `dir` also from older inventories. */
export function usageOn(s: Store, name: string, node: string): PoolHostUsage | null {
  const inv = nodes.get(s, node)?.inventory;
  if (!inv) return null;
  const reported = inv.pools?.[name];
  if (reported) return reported;
  if (name === "dir" && inv.pool) {
    // A host from before pools: its `dir` usage, with the disk's size as the total.
    return {
      totalBytes: inv.diskGiB * 2 ** 30,
      freeBytes: inv.pool.freeBytes,
      allocatedBytes: inv.pool.allocatedBytes,
      volumes: inv.pool.volumes,
    };
  }
  return null;
}

/** The hosts that may hold disks of `pool`: its own, or every registered host. */
export function hostsOf(s: Store, pool: PoolRecord): string[] {
  return pool.node !== null ? [pool.node] : nodes.names(s);
}

/**
 * How many bytes a new volume of `pool` may take on `node`: the free space
 * the host reports, times `storage.overcommit`; null when the host reports
 * nothing usable for it (with the reason).
 */
export function roomOn(
  s: Store,
  pool: PoolRecord,
  node: string,
): { bytes: number } | { error: string } {
  const u = usageOn(s, pool.name, node);
  if (!u) return { error: `host ${node} has not reported pool "${pool.name}"` };
  if (u.error) return { error: `pool "${pool.name}" on ${node}: ${u.error}` };
  return { bytes: Math.floor(u.freeBytes * config.settings(s)["storage.overcommit"]) };
}

/**
 * Throws unless a new disk of `bytes` fits in `pool` on `node` (the field
 * named in the refusal is `field`).
 */
export function assertRoom(
  s: Store,
  pool: PoolRecord,
  node: string,
  bytes: number,
  field: string,
): void {
  const room = roomOn(s, pool, node);
  if ("error" in room) throw new ConflictError(`${field}: ${room.error}`, { field });
  if (bytes > room.bytes) {
    throw new ConflictError(
      `${field}: ${gib(bytes)} GiB requested, pool "${pool.name}" has ${
        gib(room.bytes)
      } GiB free on ${node} (storage.overcommit=${config.settings(s)["storage.overcommit"]})`,
      { field, pool: pool.name, node, freeBytes: room.bytes, requestedBytes: bytes },
    );
  }
}

function gib(bytes: number): string {
  return (bytes / 2 ** 30).toFixed(2);
}

/** VM disks (from the VM records) and volumes recorded in `name`. */
function users(s: Store, name: string): { vmDisks: number; volumes: number; vms: string[] } {
  const vms: string[] = [];
  let vmDisks = 0;
  for (const r of s.sql("SELECT name, spec FROM vms ORDER BY name").all() as Row[]) {
    const disks = (JSON.parse(String(r.spec)).disks ?? []) as {
      pool?: string;
      source: { kind: string };
    }[];
    const here = disks.filter((d) => poolNameOf(d) === name && d.source.kind !== "attached");
    if (here.length) {
      vmDisks += here.length;
      vms.push(String(r.name));
    }
  }
  const volumes = Number(
    (s.sql("SELECT COUNT(*) AS n FROM volumes WHERE pool = ?").get(name) as Row).n,
  );
  return { vmDisks, volumes, vms };
}

export function view(s: Store, p: PoolRecord): PoolView {
  const hosts: Record<string, PoolHostUsage> = {};
  for (const n of hostsOf(s, p)) {
    const u = usageOn(s, p.name, n);
    if (u) hosts[n] = u;
  }
  const { vmDisks, volumes } = users(s, p.name);
  return { ...p, hosts, vmDisks, volumes };
}

/**
 * What the pools of `disks` ask of a VM's host (core/scheduler): their one host
 * when they have one, and with `checkRoom` the free space for the disks in each
 * created pool (the built-in ones are counted by the hosts' disk capacity).
 */
export function rulesFor(
  s: Store,
  disks: readonly { pool?: string; sizeBytes: number }[],
  checkRoom: boolean,
): PoolRule[] {
  const bytes = new Map<string, number>();
  for (const d of disks) bytes.set(poolNameOf(d), (bytes.get(poolNameOf(d)) ?? 0) + d.sizeBytes);
  const rules: PoolRule[] = [];
  for (const [name, total] of bytes) {
    const p = get(s, name);
    if (!p || p.builtin) continue;
    const room = checkRoom && !isShared(p)
      ? Object.fromEntries(
        hostsOf(s, p).map((n) => {
          const r = roomOn(s, p, n);
          return [n, "error" in r ? r.error : r.bytes];
        }),
      )
      : null;
    if (p.node === null && room === null) continue;
    rules.push({ pool: name, node: p.node, bytes: total, room });
  }
  return rules;
}

/** Read-only access for callers outside the state machine (API, hosts, scheduler). */
export interface PoolReads {
  get(name: string): PoolRecord | null;
  all(): PoolRecord[];
  view(name: string): PoolView | null;
  /** Throws unless `bytes` more fit in `pool` on `node` (see {@link assertRoom}). */
  assertRoom(pool: PoolRecord, node: string, bytes: number, field: string): void;
  roomOn(pool: PoolRecord, node: string): { bytes: number } | { error: string };
  /** Whether a disk's pool is shared by every host (a live migration leaves it in place). */
  isSharedDisk(disk: { pool?: string }): boolean;
  /** See {@link rulesFor}. */
  rulesFor(disks: readonly { pool?: string; sizeBytes: number }[], checkRoom: boolean): PoolRule[];
}

export function readsOf(s: Store): PoolReads {
  return {
    get: (name) => get(s, name),
    all: () => all(s),
    view: (name) => {
      const p = get(s, name);
      return p ? view(s, p) : null;
    },
    assertRoom: (pool, node, bytes, field) => assertRoom(s, pool, node, bytes, field),
    roomOn: (pool, node) => roomOn(s, pool, node),
    rulesFor: (disks, checkRoom) => rulesFor(s, disks, checkRoom),
    isSharedDisk: (disk) => {
      // `shared` means the shared path even while storage.sharedDir is unset (as before pools).
      const p = get(s, poolNameOf(disk));
      return poolNameOf(disk) === "shared" || (p !== null && isShared(p));
    },
  };
}

// ---- checks ----------------------------------------------------------------------------

/**
 * Throws a ValidationError naming the field unless `p` is a well-formed pool:
 * shared by the API (before any host work) and the applier.
 */
export function checkSpec(p: PoolSpec): void {
  if (!POOL_NAME.test(p.name)) {
    throw ValidationError.field("name", "lowercase letters, digits and '-' (1-63 chars)");
  }
  if ((BUILTIN_POOLS as readonly string[]).includes(p.name)) {
    throw ValidationError.field("name", `"${p.name}" is a built-in pool's name`);
  }
  if (p.source === null || !p.source.startsWith("/") || p.source.length > POOL_LIMITS.sourceChars) {
    throw ValidationError.field("source", "an absolute path is required");
  }
  if (/[\p{Cc}]/u.test(p.source) || p.source.split("/").includes("..")) {
    throw ValidationError.field("source", "must not contain control characters or '..'");
  }
  if (p.driver === "shared-dir" && p.node !== null) {
    throw ValidationError.field("node", "a shared-dir pool is on every host; leave --node out");
  }
  if (p.loop) {
    if (p.driver !== "btrfs") {
      throw ValidationError.field("size", "only a btrfs pool makes a loop image");
    }
    if (p.node === null) {
      throw ValidationError.field("node", "a loop-backed btrfs pool lives on one host: --node");
    }
  }
}

// ---- appliers ---------------------------------------------------------------------------

function create(s: Store, c: Extract<Command, { op: "pool.create" }>): Applied {
  const p = c.pool;
  checkSpec(p);
  if (get(s, p.name)) {
    throw new ConflictError(`name: pool "${p.name}" already exists`, { field: "name" });
  }
  if (p.node !== null && !nodes.get(s, p.node)) {
    throw ValidationError.field("node", `no node named "${p.node}"`);
  }
  const same = all(s).find((o) =>
    o.source === p.source && (o.node ?? p.node) === (p.node ?? o.node)
  );
  if (same) {
    throw new ConflictError(`source: pool "${same.name}" already uses ${p.source}`, {
      field: "source",
    });
  }
  const count = Number((s.sql("SELECT COUNT(*) AS n FROM pools").get() as Row).n);
  if (count >= POOL_LIMITS.pools) throw new ConflictError(`at most ${POOL_LIMITS.pools} pools`);
  const record: PoolRecord = {
    name: p.name,
    driver: p.driver,
    source: p.source,
    node: p.node,
    loop: p.loop,
    builtin: false,
    createdAt: c.at,
    by: c.by,
  };
  s.sql("INSERT INTO pools (name, node, data, created_at) VALUES (?, ?, ?, ?)").run(
    p.name,
    p.node,
    JSON.stringify(record),
    c.at,
  );
  return applied(record, { resource: "pool", name: p.name });
}

function remove(s: Store, c: Extract<Command, { op: "pool.delete" }>): Applied {
  const p = get(s, c.name);
  if (!p) throw new NotFoundError("pool", c.name);
  if (p.builtin) throw new ConflictError(`pool "${c.name}" is built in and cannot be deleted`);
  const u = users(s, c.name);
  if (u.vmDisks || u.volumes) {
    throw new ConflictError(
      `pool "${c.name}" holds ${u.vmDisks} VM disk(s)${
        u.vms.length ? ` (${u.vms.slice(0, 10).join(", ")})` : ""
      } and ${u.volumes} volume(s); delete them first`,
      { vms: u.vms, volumes: u.volumes },
    );
  }
  s.sql("DELETE FROM pools WHERE name = ?").run(c.name);
  return applied({ name: c.name, deleted: true }, { resource: "pool", name: c.name });
}

/** Storage pools (the built-in ones are not rows). */
export const resource: Resource<"pool.create" | "pool.delete"> = {
  tables: [TABLE],
  appliers: { "pool.create": create, "pool.delete": remove },
};
