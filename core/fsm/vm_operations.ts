/**
 * VM lifecycle actions followed as operations (cluster level 2): create-and-start, start,
 * stop, restart and delete answer with an operation, as migrations and backups do, at no
 * extra Raft round.
 *
 * - **Made in the change's own entry.** A `vm.desired`, `vm.update` (a restart) or
 *   `plan.apply` create carrying `track` makes its operation while it applies; the id comes
 *   from the entry's index (`vmop-INDEX`, `vmop-INDEX-I` for the I-th create of a plan), so
 *   every replica makes the same one.
 * - **Finished by the VM's reports,** deterministically, as they apply: succeeded once the VM
 *   is where the action takes it (running for create and start; stopped for stop, which a
 *   VM already at rest reaches at once; gone for delete), failed with the VM's reason when
 *   it fails (a failure it already showed does not count). A restart counts only a run
 *   after the VM left "running" (its host reports stopping, then starting, for the new
 *   generation): a report of the old QEMU committed late does not finish it.
 * - **Superseded** (aborted, naming its successor) when a later tracked change of the same
 *   VM replaces it, and aborted when the VM goes while it waits for something else.
 * - **Bounded.** One pending row per VM at most (`vm_operations`); finished operations are
 *   pruned by `operations.keepCount`/`keepDays` after about one lifecycle operation in
 *   {@link pruneEvery}, so a start pays an amortized share of the walk, not all of it.
 * - **Level 2 only.** Below it the state machine ignores `track` (older programs, which
 *   apply the same entries, know nothing of it); the leader leaves it out there anyway
 *   (core/upgrade/levels.ts).
 *
 * @module
 */
import type {
  OperationBrief,
  OperationState,
  TrackAs,
  VmLifecycleKind,
  VmRecord,
} from "./commands.ts";
import * as clusterLevel from "./cluster_level.ts";
import * as config from "./config.ts";
import * as operations from "./operations.ts";
import { featureAllowed } from "../upgrade/levels.ts";
import type { Changed, Resource, Row, Store, Table } from "./store.ts";

const TABLES: Table[] = [
  {
    name: "vm_operations",
    // phase: "wait", or for a restart "left" once the VM was seen out of "running".
    ddl:
      `CREATE TABLE IF NOT EXISTS vm_operations (vm TEXT PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, phase TEXT NOT NULL);`,
  },
];

interface Pending {
  vm: string;
  id: string;
  kind: VmLifecycleKind;
  phase: "wait" | "left";
}

function pendingOf(s: Store, vm: string): Pending | null {
  const row = s.sql("SELECT vm, id, kind, phase FROM vm_operations WHERE vm = ?").get(vm) as
    | Row
    | undefined;
  return row
    ? {
      vm: String(row.vm),
      id: String(row.id),
      kind: row.kind as VmLifecycleKind,
      phase: row.phase as Pending["phase"],
    }
    : null;
}

function forget(s: Store, vm: string): void {
  s.sql("DELETE FROM vm_operations WHERE vm = ?").run(vm);
}

/** The id of the operation an entry's tracked change makes (`part`: a plan's I-th create). */
export function operationIdOf(index: number, part?: number): string {
  return part === undefined ? `vmop-${index}` : `vmop-${index}-${part}`;
}

/** The id of the operation a VM's lifecycle action still waits on, or null. */
export function pendingId(s: Store, vm: string): string | null {
  return pendingOf(s, vm)?.id ?? null;
}

/** Where the action takes the VM, reached by `vm` as it is now (a restart never is at once). */
function reached(kind: VmLifecycleKind, vm: VmRecord, phase: Pending["phase"]): boolean {
  switch (kind) {
    case "create":
    case "start":
      return vm.state === "running";
    case "restart":
      return phase === "left" && vm.state === "running";
    case "stop":
      return vm.state === "stopped";
    case "delete":
      return false;
  }
}

function end(
  s: Store,
  id: string,
  state: Exclude<OperationState, "running">,
  outcome: { result?: Record<string, unknown>; error?: string },
  at: number,
  changed: Changed[],
): void {
  operations.finish(s, id, state, outcome, at);
  changed.push({ resource: "operation", name: id });
}

/**
 * Starts following `kind` of VM `name` as operation `id`, when the cluster level allows and
 * the change asked for it (`track`). `vm`: the VM as the change left it (null: gone at once,
 * a delete of an unplaced VM). A pending operation of the same VM is superseded. Returns
 * the operation's brief (null when none was made) and what changed.
 */
