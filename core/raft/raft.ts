/**
 * The deterministic Raft state machine (etcd-raft style).
 *
 * A RaftNode never touches clocks, disks or sockets and never draws its own
 * randomness: the driver calls tick() on a timer, step() for every message
 * received, and repeatedly takes a Ready (what to persist, send and apply),
 * handles it in the documented order and calls advance(). Everything a node
 * acknowledges to a peer is emitted in the same Ready as the state it
 * acknowledges, so "persist, then send" makes every acknowledgment durable.
 *
 * Features: pre-vote, check-quorum with leader stickiness, log replication
 * with fast back-off and pipelining, snapshots, single-server membership
 * changes (applied when committed), ReadIndex and leadership transfer.
 *
 * Driver contract, beyond the order documented on {@link Ready}:
 * - One Ready at a time: ready() throws until the previous one is advanced.
 *   step()/tick()/propose() may run in between; their output comes in the next Ready.
 * - committedEntries may include entries of the same Ready's `entries`
 *   (a lone voter commits at once): persist first, then apply. After a
 *   `snapshot`, committedEntries continue at snapshot index + 1.
 * - cfg.applied is the state machine's applied index; it must lie between
 *   the storage snapshot's index (restore the state machine from it first)
 *   and the persisted commit index. Entries after it are handed out again.
 * - Membership changes take effect inside the core when their entry is handed
 *   out in committedEntries; the driver only applies them to its state machine.
 *   On restart, storage.initialState().conf must be the membership as of
 *   cfg.applied (later conf entries are re-delivered and re-applied).
 * - Every `snap` message must be followed by reportSnapshot(to, ok): until
 *   then (or until the follower acknowledges it) the leader sends that
 *   follower nothing else.
 * - Reads whose context appears in droppedReadContexts will never complete.
 */
import { RaftLog } from "./log.ts";
import { Progress, type ProgressState } from "./progress.ts";
import { ReadOnly } from "./read_only.ts";
import {
  ConfChangeError,
  LeadershipTransferError,
  NotLeaderError,
  ProposalDroppedError,
  RaftInvariantError,
} from "./errors.ts";
import {
  CompactedError,
  type ConfChange,
  type ConfState,
  type Entry,
  type EntryType,
  type HardState,
  type Message,
  type MessageType,
  type NodeId,
  type RaftConfig,
  type RaftMutation,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  type SoftState,
  type Storage,
} from "./types.ts";

export {
  ConfChangeError,
  LeadershipTransferError,
  NotLeaderError,
  ProposalDroppedError,
  RaftInvariantError,
};

export interface ProgressStatus {
  match: number;
  next: number;
  recentActive: boolean;
  state: ProgressState;
}

export interface Status {
  id: NodeId;
  term: number;
  vote: NodeId | null;
  commit: number;
  /** Last index the driver confirmed applied (through advance()). */
  applied: number;
  lead: NodeId | null;
  role: Role;
  lastIndex: number;
  conf: ConfState;
  /** Replication progress per member; empty unless this node leads. */
  progress: Record<NodeId, ProgressStatus>;
  /** Target of an ongoing leadership transfer. */
  transferee: NodeId | null;
  /** Leader: payload bytes proposed in this term, not yet committed (see maxUncommittedBytes). */
  uncommittedBytes: number;
}

/** Why an election starts: on timeout (with or without pre-vote) or on a leader's request. */
type CampaignKind = "preElection" | "election" | "transfer";

type VoteResult = "won" | "lost" | "pending";

export class RaftNode {
  readonly id: NodeId;
  private readonly cfg: RaftConfig;
  private readonly log: RaftLog;

  private term = 0;
  private vote: NodeId | null = null;
  private lead: NodeId | null = null;
  private role: Role = "follower";

  /** Membership as of the last applied conf change (or snapshot). */
  private readonly voters = new Set<NodeId>();
  private readonly learners = new Set<NodeId>();
  /** Leader only: replication progress of every member including itself. */
  private prs = new Map<NodeId, Progress>();
  private readonly votes = new Map<NodeId, boolean>();

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private learnerHeartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;

  private leadTransferee: NodeId | null = null;
  /** Index of the last conf change the leader appended; a new one waits until it is applied. */
  private pendingConfIndex = 0;

  private readOnly = new ReadOnly();
  /** Reads waiting for the leader's first commit in its term. */
  private deferredReads: string[] = [];

  // Output accumulated until the next ready().
  private msgs: Message[] = [];
  private readStates: ReadState[] = [];
  private droppedReads: string[] = [];
  /** Leader: appends are pending for followers (proposals are batched until ready()). */
  private needBroadcast = false;
  /**
   * Leader: payload bytes proposed in this term and not yet handed out as
   * committed (an estimate: entries of older terms reduce it too, never below 0).
   */
  private uncommittedBytes = 0;

