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
 * Whether candidate `a` beats the best so far `b`. Spread breaks score ties
 * towards fewer VMs; the host name settles the rest so every node of the
 * cluster reaches the same decision from the same state.
 */
export function outranks(
  strategy: Strategy,
  a: { score: number; vms: number; name: string },
  b: { score: number; vms: number; name: string },
): boolean {
  if (a.score !== b.score) return a.score > b.score;
  if (strategy === "spread" && a.vms !== b.vms) return a.vms < b.vms;
  return a.name < b.name;
}
