/**
 * VM snapshots on the host side: this host runs the snapshot operations (take, restore,
 * delete) of the VMs it holds. The leader checked and recorded each one
 * (core/cluster/snapshot_service.ts); the runner (host/operations/) starts it here, and the
 * work itself is the VM host's (host/vm_host.ts: QMP snapshot jobs, fs-freeze and thaw,
 * volume snapshots of a stopped VM), serialized with everything else done to the VM.
 *
 * A failed operation's result keeps its error's code, so an API call that waited for it
 * (`?wait=SECONDS`) answers as the synchronous call did: the same status for the same error.
 *
 * @module
 */
import { ConflictError } from "../../core/errors/mod.ts";
import { SNAPSHOT_OPERATION_KINDS } from "../../core/cluster/snapshot_service.ts";
import type { OperationRecord, VmRecord, VmSnapshot } from "../../core/fsm/mod.ts";
import {
  type CatchingUp,
  errorCodeOf,
  HostOperationRunner,
  type OperationCluster,
} from "../operations/mod.ts";

/** What the runner needs of the host's VM side (host/vm_host.ts's VmHost). */
export interface SnapshotHost extends CatchingUp {
  createSnapshot(name: string, snap: string, memory: boolean): Promise<VmSnapshot>;
  restoreSnapshot(name: string, snap: string): Promise<VmRecord>;
  deleteSnapshot(name: string, snap: string): Promise<void>;
}

/** Runs this host's snapshot operations. */
export class SnapshotRunner extends HostOperationRunner {
  protected readonly kinds = SNAPSHOT_OPERATION_KINDS;

  constructor(cluster: OperationCluster, private readonly host: SnapshotHost, stateFile: string) {
    super(cluster, host, stateFile);
  }

  protected async execute(op: OperationRecord): Promise<Record<string, unknown>> {
    const vm = String(op.params.vm);
    const snapshot = String(op.params.snapshot);
    switch (op.kind) {
      case "snapshot-create": {
        const { name: _, ...taken } = await this.host.createSnapshot(
          vm,
          snapshot,
          op.params.memory === true,
        );
        return { vm, snapshot, ...taken };
      }
      case "snapshot-restore": {
        const restored = await this.host.restoreSnapshot(vm, snapshot);
        return { vm, snapshot, state: restored.state };
      }
      case "snapshot-delete":
        await this.host.deleteSnapshot(vm, snapshot);
        return { vm, snapshot, deleted: true };
      default:
        throw new ConflictError(`${op.kind} is not a snapshot operation`);
    }
  }

  protected auditAction(op: OperationRecord): string {
    return `vm.${op.kind.replace("-", ".")}`;
  }

  protected override failureResult(
    op: OperationRecord,
    err: unknown,
  ): Record<string, unknown> | null {
    return { vm: op.params.vm, snapshot: op.params.snapshot, errorCode: errorCodeOf(err) };
  }

  /**
   * Snapshot steps (QMP jobs, volume snapshots) are short and not cut off halfway: an
   * operation under way runs to its end.
   * @throws {ConflictError} the operation runs here
   */
  override abort(opId: string): boolean {
    if (!this.isRunning(opId)) return false;
    throw new ConflictError(`operation ${opId} is a snapshot step: it runs to its end`);
  }
}