  private prevSoft: SoftState;
  private prevHard: HardState;
  private readyOutstanding = false;

  constructor(cfg: RaftConfig, storage: Storage) {
    validateConfig(cfg);
    this.cfg = { ...cfg };
    this.id = cfg.id;
    const { hardState, conf } = storage.initialState();
    this.log = new RaftLog(storage, hardState.commit, cfg.applied);
    this.setConf(conf);
    this.term = hardState.term;
    this.vote = hardState.vote;
    this.becomeFollower(hardState.term, null);
    this.prevHard = { ...hardState };
    this.prevSoft = this.softState();
  }

  // ---- driver API -------------------------------------------------------------

  /** Changes {@link RaftConfig.learnerHeartbeatTicks} (it follows a cluster setting). */
  setLearnerHeartbeatTicks(ticks: number): void {
    this.cfg.learnerHeartbeatTicks = Math.max(1, Math.floor(ticks));
  }

  tick(): void {
    if (this.role === "leader") this.tickHeartbeat();
    else this.tickElection();
  }

  /** Starts an election now (e.g. a lone voter after restart). No-op on a leader or non-voter. */
  campaign(): void {
    this.hup(this.cfg.preVote ? "preElection" : "election");
  }

  step(m: Message): void {
    if (m.to !== this.id || m.from === this.id) return;
    if (!this.stepTerm(m)) return;
    if (m.type === "vote" || m.type === "preVote") {
      this.handleVoteRequest(m);
      return;
    }
    switch (this.role) {
      case "leader":
        this.stepLeader(m);
        break;
      case "candidate":
      case "preCandidate":
        this.stepCandidate(m);
        break;
      case "follower":
        this.stepFollower(m);
        break;
    }
  }

  /** Appends a normal entry; returns its index. Batched with other proposals until ready(). */
  propose(data: string): number {
    this.checkCanPropose();
    this.reserveUncommitted(data.length);
    const index = this.appendEntries("normal", data);
    this.needBroadcast = true;
    return index;
  }

  /** Appends a single-server membership change; it takes effect when committed. */
  proposeConfChange(cc: ConfChange): number {
    this.checkCanPropose();
    if (this.pendingConfIndex > this.log.applying && !this.mutated("multiConfChange")) {
      throw new ConfChangeError(
        `another configuration change (index ${this.pendingConfIndex}) is still pending`,
      );
    }
    if (!this.committedInCurrentTerm() && !this.mutated("confChangeBeforeTermCommit")) {
      // Ongaro's fix for the single-server change bug: first commit something in our term.
      throw new ConfChangeError("the leader has not yet committed an entry in its current term");
    }
    validateConfChange(cc, this.voters, this.learners);
    const index = this.appendEntries("conf", JSON.stringify(cc));
    this.pendingConfIndex = index;
    this.needBroadcast = true;
    return index;
  }

  /**
   * Linearizable read: once a quorum confirms this node still leads, a
   * ReadState{index: commit at request time, context} is emitted; the read
   * may be served when the state machine has applied that index.
   */
  readIndex(context: string): void {
    if (this.role !== "leader") throw new NotLeaderError(this.lead);
    if (!context) throw new TypeError("readIndex context must be a non-empty string");
    if (this.readOnly.has(context) || this.deferredReads.includes(context)) return;
    if (!this.committedInCurrentTerm()) {
      // Our commit index may lag the previous leader's until our first entry commits.
      this.deferredReads.push(context);
      return;
    }
    this.startReads([context]);
  }

  transferLeadership(to: NodeId): void {
    if (this.role !== "leader") throw new NotLeaderError(this.lead);
    if (to === this.id) {
      this.leadTransferee = null;
      return;
    }
    if (!this.voters.has(to)) throw new LeadershipTransferError(`${to} is not a voter`);
    if (this.leadTransferee === to) return;
    this.leadTransferee = to;
    // The transfer must finish within one election timeout (checked in tickHeartbeat).
    this.electionElapsed = 0;
    const pr = this.prs.get(to)!;
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(to);
  }

  /** The transport could not reach `id`: stop pipelining to it and probe instead. */
  reportUnreachable(id: NodeId): void {
    const pr = this.role === "leader" ? this.prs.get(id) : undefined;
    if (pr?.state === "replicate") pr.becomeProbe();
  }

  /** Outcome of sending a snapshot to `id`; either way, probe before sending more. */
  reportSnapshot(id: NodeId, success: boolean): void {
    const pr = this.role === "leader" ? this.prs.get(id) : undefined;
    if (pr?.state !== "snapshot") return;
    if (!success) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    // Wait for the follower's answer (or a heartbeat response) before the next append.
    pr.probeSent = true;
  }

