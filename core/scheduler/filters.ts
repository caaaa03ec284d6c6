/**
 * Host filters. Each comes as a test and the short reason shown to the
 * operator when it rejects a host. They are apart because the index records
 * only which filter rejected each host and the figure it saw; the sentence is
 * written when someone reads it, which most successful decisions never do.
 */
import type { HostView, LabelConstraint, PlacementGroup } from "./types.ts";

export const GiB = 2 ** 30;

/**
 * Only ready hosts take new VMs; the reason is the state itself ("cordoned").
 * The view's state, not the node record's, decides: the caller merges the
 * replicated cordon with liveness, which the record does not carry.
 */
export function stateRejection(host: HostView): string | null {
  if (host.state !== "ready") return host.state;
  if (host.schedulable === false) return "not schedulable";
  return null;
}

/** A host takes VMs once it reported its inventory and its accelerator probe has decided. */
export function inventoryRejection(host: HostView): string | null {
  if (!host.node.inventory) return "no inventory reported yet";
  if (host.node.inventory.accel === null) return "probing its accelerator";
  return null;
}

export function memoryFits(freeMiB: number, requestedMiB: number): boolean {
  return Math.floor(freeMiB) >= requestedMiB;
}

export function memoryReason(freeMiB: number, requestedMiB: number): string {
  return `memory ${Math.floor(freeMiB)} MiB free < ${requestedMiB} MiB requested`;
}

export function cpuFits(free: number, requested: number): boolean {
  return free >= requested;
}

export function cpuReason(free: number, requested: number): string {
  return `cpu ${Math.round(free * 100) / 100} free < ${requested} requested`;
}

export function diskFits(freeBytes: number, requestedBytes: number): boolean {
  return freeBytes >= requestedBytes;
}

export function diskReason(freeBytes: number, requestedBytes: number): string {
  return `disk ${gib(freeBytes)} GiB free < ${gib(requestedBytes)} GiB requested`;
}

/** Position of the first constraint the host's labels break, or -1. */
export function brokenConstraint(
  labels: Record<string, string>,
  constraints: readonly LabelConstraint[],
): number {
  for (let i = 0; i < constraints.length; i++) {
    const c = constraints[i];
    const matches = labelOf(labels, c.key) === c.value;
    if (matches !== (c.op === "=")) return i;
  }
  return -1;
}

/** `label zone=b != a`, `label zone unset != a`, `label zone=a (want != a)`. */
export function labelReason(labels: Record<string, string>, c: LabelConstraint): string {
  const actual = labelOf(labels, c.key);
  if (c.op === "!=") return `label ${c.key}=${actual} (want != ${c.value})`;
  return actual === undefined
    ? `label ${c.key} unset != ${c.value}`
    : `label ${c.key}=${actual} != ${c.value}`;
}

/**
 * Strict group rules. `othersHere` are the group's other members on this host;
 * `groupPlaced` whether any of them runs anywhere yet.
 */
export function groupAllows(
  group: PlacementGroup,
  othersHere: readonly string[] | undefined,
  groupPlaced: boolean,
): boolean {
  if (!group.strict) return true;
  const here = othersHere !== undefined && othersHere.length > 0;
  return group.policy === "anti-affinity" ? !here : here || !groupPlaced;
}

/** `memberHosts`: where the group's other members run, for the affinity reason. */
export function groupReason(
  group: PlacementGroup,
  othersHere: readonly string[] | undefined,
  memberHosts: readonly string[],
): string {
  return group.policy === "anti-affinity"
    ? `anti-affinity group ${group.name}: already runs ${listed(othersHere ?? [])}`
    : `affinity group ${group.name}: members are on ${listed(memberHosts)}`;
}

function labelOf(labels: Record<string, string>, key: string): string | undefined {
  return Object.hasOwn(labels, key) ? labels[key] : undefined;
}

/** Long lists would drown the other hosts' reasons in `explain()`. */
function listed(names: readonly string[], max = 3): string {
  const shown = names.slice(0, max).join(", ");
  return names.length > max ? `${shown} and ${names.length - max} more` : shown;
}

function gib(bytes: number): string {
  return String(Math.floor((bytes / GiB) * 10) / 10);
}
