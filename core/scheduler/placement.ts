/**
 * One-off placement of a VM: builds an index from the given state and places
 * once. Callers that decide repeatedly against the same state (the leader per
 * applied index, a rebalancer plan) should keep a PlacementIndex instead.
 */
import { PlacementIndex } from "./placement_index.ts";
import type {
  HostView,
  PlacedVm,
  PlacementRequest,
  PlacementResult,
  SchedulerConfig,
} from "./types.ts";

export type {
  HostView,
  LabelConstraint,
  PlacedVm,
  PlacementFailure,
  PlacementGroup,
  PlacementRequest,
  PlacementResult,
  PlacementSuccess,
  SchedulerConfig,
  Strategy,
} from "./types.ts";

export function place(
  req: PlacementRequest,
  hosts: readonly HostView[],
  vms: Iterable<PlacedVm>,
  config: SchedulerConfig,
): PlacementResult {
  return new PlacementIndex(hosts, vms, config).place(req);
}

/**
 * `n2: memory 200 MiB free < 512 MiB requested; n3: cordoned`. With no host
 * to reject, that is the reason: never an empty explanation. `unregistered`
 * names members whose host has not registered yet (they are not hosts yet).
 */
export function explain(
  reasons: Record<string, string>,
  unregistered: readonly string[] = [],
): string {
  const parts = Object.entries(reasons).map(([n, why]) => `${n}: ${why}`);
  if (!parts.length && !unregistered.length) return "no hosts registered yet";
  if (!parts.length) parts.push("no hosts registered yet");
  for (const n of unregistered) {
    parts.push(
      `${n} has not registered as a host yet (it does once its accelerator probe decides)`,
    );
  }
  return parts.join("; ");
}
