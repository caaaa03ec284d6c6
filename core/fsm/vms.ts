/**
 * Virtual machines: the operator's spec (desired state included) and what
 * their host observes. Every applier names the VM it touched, so hosts hear
 * of it (StateMachine.onVmChange) even when the command changed nothing.
 */
import { ConflictError, NotFoundError } from "../errors/mod.ts";
import type { Command, OperationBrief, VmRecord, VmSnapshot, VmSpec, VmState } from "./commands.ts";
import * as images from "./images.ts";
import * as networks from "./networks.ts";
import * as volumes from "./volumes.ts";
import * as vmOps from "./vm_operations.ts";
import {
  type Applied,
  applied,
  type Changed,
  iso,
  RecordCache,
  type Resource,
  type Row,
  type Store,
} from "./store.ts";

const TABLE = {
  name: "vms",
  ddl:
    `CREATE TABLE IF NOT EXISTS vms (name TEXT PRIMARY KEY, spec TEXT NOT NULL, node TEXT, state TEXT NOT NULL,
  reason TEXT, guest TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);`,
};

function toVmRecord(r: Row): VmRecord {
  return {
    ...(JSON.parse(String(r.spec)) as VmSpec),
    node: (r.node as string | null) ?? null,
    state: r.state as VmState,
    reason: (r.reason as string | null) ?? null,
    guest: r.guest ? JSON.parse(String(r.guest)) : null,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

/** A VM's spec: the record without what its host observes. */
export function specOf(vm: VmRecord): VmSpec {
  const { state: _s, reason: _r, guest: _g, createdAt: _c, updatedAt: _u, ...spec } = vm;
  return spec;
}

export function all(s: Store): VmRecord[] {
  return (s.sql("SELECT * FROM vms ORDER BY name").all() as Row[]).map(toVmRecord);
}

/** What `vm list` may ask for: filters, and a page after a name. */
export interface VmQuery {
  node?: string;
  state?: VmState;
  /** Every one of these labels, with these values. */
  labels?: Record<string, string>;
  /** Only HA VMs (the HA manager's round: not a parse of every VM). */
  ha?: true;
  /** Names after this one (the page before ended there). */
  after?: string;
  /** At most this many (all when absent). */
  limit?: number;
}

/**
 * VMs by name matching `q`. Node and state are filtered by SQLite (an index on
 * node); labels, which live in the spec, as rows are read, which stops once
 * the page is full.
 */
/** The SELECT behind {@link list} (a test reads its query plan). */
export function listSql(
  q: VmQuery,
  columns = "*",
): { sql: string; args: (string | number)[] } {
  const where: string[] = [];
  const args: (string | number)[] = [];
  if (q.node !== undefined) where.push("node = ?"), args.push(q.node);
  if (q.state !== undefined) where.push("state = ?"), args.push(q.state);
  if (q.after !== undefined) where.push("name > ?"), args.push(q.after);
  if (q.ha) where.push(HA_TERM);
  const sql = `SELECT ${columns} FROM vms${
    where.length ? ` WHERE ${where.join(" AND ")}` : ""
  } ORDER BY name`;
  return { sql, args };
}

/** How many VMs are in each state (states without VMs are absent). */
export function countByState(s: Store): Partial<Record<VmState, number>> {
  const out: Partial<Record<VmState, number>> = {};
  for (const r of s.sql("SELECT state, count(*) AS n FROM vms GROUP BY state").all() as Row[]) {
    out[r.state as VmState] = Number(r.n);
  }
  return out;
}

/** How an HA VM is found; the partial index vms_ha holds exactly those rows. */
const HA_TERM = "json_extract(spec, '$.ha') = 1";

export function list(s: Store, q: VmQuery): VmRecord[] {
  const { sql, args } = listSql(q);
  const limit = q.limit ?? Infinity;
  const wanted = Object.entries(q.labels ?? {});
  const out: VmRecord[] = [];
  for (const row of s.sql(sql).iterate(...args) as Iterable<Row>) {
    const vm = toVmRecord(row);
    if (wanted.every(([k, v]) => Object.hasOwn(vm.labels, k) && vm.labels[k] === v)) out.push(vm);
    if (out.length >= limit) break;
  }
  return out;
}

/**
 * Names of the VMs matching `q`'s node, state and `after`, in order, read as the
 * caller goes (a page stops early); labels and the page size are the caller's to
 * apply (api/vm_listing.ts, from its own copy of each VM). Read them within one
 * turn of the event loop: no command may apply in between.
 */
export function* names(s: Store, q: VmQuery): Generator<string> {
  const { sql, args } = listSql(q, "name");
  for (const row of s.sql(sql).iterate(...args) as Iterable<{ name: string }>) yield row.name;
}

/** VMs as last read (frozen), a write's own row forgotten by {@link write} before it runs. */
const byName = new RecordCache<VmRecord>(4096);

export function get(s: Store, name: string): VmRecord | null {
  return byName.get(s, name, () => {
    const row = s.sql("SELECT * FROM vms WHERE name = ?").get(name) as Row | undefined;
    return row ? toVmRecord(row) : null;
  });
}

/** Runs a statement that writes VM `name`'s row (every write goes through here). */
function write(s: Store, name: string, sql: string, ...args: (string | number | null)[]): void {
  byName.forget(s, name);
  s.sql(sql).run(...args);
}

/** The outcome of a VM command: its value, and the VM it touched (and operations it ended). */
function touched(name: string, value: unknown, also: Changed[] = []): Applied {
  return applied(value, { resource: "vm", name }, ...also);
}

/** A tracked change's answer: its value with the operation it made (./vm_operations.ts). */
function tracking(
  name: string,
  value: object,
  made: { operation: OperationBrief | null; changed: Changed[] },
): Applied {
  return touched(
    name,
    made.operation ? { ...value, operation: made.operation } : value,
    made.changed,
  );
}

/** Replaces a VM's spec (not its observed state). */
export function writeSpec(s: Store, spec: VmSpec, at: number): void {
  write(
    s,
    spec.name,
    "UPDATE vms SET spec = ?, updated_at = ? WHERE name = ?",
    JSON.stringify(spec),
    at,
    spec.name,
  );
}

/** Throws unless a VM like `spec` may be created: its name free, its image known. */
export function assertCreatable(s: Store, spec: VmSpec): void {
  if (get(s, spec.name)) throw new ConflictError(`VM "${spec.name}" already exists`);
  if (!images.get(s, spec.image)) throw new NotFoundError("image", spec.image);
}

function create(s: Store, c: Extract<Command, { op: "vm.create" }>): Applied {
  assertCreatable(s, c.vm);
  return insert(s, c.vm, c.at, false);
}

/**
 * Records a new VM its caller checked with {@link assertCreatable} (`plan.apply` also
 * checks its placement in between). `stoppedAtOnce`: a placed VM that is to stay
 * stopped is stopped from the start — its host has nothing to do for it, so nothing to
 * report (plan.apply; `vm.create` entries keep "scheduled", as they were applied when
 * written).
 */
export function insert(s: Store, spec: VmSpec, at: number, stoppedAtOnce: boolean): Applied {
  if (spec.nics?.length) spec = { ...spec, nics: networks.attachNics(s, spec.name, spec.nics) };
  const state: VmState = !spec.node
    ? "pending"
    : stoppedAtOnce && spec.desired === "stopped"
    ? "stopped"
    : "scheduled";
  write(
    s,
    spec.name,
    "INSERT INTO vms (name, spec, node, state, reason, created_at, updated_at) VALUES (?, ?, ?, ?, NULL, ?, ?)",
    spec.name,
    JSON.stringify(spec),
    spec.node,
    state,
    at,
    at,
  );
  return touched(spec.name, get(s, spec.name));
}

function setDesired(s: Store, c: Extract<Command, { op: "vm.desired" }>): Applied {
  const { name, desired } = c;
  const vm = get(s, name);
  if (!vm) throw new NotFoundError("vm", name);
  if (vm.template && desired === "running") {
    throw new ConflictError(`"${name}" is a template; clone it to run it`);
  }
  const kind = desired === "running" ? "start" : desired === "stopped" ? "stop" : "delete";
  const track = {
    name,
    kind,
    track: c.track,
    id: vmOps.operationIdOf(s.entryIndex),
    by: c.by,
    at: c.at,
  } as const;
  if (desired === "deleted" && !vm.node) {
    write(s, name, "DELETE FROM vms WHERE name = ?", name);
    networks.detachAll(s, name);
    volumes.releaseVm(s, name);
    const ended = vmOps.gone(s, name, c.at);
    const made = vmOps.begin(s, { ...track, vm: null });
    return tracking(name, { name, deleted: true }, {
      ...made,
      changed: [...ended, ...made.changed],
    });
  }
  const spec: VmSpec = { ...specOf(vm), desired, force: !!c.force };
  if (desired === "deleted") spec.keepDisks = !!c.keepDisks;
  writeSpec(s, spec, c.at);
  const now = get(s, name)!;
  return tracking(name, now, vmOps.begin(s, { ...track, vm: now }));
}

function update(s: Store, c: Extract<Command, { op: "vm.update" }>): Applied {
  const vm = get(s, c.name);
  if (!vm) throw new NotFoundError("vm", c.name);
  if (vm.desired === "deleted") throw new ConflictError(`VM "${c.name}" is being deleted`);
  writeSpec(s, { ...specOf(vm), ...c.changes }, c.at);
  const now = get(s, c.name)!;
  // A restart is a new generation; other changes are not followed.
  if (c.changes.generation === undefined || c.changes.generation <= vm.generation) {
    return touched(c.name, now);
  }
  const id = vmOps.operationIdOf(s.entryIndex);
  return tracking(
    c.name,
    now,
    vmOps.begin(s, {
      name: c.name,
      vm: now,
      kind: "restart",
      track: c.track,
      id,
      by: c.by,
      at: c.at,
    }),
  );
}

/** Observed states in which no QEMU runs for the VM. */
const NO_QEMU: ReadonlySet<VmState> = new Set(["stopped", "failed", "pending", "scheduled"]);

/** A host reports what it sees; reports from a host the VM is not placed on are ignored. */
function observe(s: Store, c: Extract<Command, { op: "vm.observed" }>): Applied {
  const vm = get(s, c.name);
  if (!vm || vm.node !== c.node) return touched(c.name, null);
  const guest = c.guest === undefined ? vm.guest : c.guest;
  // Observed, but kept in the spec's JSON: what the VM's QEMU has, shown with the VM.
  const newDisplay = c.display !== undefined && c.display !== (vm.display ?? null);
  // No QEMU runs any more: nothing is plugged (./vm_devices.ts; the next run reports anew).
  const unplugged = !!vm.plugged && NO_QEMU.has(c.state);
  const spec = newDisplay || unplugged
    ? {
      ...specOf(vm),
      ...(newDisplay ? { display: c.display } : {}),
      ...(unplugged ? { plugged: null } : {}),
    }
    : null;
  write(
    s,
    c.name,
    `UPDATE vms SET state = ?, reason = ?, guest = ?, updated_at = ?${
      spec ? ", spec = ?" : ""
    } WHERE name = ?`,
    c.state,
    c.reason ?? null,
    guest ? JSON.stringify(guest) : null,
    c.at,
    ...(spec ? [JSON.stringify(spec)] : []),
    c.name,
  );
  const now = get(s, c.name)!;
  return touched(c.name, now, vmOps.observed(s, vm, now, c.at));
}

/** Re-homes a VM; a no-op unless it is still where the proposer saw it (idempotent, race-safe). */
function move(
  s: Store,
  c: { name: string; from: string; to: string; at: number },
  state: VmState,
  reason: string | null,
): Applied {
  const vm = get(s, c.name);
  if (!vm || vm.node !== c.from) return touched(c.name, null);
  // What the old host's QEMU had plugged: the new host reports its own (./vm_devices.ts).
  const spec: VmSpec = {
    ...specOf(vm),
    node: c.to,
    migration: null,
    ...(vm.plugged ? { plugged: null } : {}),
  };
  write(
    s,
    c.name,
    "UPDATE vms SET spec = ?, node = ?, state = ?, reason = ?, guest = NULL, updated_at = ? WHERE name = ?",
    JSON.stringify(spec),
    c.to,
    state,
    reason,
    c.at,
    c.name,
  );
  volumes.followVm(s, c.name, c.to);
  const now = get(s, c.name)!;
  return touched(c.name, now, vmOps.observed(s, vm, now, c.at));
}

function changeSnapshots(
  s: Store,
  c: { name: string; node: string; at: number },
  change: (list: VmSnapshot[]) => VmSnapshot[],
): Applied {
  const vm = get(s, c.name);
  if (!vm) throw new NotFoundError("vm", c.name);
  if (vm.node !== c.node) throw new ConflictError(`VM "${c.name}" is not on ${c.node}`);
  writeSpec(s, { ...specOf(vm), snapshots: change(vm.snapshots) }, c.at);
  return touched(c.name, get(s, c.name));
}

function remove(s: Store, c: Extract<Command, { op: "vm.remove" }>): Applied {
  const vm = get(s, c.name);
  if (!vm || vm.node !== c.node || vm.desired !== "deleted") return touched(c.name, null);
  write(s, c.name, "DELETE FROM vms WHERE name = ?", c.name);
  networks.detachAll(s, c.name);
  volumes.releaseVm(s, c.name);
  return touched(c.name, { name: c.name, deleted: true }, vmOps.gone(s, c.name, c.at));
}

/** Virtual machines. */
export const resource: Resource<
  | "vm.create"
  | "vm.desired"
  | "vm.update"
  | "vm.observed"
  | "vm.migrated"
  | "vm.moved"
  | "vm.snapshot.add"
  | "vm.snapshot.remove"
  | "vm.remove"
> = {
  tables: [TABLE],
  migrate(db) {
    // `vm list --node` and every host's own VMs: found by index, not by a scan.
    db.exec("CREATE INDEX IF NOT EXISTS vms_node ON vms(node)");
    // The leader's HA pass lists the HA VMs twice a second: from this index, not by parsing
    // every VM's spec (5.8 % of a leader's CPU with 10,000 VMs, before it).
    db.exec(`CREATE INDEX IF NOT EXISTS vms_ha ON vms(name) WHERE ${HA_TERM}`);
  },
  appliers: {
    "vm.create": create,
    "vm.desired": setDesired,
    "vm.update": update,
    "vm.observed": observe,
    "vm.migrated": (s, c) => move(s, c, "running", null),
    "vm.moved": (s, c) => move(s, c, "scheduled", c.reason),
    "vm.snapshot.add": (s, c) =>
      changeSnapshots(s, c, (list) => {
        if (list.some((x) => x.name === c.snapshot.name)) {
          throw new ConflictError(`snapshot "${c.snapshot.name}" already exists`);
        }
        return [...list, c.snapshot];
      }),
    "vm.snapshot.remove": (s, c) =>
      changeSnapshots(s, c, (list) => list.filter((x) => x.name !== c.snapshot)),
    "vm.remove": remove,
  },
};
