/**
 * VM operations offered to the API. Decisions (validation against state,
 * placement) are made on the leader against committed state; hosts then
 * converge on the desired state through their reconcile loops.
 */
import type { ClusterNode } from "./node.ts";
import type { VmDesired, VmRecord } from "../fsm/mod.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import { explain, type HostView, place } from "../scheduler/mod.ts";

export interface CreateVmRequest {
  name: string;
  image: string;
  cpus: number;
  memoryMiB: number;
  node?: string;
  ha: boolean;
  start: boolean;
  labels: Record<string, string>;
}

export function hostViews(node: ClusterNode): HostView[] {
  const members = new Map(node.status().members.map((m) => [m.name, m]));
  return node.fsm.nodes().map((n) => {
    const state = members.get(n.name)?.state ?? "offline";
    return { node: n, schedulable: state === "ready", state };
  });
}

export async function createVm(
  node: ClusterNode,
  req: CreateVmRequest,
  by: string,
): Promise<VmRecord> {
  await node.linearizableRead();
  if (node.fsm.vm(req.name)) throw new ConflictError(`VM "${req.name}" already exists`);
  if (!node.fsm.image(req.image)) {
    throw ValidationError.field("image", `no image named "${req.image}"`);
  }
  const placed = place(req, hostViews(node), node.fsm.vms(), node.fsm.config().config);
  if (!placed.ok) {
    throw new ConflictError(`no host can run ${req.name}: ${explain(placed.reasons)}`, {
      reasons: placed.reasons,
    });
  }
  return await node.propose({
    op: "vm.create",
    vm: {
      name: req.name,
      image: req.image,
      cpus: req.cpus,
      memoryMiB: req.memoryMiB,
      node: placed.node,
      ha: req.ha,
      labels: req.labels,
      desired: req.start ? "running" : "stopped",
    },
    by,
    at: Date.now(),
  }) as VmRecord;
}

export async function setVmDesired(
  node: ClusterNode,
  name: string,
  desired: VmDesired,
  by: string,
  opts: { force?: boolean } = {},
): Promise<unknown> {
  await node.linearizableRead();
  const vm = node.fsm.vm(name);
  if (!vm) throw new NotFoundError("vm", name);
  if (desired === "deleted" && !opts.force && vm.desired === "running" && vm.state === "running") {
    throw new ConflictError(`VM "${name}" is running; stop it first or delete with --force`);
  }
  return await node.propose({ op: "vm.desired", name, desired, by, at: Date.now() });
}
