/**
 * Placement of a VM on a host. Pure: given hosts, the VMs already placed and
 * the cluster configuration, it picks a host or explains, per host, why none
 * fits. Filters and scorers grow here (constraints, groups: a later issue).
 */
import type { ClusterConfig } from "../config/mod.ts";
import type { NodeRecord, VmRecord } from "../fsm/mod.ts";

export interface PlacementRequest {
  cpus: number;
  memoryMiB: number;
  /** Explicit host, as `vm create --node`. */
  node?: string;
}

export interface HostView {
  node: NodeRecord;
  /** Whether the host is reachable and accepts new VMs (ready, not cordoned). */
  schedulable: boolean;
  state: string;
}

export type PlacementResult =
  | { ok: true; node: string; freeMemoryMiB: number }
  | { ok: false; reasons: Record<string, string> };

interface Capacity {
  cpus: number;
  memoryMiB: number;
}

function capacityOf(host: NodeRecord, config: ClusterConfig): Capacity {
  const inv = host.inventory;
  return {
    cpus: (inv?.cpus ?? 0) * config["scheduler.overcommit.cpu"],
    memoryMiB: (inv?.memoryMiB ?? 0) * config["scheduler.overcommit.memory"],
  };
}

function usedOn(host: string, vms: VmRecord[]): Capacity {
  const mine = vms.filter((v) => v.node === host && v.desired !== "deleted");
  return {
    cpus: mine.reduce((n, v) => n + v.cpus, 0),
    memoryMiB: mine.reduce((n, v) => n + v.memoryMiB, 0),
  };
}

/** Why `host` cannot take the request, or null when it can. */
function rejection(
  h: HostView,
  req: PlacementRequest,
  vms: VmRecord[],
  config: ClusterConfig,
): string | null {
  if (!h.schedulable) return h.state;
  if (!h.node.inventory) return "no inventory reported yet";
  const cap = capacityOf(h.node, config);
  const used = usedOn(h.node.name, vms);
  const freeMem = Math.floor(cap.memoryMiB - used.memoryMiB);
  if (freeMem < req.memoryMiB) return `memory ${freeMem} MiB free < ${req.memoryMiB} MiB requested`;
  const freeCpu = cap.cpus - used.cpus;
  if (freeCpu < req.cpus) return `cpu ${freeCpu} free < ${req.cpus} requested`;
  return null;
}

export function place(
  req: PlacementRequest,
  hosts: HostView[],
  vms: VmRecord[],
  config: ClusterConfig,
): PlacementResult {
  const candidates = req.node ? hosts.filter((h) => h.node.name === req.node) : hosts;
  if (req.node && !candidates.length) return { ok: false, reasons: { [req.node]: "no such node" } };
  const reasons: Record<string, string> = {};
  let best: { node: string; free: number } | null = null;
  for (const h of candidates) {
    const why = rejection(h, req, vms, config);
    if (why) {
      reasons[h.node.name] = why;
      continue;
    }
    const free = capacityOf(h.node, config).memoryMiB - usedOn(h.node.name, vms).memoryMiB;
    // Spread: the host with most free memory; ties go to the name for determinism.
    if (!best || free > best.free || (free === best.free && h.node.name < best.node)) {
      best = { node: h.node.name, free };
    }
  }
  if (!best) return { ok: false, reasons };
  return { ok: true, node: best.node, freeMemoryMiB: Math.floor(best.free) };
}

/** `n2: memory 200 MiB free < 512 MiB requested; n3: cordoned` */
export function explain(reasons: Record<string, string>): string {
  return Object.entries(reasons).map(([n, why]) => `${n}: ${why}`).join("; ");
}
