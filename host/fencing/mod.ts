/**
 * Fencing that does not depend on the node process: the per-host watchdog
 * (`novactl host watchdog`) and the node's client of it.
 */
export * from "./protocol.ts";
export * from "./client.ts";
export { runWatchdog } from "./watchdog.ts";
export * from "./host_fencing.ts";
export { isWatchdogInvocation, watchdogMain } from "./entry.ts";
