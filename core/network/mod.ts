/**
 * Pure IPv4 address management for VM networks: parsing and comparing CIDR
 * blocks, checking and allocating VM addresses inside a network, and
 * generating and validating NIC MAC addresses. No I/O, clocks or randomness:
 * the replicated state machine calls these and every node must agree.
 */
export * from "./cidr.ts";
export * from "./ipam.ts";
export * from "./mac.ts";
export * from "./guest_addresses.ts";
