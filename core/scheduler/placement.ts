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

/** `n2: memory 200 MiB free < 512 MiB requested; n3: cordoned` */
export function explain(reasons: Record<string, string>): string {
  return Object.entries(reasons).map(([n, why]) => `${n}: ${why}`).join("; ");
}