  hasReady(): boolean {
    if (this.msgs.length || this.readStates.length || this.droppedReads.length) return true;
    if (this.role === "leader" && this.needBroadcast) return true;
    if (!sameSoftState(this.softState(), this.prevSoft)) return true;
    if (!sameHardState(this.hardState(), this.prevHard)) return true;
    const u = this.log.unstable;
    if (u.nextSnapshot() || u.offsetInProgress < u.offset + u.entries.length) return true;
    return this.log.hasUnappliedCommitted();
  }

  /**
   * Collects the work for the driver. Must be followed by advance(ready)
   * before the next ready().
   */
  ready(): Ready {
    if (this.readyOutstanding) throw new Error("ready() called again before advance()");
    this.flushBroadcast();
    const committedEntries = this.handOutCommitted();
    // Applying a conf change may have changed quorum or added members to catch up.
    this.flushBroadcast();
    const hard = this.hardState();
    const rd: Ready = {
      softState: this.softState(),
      hardState: sameHardState(hard, this.prevHard) ? null : hard,
      entries: this.log.unstable.nextEntries(),
      snapshot: this.log.unstable.nextSnapshot(),
      committedEntries,
      messages: this.msgs,
      readStates: this.readStates,
    };
    if (this.droppedReads.length) rd.droppedReadContexts = this.droppedReads;
    this.msgs = [];
    this.readStates = [];
    this.droppedReads = [];
    this.prevSoft = rd.softState;
    this.prevHard = hard;
    this.log.unstable.acceptInProgress();
    this.readyOutstanding = true;
    return rd;
  }

  /** The driver persisted, sent and applied `rd`. */
  advance(rd: Ready): void {
    if (!this.readyOutstanding) throw new Error("advance() without an outstanding ready()");
    this.readyOutstanding = false;
    if (rd.snapshot) {
      this.log.unstable.stableSnapTo(rd.snapshot.meta.index);
      this.log.applied = Math.max(this.log.applied, rd.snapshot.meta.index);
    }
    const lastEntry = rd.entries[rd.entries.length - 1];
    if (lastEntry) this.log.unstable.stableTo(lastEntry.index, lastEntry.term);
    const lastApplied = rd.committedEntries[rd.committedEntries.length - 1];
    if (lastApplied) this.log.applied = Math.max(this.log.applied, lastApplied.index);
  }

