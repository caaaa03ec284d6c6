/** HTTP transport for Raft messages between peers, authenticated by the cluster secret. */
export * from "./transport.ts";
export * from "./snapshot_receiver.ts";
