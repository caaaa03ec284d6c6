/**
 * Whether a node can do its whole job: what `/readyz` answers and what `node start` tells
 * systemd (READY=1) once it holds. One definition, so a unit that systemd calls started is a
 * node a load balancer calls ready.
 */
import type { ClusterNode } from "./node.ts";

export type HostReadiness = "unregistered" | "probing" | "registered";

export interface Readiness {
  ready: boolean;
  leader: string | null;
  appliedIndex: number;
  host: HostReadiness;
}

/**
 * Ready: the cluster has a leader, the local replica holds state, and this node is a
 * registered host whose accelerator is known (until then a VM placed here could not start,
 * and placement passes it over).
 */
export function readinessOf(node: ClusterNode): Readiness {
  const s = node.status();
  const host = hostReadiness(node);
  const ready = s.leader !== null && s.appliedIndex > 0 && host === "registered";
  return { ready, leader: s.leader, appliedIndex: s.appliedIndex, host };
}

/** What a not-yet-ready node is waiting for, in words (systemd's STATUS= line). */
export function readinessStatus(r: Readiness): string {
  if (r.ready) return `ready (leader ${r.leader})`;
  if (r.leader === null) return "waiting for a leader";
  if (r.appliedIndex === 0) return "catching up with the cluster state";
  if (r.host === "unregistered") return "registering this host";
  return "probing the accelerator";
}

/** Whether this node's host is in the replicated state, and with a decided accelerator. */
function hostReadiness(node: ClusterNode): HostReadiness {
  const inventory = node.fsm.node(node.id)?.inventory;
  if (!inventory) return "unregistered";
  return inventory.accel === null ? "probing" : "registered";
}
