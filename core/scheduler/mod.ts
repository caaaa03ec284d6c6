/**
 * VM placement: filters (state, capacity with overcommit, labels, strict
 * groups) that explain each rejected host, spread/pack scoring with soft
 * groups, and an index that keeps decisions O(hosts).
 */
export * from "./placement.ts";
export type { PoolRule } from "./types.ts";
export { type HostUsage, PlacementIndex } from "./placement_index.ts";
export { SOFT_GROUP_WEIGHT } from "./scorers.ts";
export * from "./rebalance.ts";
