/**
 * A host's part of real networks (the networking issue): its own Open vSwitch
 * daemons and OVN (the central databases and northd where a node runs them,
 * and every host's ovn-controller), all supervised by the node. The replicated
 * network state they are derived from lives in `core/fsm/networks.ts`.
 *
 * @module
 */
export * from "./daemon_dir.ts";
export * from "./ovs_host.ts";
export * from "./ovn.ts";
export * from "./northbound.ts";
export * from "./northbound_routers.ts";
export * from "./bridge_mappings.ts";
export * from "./nic.ts";
export * from "./underlay.ts";
export * from "./ovn_cluster.ts";
export * from "./host_network.ts";
export * from "./northbound_reconciler.ts";
export * from "./northbound_migration.ts";
export * from "./southbound_chassis.ts";
