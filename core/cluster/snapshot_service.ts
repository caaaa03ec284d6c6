/**
 * VM snapshots on the leader: take, restore and delete are operations, as backups are
 * (./backup_service.ts). The leader checks the request against the replicated state and
 * refuses what the VM's host would refuse (unknown VM or snapshot, a duplicate name, a
 * memory snapshot of a VM that does not run, a disk-only restore under a running QEMU)
 * before any operation exists; it then records the operation with the VM's host as its
 * runner, and that host's snapshot runner (host/snapshots/) does the work and reports the
 * outcome. The host checks again when it runs it (its QEMU is the truth): what changed in
 * between fails the operation instead.
 *
 * Operations of one VM queue on its host (one at a time per VM, in the order recorded).
 */
import { createOperation } from "./operation_service.ts";
import type { ClusterNode } from "./node.ts";
import type { OperationKind, OperationRecord, VmRecord } from "../fsm/mod.ts";
import { ConflictError, NotFoundError } from "../errors/mod.ts";
import { serializedDecision } from "./vm_service.ts";

/** The operation kinds of VM snapshots. */
export const SNAPSHOT_OPERATION_KINDS = [
  "snapshot-create",
  "snapshot-restore",
  "snapshot-delete",
] as const satisfies readonly OperationKind[];

export type SnapshotOperationKind = typeof SNAPSHOT_OPERATION_KINDS[number];

/** What a snapshot operation's params hold. */
export interface SnapshotParams {
  vm: string;
  snapshot: string;
  /** Create only: with memory and device state. */
  memory?: boolean;
}

/** States in which a VM may have a QEMU process on its host. */
const QEMU_MAY_RUN = new Set(["starting", "running", "stopping", "migrating"]);

function newOpId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return "snop-" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The snapshot operation of `kind` on snapshot `snap` of `vm` still running, if any. */
function inFlight(
  node: ClusterNode,
  vm: string,
  snap: string,
  kind: SnapshotOperationKind,
): OperationRecord | undefined {
  return node.fsm.operations().find((o) =>
    o.state === "running" && o.kind === kind && o.target === vm && o.params.snapshot === snap
  );
}

/** The VM, placed, neither being deleted nor migrating. */
function snapshottable(node: ClusterNode, name: string): VmRecord & { node: string } {
  const vm = node.fsm.vm(name);
  if (!vm) throw new NotFoundError("vm", name);
  if (!vm.node) throw new ConflictError(`VM "${name}" has no reachable host (unplaced)`);
  if (vm.desired === "deleted") throw new ConflictError(`VM "${name}" is being deleted`);
  if (vm.migration) {
    throw new ConflictError(
      `VM "${name}" is migrating (operation ${vm.migration.opId}); retry once it moved`,
    );
  }
  return vm as VmRecord & { node: string };
}

function record(
  node: ClusterNode,
  kind: SnapshotOperationKind,
  vm: VmRecord & { node: string },
  params: SnapshotParams,
  by: string,
): Promise<OperationRecord> {
  return createOperation(node, {
    id: newOpId(),
    kind,
    target: vm.name,
    runner: vm.node,
    params: { ...params },
    by,
  });
}

/** Records the operation that snapshots `vm` as `snap` (with memory: `memory`). */
export function startSnapshot(
  node: ClusterNode,
  req: { vm: string; snapshot: string; memory: boolean },
  by: string,
): Promise<OperationRecord> {
  return serializedDecision(node, async () => {
    await node.linearizableRead();
    const vm = snapshottable(node, req.vm);
    if (vm.template) throw new ConflictError(`"${vm.name}" is a template; templates are immutable`);
    const taking = inFlight(node, vm.name, req.snapshot, "snapshot-create");
    if (vm.snapshots.some((s) => s.name === req.snapshot) || taking) {
      throw new ConflictError(
        `snapshot "${req.snapshot}" already exists` +
          (taking ? ` (operation ${taking.id} is taking it)` : ""),
      );
    }
    if (req.memory && vm.state !== "running") {
      throw new ConflictError(`a snapshot with memory needs ${vm.name} running`);
    }
    return await record(node, "snapshot-create", vm, {
      vm: vm.name,
      snapshot: req.snapshot,
      memory: req.memory,
    }, by);
  });
}

/** Records the operation that restores `vm` to its snapshot `snap`. */
export function startSnapshotRestore(
  node: ClusterNode,
  req: { vm: string; snapshot: string },
  by: string,
): Promise<OperationRecord> {
  return serializedDecision(node, async () => {
    await node.linearizableRead();
    const vm = snapshottable(node, req.vm);
    const s = existing(node, vm, req.snapshot);
    if (!s.memory && QEMU_MAY_RUN.has(vm.state)) {
      throw new ConflictError(`stop ${vm.name} before restoring a disk-only snapshot`);
    }
    return await record(node, "snapshot-restore", vm, {
      vm: vm.name,
      snapshot: req.snapshot,
    }, by);
  });
}

/** Records the operation that deletes the snapshot `snap` of `vm`. */
export function startSnapshotDelete(
  node: ClusterNode,
  req: { vm: string; snapshot: string },
  by: string,
): Promise<OperationRecord> {
  return serializedDecision(node, async () => {
    await node.linearizableRead();
    const vm = snapshottable(node, req.vm);
    existing(node, vm, req.snapshot);
    return await record(node, "snapshot-delete", vm, {
      vm: vm.name,
      snapshot: req.snapshot,
    }, by);
  });
}

/** The snapshot `snap` of `vm`, unless it is unknown or being deleted. */
function existing(node: ClusterNode, vm: VmRecord, snap: string) {
  const s = vm.snapshots.find((x) => x.name === snap);
  if (!s) throw new NotFoundError("snapshot", snap);
  const deleting = inFlight(node, vm.name, snap, "snapshot-delete");
  if (deleting) {
    throw new ConflictError(`snapshot "${snap}" is being deleted (operation ${deleting.id})`);
  }
  return s;
}
