/**
 * Node maintenance on the leader: cordon (no new VMs), drain (move every VM
 * away — live when running, cold when stopped — with bounded parallelism,
 * then mark the node drained), evacuate (drain; for a host that is gone,
 * restart its shared-disk VMs elsewhere). A VM that cannot move is reported
 * in the operation's result, never dropped.
 */
import { auditSystem } from "./audit.ts";
import type { ClusterNode } from "./node.ts";
import type { NodeState, OperationRecord, VmRecord } from "../fsm/mod.ts";
import { ConflictError, NotFoundError } from "../errors/mod.ts";
import { log } from "../log/mod.ts";
import { chooseDestination, startMigration } from "./migration_service.ts";
import { serializedDecision } from "./vm_service.ts";
import type { LeaseTable } from "./lease.ts";
import { createOperation, waitForOperation } from "./operation_service.ts";

export async function setNodeState(node: ClusterNode, name: string, state: NodeState) {
  await node.linearizableRead();
  if (!node.fsm.node(name)) throw new NotFoundError("node", name);
  return await node.propose({ op: "node.state", name, state, at: Date.now() });
}

export async function drainNode(
  node: ClusterNode,
  name: string,
  mode: "drain" | "evacuate",
  leases: LeaseTable,
  by: string,
): Promise<OperationRecord> {
  await node.linearizableRead();
  if (!node.fsm.node(name)) throw new NotFoundError("node", name);
  const running = node.fsm.runningOperations().find((o) =>
    o.state === "running" && o.target === name && (o.kind === "drain" || o.kind === "evacuate")
  );
  if (running) throw new ConflictError(`node ${name} is already being drained (${running.id})`);
  await node.propose({ op: "node.state", name, state: "draining", at: Date.now() });
  const op = await createOperation(node, {
    id: `${mode}-${crypto.randomUUID().slice(0, 8)}`,
    kind: mode,
    target: name,
    runner: node.id,
    params: {},
    by,
  });
  void runDrain(node, op, mode, leases).catch((err) =>
    log.warn("drain failed", { node: name, error: String(err) })
  );
  return op;
}

async function runDrain(
  node: ClusterNode,
  op: OperationRecord,
  mode: "drain" | "evacuate",
  leases: LeaseTable,
): Promise<void> {
  const host = op.target;
  const cfg = node.fsm.settings();
  const gone = leases.surelyExpired(host, cfg["ha.leaseMs"]);
  const queue = node.fsm.vms().filter((v) =>
    v.node === host && !v.template && v.desired !== "deleted"
  );
  const moved: Record<string, string> = {};
  const failed: Record<string, string> = {};
  const total = queue.length;
  const worker = async () => {
    for (let vm = queue.shift(); vm; vm = queue.shift()) {
      try {
        moved[vm.name] = await moveOne(node, vm, mode === "evacuate" && gone);
      } catch (err) {
        failed[vm.name] = (err as Error).message;
      }
      auditSystem(node, `${mode}.move`, `vm/${vm.name}`, failed[vm.name] ?? `to ${moved[vm.name]}`);
      await node.propose({
        op: "operation.update",
        id: op.id,
        progress: { done: total - queue.length, total, moved, failed },
        at: Date.now(),
      }).catch(() => {});
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, cfg["drain.parallelism"]) }, worker));
  const empty = Object.keys(failed).length === 0;
  if (empty) await node.propose({ op: "node.state", name: host, state: "drained", at: Date.now() });
  await node.propose({
    op: "operation.update",
    id: op.id,
    state: empty ? "succeeded" : "failed",
    result: { moved, failed },
    error: empty
      ? undefined
      : `could not move: ${Object.entries(failed).map(([v, why]) => `${v} (${why})`).join("; ")}`,
    at: Date.now(),
  });
}

/** Moves one VM off its host; returns where it went. */
async function moveOne(node: ClusterNode, vm: VmRecord, hostGone: boolean): Promise<string> {
  if (hostGone) {
    // The host is dead and its lease expired: nothing runs there; restart elsewhere if the disks allow.
    if (vm.disks.some((d) => !node.fsm.pools.isSharedDisk(d))) {
      throw new ConflictError("its disks are local to the lost host");
    }
    return await serializedDecision(node, async () => {
      const to = chooseDestination(node, node.fsm.vm(vm.name)!);
      await node.propose({
        op: "vm.moved",
        name: vm.name,
        from: vm.node!,
        to,
        reason: `evacuated from ${vm.node}`,
        at: Date.now(),
      });
      return to;
    });
  }
  const op = await serializedDecision(node, async () => {
    const fresh = node.fsm.vm(vm.name)!;
    return await startMigration(node, fresh, chooseDestination(node, fresh), "drain");
  });
  const done = await waitForOperation(node, op.id, {
    timeoutMs: node.fsm.settings()["migration.timeoutMs"] + 60_000,
  });
  if (done.state !== "succeeded") throw new ConflictError(done.error ?? `migration ${done.state}`);
  return String(done.params.to);
}
