/**
 * Test support: a simulated VM host's snapshot work for the real snapshot runner over a
 * one-voter {@link TestCluster} (host n1). It records what a real host records (the
 * snapshot in the VM's record) without QEMU, or fails on demand; tests with QEMU use the
 * real host (tests/vm_test.ts, host/vm_host_test.ts).
 *
 * @module
 */
import { ConflictError } from "../../core/errors/mod.ts";
import type { VmRecord, VmSnapshot } from "../../core/fsm/mod.ts";
import type { TestCluster } from "../../core/testing/test_cluster.ts";
import type { OperationCluster } from "../operations/mod.ts";
import type { SnapshotHost } from "./mod.ts";

/** Plays host n1's snapshot work: records what a real host records, or fails on demand. */
export class SimulatedSnapshotHost implements SnapshotHost {
  /** While set, snapshots wait for it (an operation that is still running). */
  gate: Promise<void> | null = null;
  /** Snapshot names whose creation fails, as a QMP error would. */
  readonly failing = new Set<string>();

  constructor(private readonly c: TestCluster) {}

  isCaughtUp(): boolean {
    return true;
  }

  async createSnapshot(vm: string, snap: string, memory: boolean): Promise<VmSnapshot> {
    await this.gate;
    if (this.failing.has(snap)) throw new ConflictError(`QEMU refused snapshot ${snap}`);
    const snapshot = {
      name: snap,
      memory,
      createdAt: new Date().toISOString(),
      vmState: "running",
    };
    await this.c.node.propose({ op: "vm.snapshot.add", name: vm, node: "n1", snapshot, at: 1 });
    return snapshot;
  }

  restoreSnapshot(vm: string): Promise<VmRecord> {
    return Promise.resolve(this.c.node.fsm.vm(vm)!);
  }

  async deleteSnapshot(vm: string, snap: string): Promise<void> {
    await this.c.node.propose({
      op: "vm.snapshot.remove",
      name: vm,
      node: "n1",
      snapshot: snap,
      at: 1,
    });
  }
}

/** Host n1's view of the cluster, as cmd/node_start.ts gives it to its runners. */
export function hostClusterOf(c: TestCluster): OperationCluster {
  return {
    nodeName: "n1",
    operations: () => c.node.fsm.operations(),
    operation: (id) => c.node.fsm.operation(id),
    onOperationChange: (listener) =>
      c.node.fsm.onChange((ch) => listener(ch?.resource === "operation" ? ch.name! : null)),
    report: (cmd) => c.node.propose(cmd),
  };
}

/** Where host n1 keeps the ids of the snapshot operations it runs. */
export const stateFileOf = (c: TestCluster): string => `${c.dataDir}/snapshot-operations.json`;
