/**
 * Host scorers: higher wins. The base score is a memory percentage so it reads
 * naturally in `vm create --dry-run`; soft group rules add or remove far more
 * than 100 so they outrank the base score without ever rejecting a host.
 */
import type { PlacementGroup, Strategy } from "./types.ts";

/** Weight of one soft group rule; larger than any base score. */
export const SOFT_GROUP_WEIGHT = 1000;

/**
 * spread: percent of memory left free once the VM is placed, so hosts of
 * different sizes fill evenly. pack: percent used, so the fullest host that
 * still fits is filled first and whole hosts stay free for large VMs.
 */
export function strategyScore(
  strategy: Strategy,
  freeAfterMiB: number,
  capacityMiB: number,
): number {
  const freeFraction = capacityMiB > 0 ? freeAfterMiB / capacityMiB : 0;
  return strategy === "spread" ? 100 * freeFraction : 100 * (1 - freeFraction);
}

/**
 * Soft anti-affinity costs a weight per member already on the host, so the
 * least crowded host wins when none is empty; soft affinity earns one weight
 * for joining any member. Strict rules are filters, not scores.
 */
export function groupScore(group: PlacementGroup | undefined, membersHere: number): number {
  if (!group || group.strict) return 0;
  if (group.policy === "anti-affinity") return -SOFT_GROUP_WEIGHT * membersHere;
  return membersHere > 0 ? SOFT_GROUP_WEIGHT : 0;
}

/**
 * Whether a candidate beats the best so far. Candidates come in host-name
 * order, so a later one must be strictly better: equal hosts go to the first
 * name, and every node of the cluster reaches the same decision from the same
 * state. Spread breaks score ties towards the host with fewer VMs.
 */
export function outranks(
  strategy: Strategy,
  score: number,
  vms: number,
  bestScore: number,
  bestVms: number,
): boolean {
  if (score !== bestScore) return score > bestScore;
  return strategy === "spread" && vms < bestVms;
}
