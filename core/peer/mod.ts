/** HTTP between peers: the Raft transport, snapshot streaming, and the node's peer client (signed requests over TLS). */
export * from "./transport.ts";
export * from "./stream.ts";
export * from "./snapshot_receiver.ts";
export * from "./client.ts";
export * from "./signature.ts";