  status(): Status {
    const progress: Record<NodeId, ProgressStatus> = {};
    for (const [id, pr] of this.prs) {
      progress[id] = {
        match: pr.match,
        next: pr.next,
        recentActive: pr.recentActive,
        state: pr.state,
      };
    }
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      commit: this.log.committed,
      applied: this.log.applied,
      lead: this.lead,
      role: this.role,
      lastIndex: this.log.lastIndex(),
      conf: this.confState(),
      progress,
      transferee: this.leadTransferee,
      uncommittedBytes: this.uncommittedBytes,
    };
  }

  /**
   * Cheap subset of status() for hot paths (simulation invariants, metrics, every request's
   * "am I leading?"): status() copies every peer's progress, which with hundreds of learner
   * hosts made each lease grant cost as much as the rest of the leader's idle work.
   */
  basicStatus(): {
    term: number;
    role: Role;
    lead: NodeId | null;
    commit: number;
    lastIndex: number;
  } {
    return {
      term: this.term,
      role: this.role,
      lead: this.lead,
      commit: this.log.committed,
      lastIndex: this.log.lastIndex(),
    };
  }

  /** Whether `id` votes or learns in the current configuration (without copying it). */
  isMember(id: NodeId): boolean {
    return this.voters.has(id) || this.learners.has(id);
  }

  /** Term of the entry at `index` in this node's log (persisted or not); undefined if compacted or absent. */
  termAt(index: number): number | undefined {
    return this.log.termOrUndefined(index);
  }

  // ---- roles ------------------------------------------------------------------

  private becomeFollower(term: number, lead: NodeId | null): void {
    this.reset(term);
    this.role = "follower";
    this.lead = lead;
  }

  private becomePreCandidate(): void {
    // Pre-vote changes neither term nor vote: a failed pre-election leaves no trace.
    this.role = "preCandidate";
    this.votes.clear();
    this.lead = null;
  }

  private becomeCandidate(): void {
    this.reset(this.term + 1);
    this.role = "candidate";
    this.vote = this.id;
  }

  private becomeLeader(): void {
    this.reset(this.term);
    this.role = "leader";
    this.lead = this.id;
    this.resetProgress();
    const self = this.prs.get(this.id)!;
    self.becomeReplicate();
    self.recentActive = true;
    // Conservatively treat any conf change in our log as pending until applied.
    if (!this.mutated("confChangeBeforeTermCommit")) this.pendingConfIndex = this.log.lastIndex();
    // The no-op lets us commit (and so learn the commit index) in our term.
    this.appendEntries("normal", "");
    this.needBroadcast = true;
  }

  /** Common to every role change: new timers, no votes, no leader state. */
  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = null;
    }
    this.lead = null;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.learnerHeartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.cfg.electionTicks +
      Math.floor(this.cfg.random() * this.cfg.electionTicks);
    this.leadTransferee = null;
    this.votes.clear();
    this.prs = new Map();
    this.pendingConfIndex = 0;
    this.needBroadcast = false;
    this.uncommittedBytes = 0;
    this.dropPendingReads();
  }

  private resetProgress(): void {
    this.prs = new Map();
    for (const id of this.voters) this.addProgress(id, false);
    for (const id of this.learners) this.addProgress(id, true);
  }

  private addProgress(id: NodeId, isLearner: boolean): Progress {
    const pr = new Progress(this.log.lastIndex() + 1, isLearner, this.cfg.maxInflight);
    if (id === this.id) pr.match = this.log.lastIndex();
    this.prs.set(id, pr);
    return pr;
  }

  private dropPendingReads(): void {
    const contexts = [...this.readOnly.drain(), ...this.deferredReads];
    this.deferredReads = [];
    for (const c of contexts) this.droppedReads.push(c);
  }

  // ---- timers -----------------------------------------------------------------

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(this.cfg.preVote ? "preElection" : "election");
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum && !this.checkQuorumActive()) {
        this.becomeFollower(this.term, null);
        return;
      }
      // A transfer that did not complete within an election timeout is abandoned.
      this.leadTransferee = null;
    }
    this.learnerHeartbeatElapsed++;
    const learnersDue =
      this.learnerHeartbeatElapsed >= (this.cfg.learnerHeartbeatTicks ?? this.cfg.heartbeatTicks);
    if (learnersDue) this.learnerHeartbeatElapsed = 0;
    if (this.heartbeatElapsed >= this.cfg.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat(learnersDue);
    } else if (learnersDue) {
      this.bcastHeartbeat(true, false);
    }
  }

  /** Whether a quorum of voters was heard from since the last check; starts a new round. */
  private checkQuorumActive(): boolean {
    let active = 0;
    for (const id of this.voters) {
      if (id === this.id || this.prs.get(id)?.recentActive) active++;
    }
    for (const [id, pr] of this.prs) if (id !== this.id) pr.recentActive = false;
    return active >= quorum(this.voters.size);
  }

  // ---- elections --------------------------------------------------------------

  private promotable(): boolean {
    return this.voters.has(this.id);
  }

  private hup(kind: CampaignKind): void {
    if (this.role === "leader" || !this.promotable()) return;
    // Our membership view would be stale: apply committed conf changes first.
    if (this.hasUnappliedConfChanges() && !this.mutated("campaignWithPendingConf")) return;
    this.startCampaign(kind);
  }

  private hasUnappliedConfChanges(): boolean {
    if (!this.log.hasUnappliedCommitted()) return false;
    const ents = this.log.entries(this.log.applying + 1, this.log.committed + 1);
    return ents.some((e) => e.type === "conf");
  }

  private startCampaign(kind: CampaignKind): void {
    let type: MessageType;
    let term: number;
    if (kind === "preElection") {
      this.becomePreCandidate();
      type = "preVote";
      // Ask for votes in the term we would move to, without moving yet.
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      type = "vote";
      term = this.term;
    }
    if (this.poll(this.id, true) === "won") {
      // A single voter wins at once.
      if (kind === "preElection") this.startCampaign("election");
      else this.becomeLeader();
      return;
    }
    const index = this.log.lastIndex();
    const logTerm = this.log.lastTerm();
    for (const id of this.voters) {
      if (id === this.id) continue;
      const m: Message = { type, from: this.id, to: id, term, index, logTerm };
      if (kind === "transfer") m.transfer = true;
      this.msgs.push(m);
    }
  }

  private poll(id: NodeId, granted: boolean): VoteResult {
    if (!this.votes.has(id)) this.votes.set(id, granted);
    let yes = 0;
    let no = 0;
    for (const v of this.voters) {
      const g = this.votes.get(v);
      if (g === true) yes++;
      else if (g === false) no++;
    }
    const q = quorum(this.voters.size);
    if (yes >= q) return "won";
    if (no > this.voters.size - q) return "lost";
    return "pending";
  }

  private inLease(): boolean {
    return this.cfg.checkQuorum && this.lead !== null &&
      this.electionElapsed < this.cfg.electionTicks;
  }

  /**
   * Term rules shared by every role. Returns false when the message must be
   * dropped (after answering it if that helps the sender catch up).
   */
  private stepTerm(m: Message): boolean {
    if (m.term > this.term) {
      const isVote = m.type === "vote" || m.type === "preVote";
      // Leader stickiness: while we hear from a leader, a disruptive candidate is ignored.
      if (isVote && !m.transfer && this.inLease()) return false;
      // A pre-vote never changes our term; a granted pre-vote response carries the term
      // the pre-candidate is about to move to.
      if (m.type === "preVote") return true;
      if (m.type === "preVoteResp" && !m.reject) return true;
      const fromLeader = m.type === "app" || m.type === "heartbeat" || m.type === "snap";
      this.becomeFollower(m.term, fromLeader ? m.from : null);
      return true;
    }
    if (m.term < this.term) {
      this.answerStale(m);
      return false;
    }
    return true;
  }

  private answerStale(m: Message): void {
    if (m.type === "app" || m.type === "heartbeat") {
      // A deposed leader that can't win (pre-vote) or won't step down (check-quorum)
      // would otherwise never learn about the newer term. Nor would a leader whose
      // follower moved on by campaigning within a stale membership that no longer
      // lists the leader as a voter (so never asked it for a vote).
      this.send({ type: "appResp", to: m.from });
    } else if (m.type === "preVote") {
      // The pre-candidate learns our term and stops bothering the cluster.
      this.send({ type: "preVoteResp", to: m.from, reject: true });
    }
  }

  private handleVoteRequest(m: Message): void {
    const canVote = this.vote === m.from ||
      (this.vote === null && this.lead === null) ||
      (m.type === "preVote" && m.term > this.term);
    const respType: MessageType = m.type === "vote" ? "voteResp" : "preVoteResp";
    if (canVote && this.log.isUpToDate(m.index ?? 0, m.logTerm ?? 0)) {
      // The grant carries the election's term (ahead of ours for a pre-vote).
      this.msgs.push({ type: respType, from: this.id, to: m.from, term: m.term, reject: false });
      if (m.type === "vote") {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send({ type: respType, to: m.from, reject: true });
    }
  }

  private handleVoteResponse(m: Message): void {
    const result = this.poll(m.from, !m.reject);
    if (result === "won") {
      if (this.role === "preCandidate") this.startCampaign("election");
      else this.becomeLeader();
    } else if (result === "lost") {
      this.becomeFollower(this.term, null);
    }
  }

  // ---- per-role message handling -------------------------------------------------

  private stepFollower(m: Message): void {
    switch (m.type) {
      case "app":
        this.heardFromLeader(m.from);
        this.handleAppendEntries(m);
        break;
      case "heartbeat":
        this.heardFromLeader(m.from);
        this.handleHeartbeat(m);
        break;
      case "snap":
        this.heardFromLeader(m.from);
        this.handleSnapshot(m);
        break;
      case "timeoutNow":
        // The leader handed over: campaign now, skipping pre-vote and stickiness.
        this.hup("transfer");
        break;
    }
  }

  private heardFromLeader(from: NodeId): void {
    this.electionElapsed = 0;
    this.lead = from;
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case "app":
        this.becomeFollower(m.term, m.from);
        this.handleAppendEntries(m);
        break;
      case "heartbeat":
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        break;
      case "snap":
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        break;
      case "voteResp":
        if (this.role === "candidate") this.handleVoteResponse(m);
        break;
      case "preVoteResp":
        // Only grants for the term we are pre-campaigning for count.
        if (this.role === "preCandidate" && (m.reject || m.term === this.term + 1)) {
          this.handleVoteResponse(m);
        }
        break;
    }
  }

  private stepLeader(m: Message): void {
    const pr = this.prs.get(m.from);
    if (!pr) return; // not (or no longer) a member
    if (m.type === "appResp") this.handleAppendResponse(m, pr);
    else if (m.type === "heartbeatResp") this.handleHeartbeatResponse(m, pr);
  }

  // ---- follower side of replication --------------------------------------------

  private handleAppendEntries(m: Message): void {
    const index = m.index ?? 0;
    if (index < this.log.committed) {
      // Everything up to our commit index matches the leader: tell it so.
      this.send({ type: "appResp", to: m.from, index: this.log.committed });
      return;
    }
    const lastNew = this.log.maybeAppend(index, m.logTerm ?? 0, m.commit ?? 0, m.entries ?? []);
    if (lastNew !== undefined) {
      this.send({ type: "appResp", to: m.from, index: lastNew });
      return;
    }
    const hint = this.log.findConflictByTerm(Math.min(index, this.log.lastIndex()), m.logTerm ?? 0);
    this.send({
      type: "appResp",
      to: m.from,
      index,
      reject: true,
      rejectHint: hint.index,
      rejectHintTerm: hint.term,
    });
  }

  private handleHeartbeat(m: Message): void {
    // The leader sends min(our match, its commit), so this never exceeds what we hold.
    this.log.commitTo(m.commit ?? 0);
    const resp: Message = { type: "heartbeatResp", from: this.id, to: m.from, term: this.term };
    if (m.context) resp.context = m.context;
    this.msgs.push(resp);
  }

  private handleSnapshot(m: Message): void {
    const snap = m.snapshot;
    if (!snap) return;
    if (this.restore(snap)) {
      this.send({ type: "appResp", to: m.from, index: this.log.lastIndex() });
    } else {
      this.send({ type: "appResp", to: m.from, index: this.log.committed });
    }
  }

  /** Installs a snapshot newer than our commit index; returns whether it was installed. */
  private restore(snap: Snapshot): boolean {
    const { index, term } = snap.meta;
    if (index <= this.log.committed) return false;
    if (this.log.matchTerm(index, term)) {
      // We already hold the snapshot's entry: just fast-forward the commit index.
      this.log.commitTo(index);
      return false;
    }
    this.log.restore(snap);
    this.setConf(snap.meta.conf);
    return true;
  }

  // ---- leader side of replication ------------------------------------------------

  private handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    const index = m.index ?? 0;
    if (m.reject) {
      this.handleAppendRejection(m, pr, index);
      return;
    }
    if (index > this.log.lastIndex()) return; // cannot ack what we never sent
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(index)) return;
    if (pr.state === "probe") {
      pr.becomeReplicate();
    } else if (pr.state === "snapshot" && pr.match + 1 >= this.log.firstIndex()) {
      // The follower caught up past the snapshot; the log can carry it from here.
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === "replicate") {
      pr.inflights.freeLE(index);
    }
    if (!this.maybeCommit() && wasPaused) this.sendAppend(m.from);
    // Freed flow control may allow several (size-limited) appends at once.
    while (this.maybeSendAppend(m.from, false)) { /* keep pipelining */ }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.sendTimeoutNow(m.from);
    }
  }

  private handleAppendRejection(m: Message, pr: Progress, rejected: number): void {
    let hint = m.rejectHint ?? 0;
    const hintTerm = m.rejectHintTerm ?? 0;
    // Skip every entry of ours whose term can't match the follower's log at `hint`.
    if (hintTerm > 0) hint = this.log.findConflictByTerm(hint, hintTerm).index;
    if (!pr.maybeDecrTo(rejected, hint)) return;
    if (pr.state === "replicate") pr.becomeProbe();
    this.sendAppend(m.from);
  }

  private handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    pr.probeSent = false;
    // Lost acks could stall a full pipeline forever; a heartbeat round frees a slot.
    if (pr.state === "replicate" && pr.inflights.full()) pr.inflights.freeFirstOne();
    if (pr.match < this.log.lastIndex()) this.sendAppend(m.from);
    if (m.context) this.recvReadAck(m.from, m.context);
  }

  private sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  /**
   * Sends the next AppendEntries (or a snapshot when the entries are
   * compacted) unless flow control pauses `to`. With sendIfEmpty=false an
   * append without entries is not sent. Returns whether anything was sent.
   */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.prs.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    let prevTerm: number | undefined;
    let entries: Entry[];
    try {
      prevTerm = this.log.term(prevIndex);
      entries = this.log.entries(pr.next, this.log.lastIndex() + 1, this.cfg.maxMsgBytes);
    } catch (err) {
      if (!(err instanceof CompactedError)) throw err;
      return this.sendSnapshot(to, pr);
    }
    if (prevTerm === undefined) {
      throw new RaftInvariantError(`progress of ${to} is beyond our log`);
    }
    if (!entries.length && !sendIfEmpty) return false;
    this.send({
      type: "app",
      to,
      index: prevIndex,
      logTerm: prevTerm,
      entries,
      commit: this.log.committed,
    });
    pr.sentEntries(entries);
    return true;
  }

  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    // Snapshots are expensive: only send one to a follower we know is alive.
    if (!pr.recentActive) return false;
    const snapshot = this.log.snapshot();
    if (snapshot.meta.index === 0) {
      throw new RaftInvariantError("entries are compacted but no snapshot exists");
    }
    pr.becomeSnapshot(snapshot.meta.index);
    this.send({ type: "snap", to, snapshot });
    return true;
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send({ type: "timeoutNow", to });
  }

  /** Sends pending appends to every follower: one message, or a pipeline of them when replicating. */
  private flushBroadcast(): void {
    if (this.role !== "leader" || !this.needBroadcast) return;
    this.needBroadcast = false;
    for (const id of this.prs.keys()) {
      if (id === this.id) continue;
      this.sendAppend(id);
      while (this.maybeSendAppend(id, false)) { /* fill the pipeline */ }
    }
  }

  /**
   * Heartbeats the voters and, when `learners`, the learners too. A read round needs
   * only the voters (only their acks count), so it never costs a message per learner.
   */
  private bcastHeartbeat(learners: boolean, voters = true): void {
    // Re-sending the newest pending read context makes reads survive lost heartbeats.
    const context = this.readOnly.lastPendingContext();
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      if (!(pr.isLearner ? learners : voters)) continue;
      const m: Message = {
        type: "heartbeat",
        from: this.id,
        to: id,
        term: this.term,
        // Never beyond the follower's match: it may not hold our later entries yet.
        commit: Math.min(pr.match, this.log.committed),
      };
      if (context !== undefined && !pr.isLearner) m.context = context;
      this.msgs.push(m);
    }
  }

  private appendEntries(type: EntryType, data: string): number {
    const index = this.log.lastIndex() + 1;
    this.log.append([{ index, term: this.term, type, data }]);
    this.prs.get(this.id)?.maybeUpdate(index);
    // A single voter commits on its own.
    this.maybeCommit();
    return index;
  }

  /** Advances the commit index to what a quorum of voters holds, counting only our term's entries. */
  private maybeCommit(): boolean {
    const index = this.quorumMatchIndex();
    if (index <= this.log.committed) return false;
    // Raft §5.4.2: an older term's entry is committed only indirectly, by a current one.
    if (this.log.termOrUndefined(index) !== this.term) return false;
    this.log.commitTo(index);
    this.needBroadcast = true;
    this.releaseDeferredReads();
    return true;
  }

  private quorumMatchIndex(): number {
    const matches: number[] = [];
    for (const id of this.voters) matches.push(this.prs.get(id)?.match ?? 0);
    if (!matches.length) return 0;
    matches.sort((a, b) => b - a);
    return matches[quorum(matches.length) - 1];
  }

  /** Test-only: whether a planted bug switches off one membership guard (never in production). */
  private mutated(guard: RaftMutation): boolean {
    return this.cfg.testingMutations?.has(guard) ?? false;
  }

  private committedInCurrentTerm(): boolean {
    return this.log.termOrUndefined(this.log.committed) === this.term;
  }

  /** Bounds the leader's memory: refuses a proposal beyond maxUncommittedBytes. */
  private reserveUncommitted(bytes: number): void {
    const limit = this.cfg.maxUncommittedBytes;
    if (limit !== undefined && this.uncommittedBytes > 0 && this.uncommittedBytes + bytes > limit) {
      throw new ProposalDroppedError(this.uncommittedBytes, limit);
    }
    this.uncommittedBytes += bytes;
  }

  private releaseUncommitted(ents: Entry[]): void {
    if (this.uncommittedBytes === 0) return;
    let bytes = 0;
    for (const e of ents) bytes += e.data.length;
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes - bytes);
  }

  private checkCanPropose(): void {
    if (this.role !== "leader") throw new NotLeaderError(this.lead);
    if (this.leadTransferee !== null) {
      throw new NotLeaderError(null, `leadership is being transferred to ${this.leadTransferee}`);
    }
  }

  // ---- ReadIndex ----------------------------------------------------------------

  private startReads(contexts: string[]): void {
    if (this.voters.size === 1 && this.voters.has(this.id)) {
      for (const context of contexts) {
        this.readStates.push({ index: this.log.committed, context });
      }
      return;
    }
    for (const context of contexts) this.readOnly.add(this.log.committed, context, this.id);
    // One heartbeat round to the voters, carrying the newest context, confirms them all.
    this.bcastHeartbeat(false);
  }

  private releaseDeferredReads(): void {
    if (!this.deferredReads.length || !this.committedInCurrentTerm()) return;
    const contexts = this.deferredReads;
    this.deferredReads = [];
    this.startReads(contexts);
  }

  private recvReadAck(from: NodeId, context: string): void {
    if (!this.voters.has(from)) return;
    const acks = this.readOnly.recvAck(from, context);
    if (!acks) return;
    let voterAcks = 0;
    for (const id of acks) if (this.voters.has(id)) voterAcks++;
    if (voterAcks < quorum(this.voters.size)) return;
    for (const rs of this.readOnly.advance(context)) this.readStates.push(rs);
  }

  // ---- membership ---------------------------------------------------------------

  /** Hands out committed entries, applying conf changes to our membership as they go. */
  private handOutCommitted(): Entry[] {
    const maxBytes = this.cfg.maxCommittedBytesPerReady ?? this.cfg.maxMsgBytes;
    const ents = this.log.nextCommitted(maxBytes);
    if (!ents.length) return ents;
    this.log.applying = ents[ents.length - 1].index;
    this.releaseUncommitted(ents);
    for (const e of ents) {
      if (e.type === "conf" && e.data !== "") this.applyConfChange(parseConfChange(e));
    }
    return ents;
  }

  private applyConfChange(cc: ConfChange): void {
    const { node } = cc;
    switch (cc.type) {
      case "addLearner":
        if (this.voters.has(node) || this.learners.has(node)) return;
        this.learners.add(node);
        if (this.role === "leader") {
          const pr = this.addProgress(node, true);
          // Probe with our last entry right away instead of waiting for a heartbeat.
          pr.next = Math.max(this.log.lastIndex(), 1);
          // New members count as active so check-quorum does not trip before they answer.
          pr.recentActive = true;
        }
        break;
      case "promote":
        if (!this.learners.delete(node)) return;
        this.voters.add(node);
        this.setLearnerFlag(node, false);
        break;
      case "demote":
        if (!this.voters.delete(node)) return;
        this.learners.add(node);
        this.setLearnerFlag(node, true);
        break;
      case "remove":
        this.voters.delete(node);
        this.learners.delete(node);
        if (node !== this.id) this.prs.delete(node);
        break;
    }
    this.afterConfChange();
  }

  private afterConfChange(): void {
    if (!this.promotable() && this.role !== "follower") {
      // A removed or demoted leader (or candidate) steps down; followers learn the
      // commit from the broadcast already queued for this Ready.
      this.becomeFollower(this.term, null);
      return;
    }
    if (this.role !== "leader") return;
    if (this.leadTransferee !== null && !this.voters.has(this.leadTransferee)) {
      this.leadTransferee = null;
    }
    // A smaller quorum may commit more; new members should not wait for a heartbeat.
    if (!this.maybeCommit()) {
      for (const id of this.prs.keys()) if (id !== this.id) this.maybeSendAppend(id, false);
    }
  }

  private setLearnerFlag(node: NodeId, isLearner: boolean): void {
    const pr = this.prs.get(node);
    if (pr) pr.isLearner = isLearner;
  }

  private setConf(conf: ConfState): void {
    this.voters.clear();
    this.learners.clear();
    for (const v of conf.voters) this.voters.add(v);
    for (const l of conf.learners) if (!this.voters.has(l)) this.learners.add(l);
  }

  private confState(): ConfState {
    return { voters: [...this.voters], learners: [...this.learners] };
  }

  // ---- helpers ------------------------------------------------------------------

  private send(m: Omit<Message, "from" | "term">): void {
    this.msgs.push({ ...m, from: this.id, term: this.term });
  }

  private softState(): SoftState {
    return { leader: this.lead, role: this.role };
  }

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }
}

