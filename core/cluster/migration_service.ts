/**
 * Starting migrations (on the leader): validate, pick the destination with
 * the scheduler, record the operation and mark the VM; the source host's
 * reconcile loop sees the mark and runs it.
 */
import { createOperation } from "./operation_service.ts";
import type { ClusterNode } from "./node.ts";
import type { OperationRecord, VmRecord } from "../fsm/mod.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import { isAtRest, placementRequestOf, placeOrExplain, serializedDecision } from "./vm_service.ts";

export interface MigrateRequest {
  to?: string;
}

export function migrateVm(
  node: ClusterNode,
  name: string,
  req: MigrateRequest,
  by: string,
): Promise<OperationRecord> {
  return serializedDecision(node, async () => {
    await node.linearizableRead();
    const vm = node.fsm.vm(name);
    if (!vm) throw new NotFoundError("vm", name);
    checkMigratable(vm);
    const to = chooseDestination(node, vm, req.to);
    return await startMigration(node, vm, to, by);
  });
}

function checkMigratable(vm: VmRecord): void {
  if (vm.template) throw new ConflictError(`"${vm.name}" is a template; templates do not move`);
  if (vm.migration) {
    throw new ConflictError(`"${vm.name}" is already migrating (operation ${vm.migration.opId})`);
  }
  if (vm.desired === "deleted") throw new ConflictError(`"${vm.name}" is being deleted`);
  const live = vm.desired === "running" && vm.state === "running";
  if (!live && !isAtRest(vm)) {
    throw new ConflictError(`"${vm.name}" is ${vm.state}; migrate it running or stopped`);
  }
}

/** The scheduler picks (or checks) the destination; the source is never a candidate. */
export function chooseDestination(node: ClusterNode, vm: VmRecord, to?: string): string {
  if (to === vm.node) throw ValidationError.field("to", `"${vm.name}" is already on ${to}`);
  return placeOrExplain(node, placementRequestOf(node, vm, { node: to, exclude: [vm.node!] })).node;
}

export async function startMigration(
  node: ClusterNode,
  vm: VmRecord,
  to: string,
  by: string,
): Promise<OperationRecord> {
  const id = `mig-${crypto.randomUUID().slice(0, 8)}`;
  const op = await createOperation(node, {
    id,
    kind: "migrate",
    target: vm.name,
    runner: vm.node!,
    params: { from: vm.node, to, live: vm.state === "running" },
    by,
  });
  await node.propose({
    op: "vm.update",
    name: vm.name,
    changes: { migration: { opId: id, to } },
    by,
    at: Date.now(),
  });
  return op;
}

/**
 * How a host reaches a peer host for migration steps: its API URL, fetch as this
 * node (requests signed with its key, or, in plain-HTTP mode, the node's credential
 * header), and its address.
 */
export function migratorPeer(
  node: ClusterNode,
  name: string,
): {
  url: string;
  fetch: (url: string, init?: RequestInit) => Promise<Response>;
  address: string;
} {
  const m = node.fsm.member(name);
  if (!m) throw ValidationError.field("node", `"${name}" is not a member`);
  return {
    url: m.url,
    fetch: node.peerHttp.fetch,
    address: new URL(m.url).hostname.replace(/^\[|\]$/g, ""),
  };
}
