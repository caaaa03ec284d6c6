/** HTTP between peers: the Raft transport, snapshot streaming, and the node's mutual-TLS client. */
export * from "./transport.ts";
export * from "./snapshot_receiver.ts";
export * from "./client.ts";
