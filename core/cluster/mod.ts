/** A running cluster member (Raft driver) and the membership operations built on it. */
export * from "./node.ts";
export * from "./service.ts";
export * from "./inventory.ts";
export * from "./bootstrap.ts";
export * from "./config_service.ts";
export * from "./image_service.ts";
export * from "./vm_service.ts";
export * from "./lease.ts";
export * from "./lease_service.ts";
export * from "./ha.ts";
export * from "./migration_service.ts";
export * from "./drain_service.ts";
export * from "./rebalancer.ts";
export * from "./operation_service.ts";
export * from "./audit.ts";
export * from "./report_batcher.ts";
export * from "./cluster_metrics.ts";
