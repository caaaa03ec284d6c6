/** VM placement: capacity filters with overcommit, per-host explanations of rejections. */
export * from "./placement.ts";
