/**
 * Backups: the replicated index of backup targets (directories every host can
 * write), of the backups in them, and of backup schedules. The backups
 * themselves are self-describing chains in their target (host/backup/): a
 * manifest per backup, qcow2 files and their sha256s. The rows here name
 * each backup, its chain and parent, and the sha256 of its manifest, so a
 * manifest changed behind the cluster's back is detected before it is used.
 *
 * Invariants, kept by the appliers:
 * - a target with backups in it is not deleted;
 * - a backup that is the parent of another is not deleted (chains stay
 *   restorable: every backup's parent exists);
 * - an incremental backup's parent exists, is of the same VM and target.
 *
 * @module
 */
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import { type Applied, applied, type Resource, type Row, type Store } from "./store.ts";

/** Target names: as router names (lowercase, digits, '-'). */
export const BACKUP_TARGET_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Backup ids: `bk-` and 12 hex digits (made by the leader). */
export const BACKUP_ID = /^bk-[0-9a-f]{12}$/;
/** Caps: every row is in every replica and snapshot. */
export const BACKUP_LIMITS = { targets: 64, backups: 100_000, pathChars: 1024 } as const;

/** A backup target: a directory mounted at the same path on every host. */
export interface BackupTargetRecord {
  name: string;
  path: string;
  createdAt: number;
  by: string;
}

/** One disk of a backup, as the index keeps it (the manifest has the checksums). */
export interface BackupDiskRecord {
  id: string;
  /** The qcow2 file in the chain directory. */
  file: string;
  virtualBytes: number;
  fileBytes: number;
  /** Bytes the backup job copied (full: the whole disk; incremental: the dirty blocks). */
  copiedBytes: number;
}

/** A finished backup, recorded by the host that made it. */
export interface BackupRecord {
  id: string;
  vm: string;
  target: string;
  kind: "full" | "incremental";
  /** The backup this one's files are overlays of (null: full). */
  parent: string | null;
  /** The full backup this chain starts with (itself for a full one). */
  chain: string;
  /** The chain's directory inside the target (relative). */
  dir: string;
  /** The manifest's file name in `dir` and its sha256. */
  manifest: string;
  manifestSha256: string;
  disks: BackupDiskRecord[];
  /** Why a backup asked to be incremental was made full ("no bitmap on disk root", ...). */
  fullReason: string | null;
  node: string;
  createdAt: number;
}

/** A VM's backup schedule (run by the leader, core/cluster/backup_scheduler.ts). */
export interface BackupScheduleRecord {
  vm: string;
  cron: string;
  target: string;
  keepLast: number;
  keepDaily: number;
  keepWeekly: number;
  /** The time the schedule was last due (epoch ms; 0: never). */
  lastRunAt: number;
  by: string;
  updatedAt: number;
}

/** Commands of this resource. */
export type BackupCommand =
  | { op: "backup.target.create"; target: { name: string; path: string }; by: string; at: number }
  | { op: "backup.target.delete"; name: string; by: string; at: number }
  | { op: "backup.record"; backup: Omit<BackupRecord, "createdAt">; at: number }
  | { op: "backup.delete"; id: string; by: string; at: number }
  | {
    op: "backup.schedule.set";
    schedule: Omit<BackupScheduleRecord, "lastRunAt" | "updatedAt" | "by">;
    by: string;
    at: number;
  }
  | { op: "backup.schedule.delete"; vm: string; by: string; at: number }
  | { op: "backup.schedule.ran"; vm: string; dueAt: number; at: number };

const TABLES = [
  {
    name: "backup_targets",
    ddl: `CREATE TABLE IF NOT EXISTS backup_targets (
      name TEXT PRIMARY KEY, data TEXT NOT NULL);`,
  },
  {
    name: "backups",
    ddl: `CREATE TABLE IF NOT EXISTS backups (
      id TEXT PRIMARY KEY, vm TEXT NOT NULL, target TEXT NOT NULL, parent TEXT,
      created_at INTEGER NOT NULL, data TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS backups_vm ON backups (vm, created_at);
      CREATE INDEX IF NOT EXISTS backups_parent ON backups (parent);
      CREATE INDEX IF NOT EXISTS backups_target ON backups (target);`,
  },
  {
    name: "backup_schedules",
    ddl: `CREATE TABLE IF NOT EXISTS backup_schedules (
      vm TEXT PRIMARY KEY, data TEXT NOT NULL);`,
  },
];

// ---- reads --------------------------------------------------------------------------------

/** The backup target named `name`, or null. */
export function target(s: Store, name: string): BackupTargetRecord | null {
  const row = s.sql("SELECT data FROM backup_targets WHERE name = ?").get(name) as Row | undefined;
  return row ? JSON.parse(String(row.data)) : null;
}

/** Every backup target, by name. */
export function targets(s: Store): BackupTargetRecord[] {
  return (s.sql("SELECT data FROM backup_targets ORDER BY name").all() as Row[]).map((r) =>
    JSON.parse(String(r.data))
  );
}

