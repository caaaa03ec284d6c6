/**
 * Host filters. Each returns the short reason shown to the operator when it
 * rejects a host, or null when the host passes. They take plain numbers so the
 * index can feed them from its precomputed usage without building objects.
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

export function inventoryRejection(host: HostView): string | null {
  return host.node.inventory ? null : "no inventory reported yet";
}

export function memoryRejection(freeMiB: number, requestedMiB: number): string | null {
  const free = Math.floor(freeMiB);
  return free < requestedMiB ? `memory ${free} MiB free < ${requestedMiB} MiB requested` : null;
}

export function cpuRejection(free: number, requested: number): string | null {
  return free < requested ? `cpu ${decimal(free)} free < ${requested} requested` : null;
}

export function diskRejection(freeBytes: number, requestedBytes: number): string | null {
  if (freeBytes >= requestedBytes) return null;
  return `disk ${gib(freeBytes)} GiB free < ${gib(requestedBytes)} GiB requested`;
}

/** The first constraint the host's labels break, e.g. `label zone=b != a`. */
export function labelRejection(
  labels: Record<string, string>,
  constraints: readonly LabelConstraint[],
): string | null {
  for (const c of constraints) {
    const actual = Object.hasOwn(labels, c.key) ? labels[c.key] : undefined;
    if (c.op === "=" && actual !== c.value) {
      return actual === undefined
        ? `label ${c.key} unset != ${c.value}`
        : `label ${c.key}=${actual} != ${c.value}`;
    }
    if (c.op === "!=" && actual === c.value) return `label ${c.key}=${actual} (want != ${c.value})`;
  }
  return null;
}

/**
 * Strict group rules. `othersHere` are the group's other members on this host;
 * `memberHosts` the hosts where any of them runs (empty: nothing placed yet).
 */
export function groupRejection(
  group: PlacementGroup,
  othersHere: readonly string[] | undefined,
  memberHosts: readonly string[],
): string | null {
  if (!group.strict) return null;
  if (group.policy === "anti-affinity") {
    return othersHere?.length
      ? `anti-affinity group ${group.name}: already runs ${listed(othersHere)}`
      : null;
  }
  if (!memberHosts.length || othersHere?.length) return null;
  return `affinity group ${group.name}: members are on ${listed(memberHosts)}`;
}

/** Long lists would drown the other hosts' reasons in `explain()`. */
function listed(names: readonly string[], max = 3): string {
  const shown = names.slice(0, max).join(", ");
  return names.length > max ? `${shown} and ${names.length - max} more` : shown;
}

function decimal(n: number): string {
  return String(Math.round(n * 100) / 100);
}

function gib(bytes: number): string {
  return String(Math.floor((bytes / GiB) * 10) / 10);
}
