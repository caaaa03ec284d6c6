/** Public API of the deterministic Raft core. */
export {
  ConfChangeError,
  LeadershipTransferError,
  NotLeaderError,
  type ProgressStatus,
  ProposalDroppedError,
  RaftInvariantError,
  RaftNode,
  type Status,
  validateConfChange,
} from "./raft.ts";
export type { ProgressState } from "./progress.ts";
export { MemoryStorage } from "./memory_storage.ts";
export * from "./types.ts";