/** Backup `id`, or null. */
export function get(s: Store, id: string): BackupRecord | null {
  const row = s.sql("SELECT data FROM backups WHERE id = ?").get(id) as Row | undefined;
  return row ? JSON.parse(String(row.data)) : null;
}

/** Backups, oldest first; of one VM when `vm` is given. */
export function list(s: Store, vm?: string): BackupRecord[] {
  const rows = vm === undefined
    ? s.sql("SELECT data FROM backups ORDER BY created_at, id").all()
    : s.sql("SELECT data FROM backups WHERE vm = ? ORDER BY created_at, id").all(vm);
  return (rows as Row[]).map((r) => JSON.parse(String(r.data)));
}

/** The backups whose parent is `id`. */
export function children(s: Store, id: string): string[] {
  return (s.sql("SELECT id FROM backups WHERE parent = ? ORDER BY id").all(id) as Row[]).map((r) =>
    String(r.id)
  );
}

/** `id` and its ancestors, the full backup first: what a restore of `id` reads. */
export function chainOf(s: Store, id: string): BackupRecord[] {
  const out: BackupRecord[] = [];
  for (let b = get(s, id); b; b = b.parent ? get(s, b.parent) : null) {
    out.unshift(b);
    if (out.length > 10_000) break;
  }
  return out;
}

/** `vm`'s backup schedule, or null. */
export function schedule(s: Store, vm: string): BackupScheduleRecord | null {
  const row = s.sql("SELECT data FROM backup_schedules WHERE vm = ?").get(vm) as Row | undefined;
  return row ? JSON.parse(String(row.data)) : null;
}

/** Every backup schedule, by VM. */
export function schedules(s: Store): BackupScheduleRecord[] {
  return (s.sql("SELECT data FROM backup_schedules ORDER BY vm").all() as Row[]).map((r) =>
    JSON.parse(String(r.data))
  );
}

/** Read-only access for callers outside the state machine (API, hosts, the leader's scheduler). */
export interface BackupReads {
  target(name: string): BackupTargetRecord | null;
  targets(): BackupTargetRecord[];
  get(id: string): BackupRecord | null;
  list(vm?: string): BackupRecord[];
  children(id: string): string[];
  chainOf(id: string): BackupRecord[];
  schedule(vm: string): BackupScheduleRecord | null;
  schedules(): BackupScheduleRecord[];
}

/** The read-only view of this resource over `s`. */
export function readsOf(s: Store): BackupReads {
  return {
    target: (name) => target(s, name),
    targets: () => targets(s),
    get: (id) => get(s, id),
    list: (vm) => list(s, vm),
    children: (id) => children(s, id),
    chainOf: (id) => chainOf(s, id),
    schedule: (vm) => schedule(s, vm),
    schedules: () => schedules(s),
  };
}

// ---- appliers -----------------------------------------------------------------------------

function createTarget(
  s: Store,
  c: Extract<BackupCommand, { op: "backup.target.create" }>,
): Applied {
  const { name, path } = c.target;
  if (!BACKUP_TARGET_NAME.test(name)) {
    throw ValidationError.field("name", "lowercase letters, digits and '-' (1-63 chars)");
  }
  checkTargetPath(path);
  if (target(s, name)) {
    throw new ConflictError(`name: backup target "${name}" already exists`, { field: "name" });
  }
  if (targets(s).length >= BACKUP_LIMITS.targets) {
    throw new ConflictError(`at most ${BACKUP_LIMITS.targets} backup targets`);
  }
  const record: BackupTargetRecord = { name, path, createdAt: c.at, by: c.by };
  s.sql("INSERT INTO backup_targets (name, data) VALUES (?, ?)").run(name, JSON.stringify(record));
  return applied(record, { resource: "backupTarget", name });
}

/** A target path: absolute, normalized, no control characters. */
export function checkTargetPath(path: string): void {
  if (!path.startsWith("/")) throw ValidationError.field("path", "an absolute path");
  if (path.length > BACKUP_LIMITS.pathChars) {
    throw ValidationError.field("path", `at most ${BACKUP_LIMITS.pathChars} characters`);
  }
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(path)) {
    throw ValidationError.field("path", "no control characters");
  }
  if (path.split("/").some((p) => p === "." || p === "..")) {
    throw ValidationError.field("path", "no '.' or '..' components");
  }
}

