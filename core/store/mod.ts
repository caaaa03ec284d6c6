/** Durable local storage of a node: the Raft log in SQLite and the node's identity files. */
export { SqliteRaftLog } from "./raft_log.ts";
export * from "./identity.ts";
export * from "./files.ts";
export * from "./permissions.ts";
export * from "./streams.ts";
