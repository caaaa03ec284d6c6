/**
 * Types shared by the deterministic Raft core and its I/O edges.
 *
 * The core never touches clocks, disks or sockets: the driver feeds it
 * messages and ticks and receives a {@link Ready} describing what to persist,
 * what to send and what was committed (the etcd-raft design).
 */

/** Node identity; we use the node's unique name. */
export type NodeId = string;

export type EntryType = "normal" | "conf";

/** A log entry. `data` is opaque to the core except for `conf` entries. */
export interface Entry {
  index: number;
  term: number;
  type: EntryType;
  /** Opaque payload (JSON text for normal entries; JSON ConfChange for conf). An empty string is a no-op. */
  data: string;
}

export type ConfChangeType = "addLearner" | "promote" | "demote" | "remove";

/** Single-server membership change; at most one is pending at a time. */
export interface ConfChange {
  type: ConfChangeType;
  node: NodeId;
  /** Opaque context carried to the state machine (e.g. the peer's URL). */
  context?: string;
}

/** Membership as of some log index. */
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

export interface HardState {
  term: number;
  vote: NodeId | null;
  commit: number;
}

export interface SnapshotMeta {
  index: number;
  term: number;
  conf: ConfState;
}

export interface Snapshot {
  meta: SnapshotMeta;
  /** Serialized state machine at meta.index ("" when `file` holds it). */
  data: string;
  /**
   * Path of a local file holding the serialized state instead of `data`, so
   * large snapshots never sit in memory. Opaque to the core, which passes
   * snapshots through unchanged; the driver's storage and transport read the
   * file (and send it in chunks).
   */
  file?: string;
}

export type MessageType =
  | "app" // AppendEntries
  | "appResp"
  | "vote"
  | "voteResp"
  | "preVote"
  | "preVoteResp"
  | "heartbeat"
  | "heartbeatResp"
  | "snap" // InstallSnapshot
  | "timeoutNow"; // leadership transfer: start an election now

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** app: index of the entry preceding `entries`; vote/preVote: candidate's last log index; appResp: matched or rejected index. */
  index?: number;
  /** app: term of the entry at `index`; vote/preVote: candidate's last log term. */
  logTerm?: number;
  entries?: Entry[];
  /** app/heartbeat: leader's commit index. */
  commit?: number;
  /** Responses: true when the request was refused. */
  reject?: boolean;
  /** appResp on reject: follower's hint for fast back-off (its last index, or the first index of the conflicting term). */
  rejectHint?: number;
  /** appResp on reject: term of the follower entry at rejectHint (fast back-off by term). */
  rejectHintTerm?: number;
  snapshot?: Snapshot;
  /** heartbeat/heartbeatResp: ReadIndex context being confirmed. */
  context?: string;
  /** vote/preVote: set on elections caused by leadership transfer (bypasses leader stickiness). */
  transfer?: boolean;
}

export type Role = "follower" | "preCandidate" | "candidate" | "leader";

export interface SoftState {
  leader: NodeId | null;
  role: Role;
}

/** A ReadIndex request that is now safe to serve once `applied >= index`. */
export interface ReadState {
  index: number;
  context: string;
}

/**
 * Work handed from the core to the driver. The driver must, in order:
 * 1. persist `snapshot` (if any), then `entries` (replacing any stored entries
 *    with index >= entries[0].index), then `hardState` (if any) — durably;
 * 2. send `messages` — except that a leader may send them before its own write
 *    is durable (Raft thesis 10.2.1; core/cluster/ready_loop.ts does): a commit
 *    that counts its unsynced entries only surfaces in a later Ready, which the
 *    driver takes only after this one is durable. Everyone else sends only what
 *    is on disk, so every acknowledgment and vote is durable;
 * 3. apply `committedEntries` to the state machine (and `snapshot` if set);
 * 4. call `advance(ready)`.
 */
export interface Ready {
  softState: SoftState;
  hardState: HardState | null;
  entries: Entry[];
  snapshot: Snapshot | null;
  committedEntries: Entry[];
  messages: Message[];
  readStates: ReadState[];
  /**
   * ReadIndex contexts that will never produce a ReadState (leadership was
   * lost before they were confirmed); the driver should fail their waiters.
   * Absent when empty.
   */
  droppedReadContexts?: string[];
}

/** Read-only view of durable storage the core consults (log before `unstable`). */
export interface Storage {
  initialState(): { hardState: HardState; conf: ConfState };
  /** Entries in [lo, hi), at most maxBytes total (at least one entry) if maxBytes given. */
  entries(lo: number, hi: number, maxBytes?: number): Entry[];
  /** Term of entry i; for i == firstIndex()-1 returns the snapshot term. Throws CompactedError if compacted. */
  term(i: number): number;
  firstIndex(): number;
  lastIndex(): number;
  snapshot(): Snapshot;
}

export class CompactedError extends Error {
  constructor(index: number) {
    super(`log entry ${index} has been compacted`);
    this.name = "CompactedError";
  }
}

export interface RaftConfig {
  id: NodeId;
  /** Ticks without a leader message before a follower campaigns; randomized in [et, 2*et). */
  electionTicks: number;
  heartbeatTicks: number;
  /**
   * Ticks between heartbeats to learners; defaults to heartbeatTicks. Learners do not vote,
   * so their acks confirm neither leadership nor reads: they learn commits from appends, and
   * a heartbeat only tells them the leader lives and refills a stalled pipeline. A cluster
   * whose hosts are mostly learners pays per learner at this rate, not the voters' rate.
   */
  learnerHeartbeatTicks?: number;
  /** Seeded random source in [0,1) — Math.random in production, a PRNG in simulation. */
  random: () => number;
  preVote: boolean;
  checkQuorum: boolean;
  /** Max bytes of entries in one AppendEntries. */
  maxMsgBytes: number;
  /** Max in-flight AppendEntries per follower (pipelining). */
  maxInflight: number;
  /** Index already applied to the state machine at start (restart). */
  applied: number;
  /** Max bytes of committed entries handed out in one Ready (at least one entry); defaults to maxMsgBytes. */
  maxCommittedBytesPerReady?: number;
  /**
   * Max payload bytes a leader holds appended in its term but not yet
   * committed (etcd-raft's MaxUncommittedEntriesSize). A proposal that would
   * exceed it throws ProposalDroppedError, unless nothing is uncommitted (so
   * one large entry always fits). Unlimited when absent.
   */
  maxUncommittedBytes?: number;
  /**
   * Test-only fault hook: each named membership guard is switched off, so the
   * simulation can prove it notices (sim_test.ts). Never set in production;
   * read only at the three guard sites in raft.ts.
   */
  testingMutations?: ReadonlySet<RaftMutation>;
}

/**
 * Planted bugs in the membership guards (see {@link RaftConfig.testingMutations}):
 * - multiConfChange: the leader accepts a conf change while another is unapplied;
 * - campaignWithPendingConf: a node campaigns with committed conf changes it has not applied;
 * - confChangeBeforeTermCommit: a new leader proposes a conf change before committing in its
 *   term, i.e. before it knows which conf changes of earlier leaders in its log are committed.
 */
export type RaftMutation =
  | "multiConfChange"
  | "campaignWithPendingConf"
  | "confChangeBeforeTermCommit";