function deleteTarget(
  s: Store,
  c: Extract<BackupCommand, { op: "backup.target.delete" }>,
): Applied {
  if (!target(s, c.name)) throw new NotFoundError("backup target", c.name);
  const n = Number(
    (s.sql("SELECT COUNT(*) AS n FROM backups WHERE target = ?").get(c.name) as Row).n,
  );
  if (n) {
    throw new ConflictError(
      `backup target "${c.name}" holds ${n} backup(s); delete them first`,
      { backups: n },
    );
  }
  const used = schedules(s).filter((x) => x.target === c.name).map((x) => x.vm);
  if (used.length) {
    throw new ConflictError(
      `backup target "${c.name}" is used by the schedules of ${used.join(", ")}`,
      { schedules: used },
    );
  }
  s.sql("DELETE FROM backup_targets WHERE name = ?").run(c.name);
  return applied({ name: c.name, deleted: true }, { resource: "backupTarget", name: c.name });
}

function record(s: Store, c: Extract<BackupCommand, { op: "backup.record" }>): Applied {
  const b = c.backup;
  if (!BACKUP_ID.test(b.id)) throw ValidationError.field("id", "bk- and 12 hex digits");
  if (get(s, b.id)) throw new ConflictError(`backup ${b.id} already exists`);
  if (!target(s, b.target)) throw ValidationError.field("target", `no backup target "${b.target}"`);
  if (b.parent !== null) {
    const p = get(s, b.parent);
    if (!p) throw new ConflictError(`parent backup ${b.parent} no longer exists`);
    if (p.vm !== b.vm || p.target !== b.target || p.chain !== b.chain) {
      throw ValidationError.field("parent", `backup ${b.parent} is of another VM, target or chain`);
    }
  } else if (b.chain !== b.id) {
    throw ValidationError.field("chain", "a full backup starts its own chain");
  }
  const count = Number((s.sql("SELECT COUNT(*) AS n FROM backups").get() as Row).n);
  if (count >= BACKUP_LIMITS.backups) {
    throw new ConflictError(`at most ${BACKUP_LIMITS.backups} backups; delete old ones first`);
  }
  const rec: BackupRecord = { ...b, createdAt: c.at };
  s.sql(
    "INSERT INTO backups (id, vm, target, parent, created_at, data) VALUES (?, ?, ?, ?, ?, ?)",
  ).run(b.id, b.vm, b.target, b.parent, c.at, JSON.stringify(rec));
  return applied(rec, { resource: "backup", name: b.id });
}

function remove(s: Store, c: Extract<BackupCommand, { op: "backup.delete" }>): Applied {
  const b = get(s, c.id);
  if (!b) throw new NotFoundError("backup", c.id);
  const deps = children(s, c.id);
  if (deps.length) {
    throw new ConflictError(
      `backup ${c.id} is the parent of ${deps.join(", ")}; delete those first (newest first)`,
      { children: deps },
    );
  }
  s.sql("DELETE FROM backups WHERE id = ?").run(c.id);
  return applied(b, { resource: "backup", name: c.id });
}

function setSchedule(s: Store, c: Extract<BackupCommand, { op: "backup.schedule.set" }>): Applied {
  const x = c.schedule;
  if (!target(s, x.target)) throw ValidationError.field("target", `no backup target "${x.target}"`);
  const old = schedule(s, x.vm);
  const rec: BackupScheduleRecord = {
    ...x,
    lastRunAt: old && old.cron === x.cron ? old.lastRunAt : c.at,
    by: c.by,
    updatedAt: c.at,
  };
  s.sql(
    `INSERT INTO backup_schedules (vm, data) VALUES (?, ?)
     ON CONFLICT(vm) DO UPDATE SET data = excluded.data`,
  ).run(x.vm, JSON.stringify(rec));
  return applied(rec, { resource: "backupSchedule", name: x.vm });
}

function deleteSchedule(
  s: Store,
  c: Extract<BackupCommand, { op: "backup.schedule.delete" }>,
): Applied {
  if (!schedule(s, c.vm)) throw new NotFoundError("backup schedule", c.vm);
  s.sql("DELETE FROM backup_schedules WHERE vm = ?").run(c.vm);
  return applied({ vm: c.vm, deleted: true }, { resource: "backupSchedule", name: c.vm });
}

function scheduleRan(s: Store, c: Extract<BackupCommand, { op: "backup.schedule.ran" }>): Applied {
  const x = schedule(s, c.vm);
  if (!x) throw new NotFoundError("backup schedule", c.vm);
  if (c.dueAt <= x.lastRunAt) return applied(x); // another leader ran it already
  const rec = { ...x, lastRunAt: c.dueAt };
  s.sql("UPDATE backup_schedules SET data = ? WHERE vm = ?").run(JSON.stringify(rec), c.vm);
  return applied(rec, { resource: "backupSchedule", name: c.vm });
}

/** Backup targets, backups and schedules. */
export const resource: Resource<BackupCommand["op"]> = {
  tables: TABLES,
  appliers: {
    "backup.target.create": createTarget,
    "backup.target.delete": deleteTarget,
    "backup.record": record,
    "backup.delete": remove,
    "backup.schedule.set": setSchedule,
    "backup.schedule.delete": deleteSchedule,
    "backup.schedule.ran": scheduleRan,
  },
};