function quorum(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

function sameSoftState(a: SoftState, b: SoftState): boolean {
  return a.leader === b.leader && a.role === b.role;
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function parseConfChange(e: Entry): ConfChange {
  try {
    return JSON.parse(e.data) as ConfChange;
  } catch {
    throw new RaftInvariantError(`conf entry ${e.index} holds invalid JSON: the log is corrupted`);
  }
}

/** Rejects changes that are not a valid single-server step from the current membership. */
export function validateConfChange(
  cc: ConfChange,
  voters: ReadonlySet<NodeId>,
  learners: ReadonlySet<NodeId>,
): void {
  const node = cc.node;
  if (typeof node !== "string" || node === "") {
    throw new ConfChangeError("conf change needs a node id");
  }
  const isVoter = voters.has(node);
  const isLearner = learners.has(node);
  switch (cc.type) {
    case "addLearner":
      if (isVoter || isLearner) throw new ConfChangeError(`${node} is already a member`);
      return;
    case "promote":
      if (!isLearner) throw new ConfChangeError(`${node} is not a learner`);
      return;
    case "demote":
      if (!isVoter) throw new ConfChangeError(`${node} is not a voter`);
      if (voters.size === 1) throw new ConfChangeError(`cannot demote the last voter ${node}`);
      return;
    case "remove":
      if (!isVoter && !isLearner) throw new ConfChangeError(`${node} is not a member`);
      if (isVoter && voters.size === 1) {
        throw new ConfChangeError(`cannot remove the last voter ${node}`);
      }
      return;
    default:
      throw new ConfChangeError(`unknown conf change type ${(cc as ConfChange).type}`);
  }
}

function validateConfig(cfg: RaftConfig): void {
  if (!cfg.id) throw new Error("raft config: id is required");
  if (cfg.heartbeatTicks < 1) throw new Error("raft config: heartbeatTicks must be >= 1");
  if (cfg.electionTicks <= cfg.heartbeatTicks) {
    throw new Error("raft config: electionTicks must exceed heartbeatTicks");
  }
  if (cfg.maxInflight < 1) throw new Error("raft config: maxInflight must be >= 1");
  if (cfg.maxMsgBytes < 1) throw new Error("raft config: maxMsgBytes must be >= 1");
}
