/** Errors the Raft core throws at its callers (the driver), never at peers. */
import type { NodeId } from "./types.ts";

/** The operation needs the leader; `leader` is who this node believes leads (null if unknown or moving). */
export class NotLeaderError extends Error {
  constructor(readonly leader: NodeId | null, reason?: string) {
    super(
      reason ?? (leader ? `not the leader; leader is ${leader}` : "not the leader; leader unknown"),
    );
    this.name = "NotLeaderError";
  }
}

/** A membership change was refused (another one is pending, or it is invalid). */
export class ConfChangeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfChangeError";
  }
}

/** A leadership transfer was refused (e.g. the target is not a voter). */
export class LeadershipTransferError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LeadershipTransferError";
  }
}

/**
 * A Raft safety invariant does not hold on this node: a leader's entries conflict
 * with our committed prefix, the commit index points past our log, a log entry is
 * unreadable. Only lost or corrupted storage (or a bug) leads here, and going on
 * could apply or acknowledge a different history than the cluster's, so the driver
 * must stop the node loudly instead of dropping the message that revealed it.
 */
export class RaftInvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RaftInvariantError";
  }
}

/**
 * A proposal was refused because the leader already holds too many
 * uncommitted bytes (RaftConfig.maxUncommittedBytes): retry once the
 * cluster has caught up. Nothing was appended.
 */
export class ProposalDroppedError extends Error {
  constructor(readonly uncommittedBytes: number, readonly limit: number) {
    super(
      `proposal dropped: ${uncommittedBytes} uncommitted bytes already pending (limit ${limit}); retry later`,
    );
    this.name = "ProposalDroppedError";
  }
}