export function begin(
  s: Store,
  args: {
    name: string;
    vm: VmRecord | null;
    kind: VmLifecycleKind;
    track: TrackAs | undefined;
    id: string;
    by: string;
    at: number;
  },
): { operation: OperationBrief | null; changed: Changed[] } {
  const changed: Changed[] = [];
  if (!args.track || !featureAllowed("track", clusterLevel.level(s))) {
    return { operation: null, changed };
  }
  const { name, vm, kind, id, at } = args;
  const previous = pendingOf(s, name);
  if (previous) {
    end(
      s,
      previous.id,
      "aborted",
      {
        result: { supersededBy: id },
        error: `superseded by ${kind} operation ${id}`,
      },
      at,
      changed,
    );
    forget(s, name);
  }
  operations.insert(s, {
    id,
    kind,
    target: name,
    runner: vm?.node ?? "",
    params: {},
    by: args.by,
    ...(args.track.requestId ? { requestId: args.track.requestId } : {}),
  }, at);
  changed.push({ resource: "operation", name: id });
  let state: OperationState = "running";
  if (!vm) {
    end(s, id, state = "succeeded", { result: { deleted: true } }, at, changed);
  } else if (reached(kind, vm, "wait") || (kind === "stop" && vm.state === "failed")) {
    // Already there (a start of a running VM, a stop of one at rest): nothing will report.
    end(s, id, state = "succeeded", { result: resultOf(vm) }, at, changed);
  } else {
    s.sql("INSERT INTO vm_operations (vm, id, kind, phase) VALUES (?, ?, ?, 'wait')").run(
      name,
      id,
      kind,
    );
  }
  pruneSometimes(s, id, at);
  return { operation: { id, kind, state }, changed };
}

function resultOf(vm: VmRecord): Record<string, unknown> {
  return { state: vm.state, node: vm.node };
}

/**
 * A report (or a move) changed VM `before` into `after`: finishes its pending operation
 * when that reached its end, or failed. Returns what changed (nothing, mostly).
 */
export function observed(s: Store, before: VmRecord, after: VmRecord, at: number): Changed[] {
  const p = pendingOf(s, after.name);
  if (!p) return [];
  const changed: Changed[] = [];
  if (operations.stateOf(s, p.id) !== "running") {
    forget(s, p.vm); // ended elsewhere (operation.update: its host went offline)
    return changed;
  }
  const freshFailure = after.state === "failed" &&
    !(before.state === "failed" && before.reason === after.reason);
  if (freshFailure) {
    end(
      s,
      p.id,
      "failed",
      {
        result: resultOf(after),
        error: after.reason ?? "the VM failed",
      },
      at,
      changed,
    );
    forget(s, p.vm);
  } else if (reached(p.kind, after, p.phase)) {
    end(s, p.id, "succeeded", { result: resultOf(after) }, at, changed);
    forget(s, p.vm);
  } else if (p.kind === "restart" && p.phase === "wait" && after.state !== "running") {
    s.sql("UPDATE vm_operations SET phase = 'left' WHERE vm = ?").run(p.vm);
  }
  return changed;
}

/** VM `name` is gone: its delete succeeded; anything else it waited for never comes. */
export function gone(s: Store, name: string, at: number): Changed[] {
  const p = pendingOf(s, name);
  if (!p) return [];
  const changed: Changed[] = [];
  if (p.kind === "delete") end(s, p.id, "succeeded", { result: { deleted: true } }, at, changed);
  else end(s, p.id, "aborted", { error: `VM "${name}" was deleted` }, at, changed);
  forget(s, name);
  return changed;
}

/**
 * Lifecycle operations between two prunes, on average: 10 % of operations.keepCount, 1 to
 * 1000 (so up to that many finished operations beyond keepCount are kept for a while).
 */
export function pruneEvery(s: Store): number {
  const keep = config.retentionOf(config.settings(s)).operationCount;
  return Math.max(1, Math.min(1000, Math.floor(keep / 10)));
}

/**
 * Prunes finished operations after about one lifecycle operation in {@link pruneEvery}: the
 * ones whose id hashes to 0 modulo it. A function of the id alone, so every replica prunes
 * at the same entries, with nothing written to count (a counter row cost as much as the
 * operation's own rows); hashed, so no rhythm of entries can keep skipping it.
 */
function pruneSometimes(s: Store, id: string, at: number): void {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  if ((h >>> 0) % pruneEvery(s) === 0) operations.prune(s, at);
}

/** Pending lifecycle operations (no commands of their own: vms.ts and plans.ts call in). */
export const resource: Resource = { tables: TABLES, appliers: {} };
