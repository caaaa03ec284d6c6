/**
 * A running cluster member: drives the deterministic Raft core with real
 * I/O — SQLite for the log and state machine, HTTP for peers, timers for
 * ticks — and offers proposals, linearizable reads and membership changes
 * to the API layer.
 */
import { closeAudit } from "./audit.ts";
import { join } from "node:path";
import { setImmediate } from "node:timers";
import {
  ConfChangeError,
  NotLeaderError as RaftNotLeaderError,
  ProposalDroppedError,
  RaftInvariantError,
  RaftNode,
} from "../raft/mod.ts";
import type { ConfChange, Entry, Message, NodeId, Ready } from "../raft/types.ts";
import { SqliteRaftLog } from "../store/mod.ts";
import type { NodeIdentity } from "../store/mod.ts";
import { type ApplyResult, type Command, type Member, StateMachine } from "../fsm/mod.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import {
  ConflictError,
  NotLeaderError,
  NovaError,
  OverloadedError,
  TimeoutError,
  UnavailableError,
} from "../errors/mod.ts";
import {
  type Envelope,
  PeerHttp,
  PeerTransport,
  type SnapshotChunkMeta,
  SnapshotReceiver,
} from "../peer/mod.ts";
import { log } from "../log/mod.ts";
import { metrics } from "../metrics/mod.ts";
import { ReadyLoop } from "./ready_loop.ts";
import type { NodeTls } from "../pki/mod.ts";
import { assertCommandAllowed, assertDataDirSupported } from "../upgrade/mod.ts";

export interface ClusterNodeOptions {
  dataDir: string;
  identity: NodeIdentity;
  /**
   * The node's certificate, key and cluster CA: its peer requests present them.
   * Without it (unit tests) peers are reached over plain HTTP with the node's credential.
   */
  tls?: NodeTls | null;
  tickMs?: number;
  electionTicks?: number;
  heartbeatTicks?: number;
  /** Called once the node has applied its own removal from the cluster. */
  onRemoved?: () => void;
  /**
   * Called when the node must stop (storage failure, failed apply, broken Raft
   * invariant) after it halted itself; the default exits the process with status 70.
   */
  onFatal?: (err: unknown) => void;
  /**
   * Max bytes of proposals the leader holds uncommitted; beyond it proposals
   * get 503 with Retry-After. Env NOVACTL_MAX_UNCOMMITTED_BYTES; default 64 MiB.
   */
  maxUncommittedBytes?: number;
  /** Bytes per streamed snapshot chunk. Env NOVACTL_SNAPSHOT_CHUNK_BYTES; default 1 MiB. */
  snapshotChunkBytes?: number;
  /** Max bytes queued for one peer. Env NOVACTL_PEER_QUEUE_BYTES; default 16 MiB. */
  peerQueueBytes?: number;
}

/** A positive integer from the environment, or the fallback. */
function envBytes(name: string, fallback: number): number {
  const v = Number(Deno.env.get(name));
  return Number.isSafeInteger(v) && v > 0 ? v : fallback;
}

interface Waiter {
  term: number;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface ReadRound {
  context: string;
  index: number | null;
  waiters: { resolve: () => void; reject: (e: Error) => void }[];
  timer: ReturnType<typeof setTimeout>;
}

export type MemberState = "ready" | "offline" | "cordoned" | "draining" | "drained";

export interface MemberStatus extends Member {
  state: MemberState;
  /** The program version it last reported (null before it registered as a host). */
  version: string | null;
  lastContactMs: number | null;
  match: number | null;
}

export interface ClusterStatus {
  clusterId: string;
  /** The cluster level the replicated state is at (core/upgrade/). */
  level: number;
  self: string;
  leader: string | null;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  snapshotIndex: number;
  members: MemberStatus[];
}

const TRACE = Deno.env.get("NOVACTL_TRACE_READY") === "1";
const PROPOSAL_TIMEOUT_MS = 10_000;
/** Log bytes after which a compaction is due whatever the state's size (bounds the log's memory). */
const MAX_LOG_BYTES = 64 << 20;
/** Log bytes after which a compaction is due however few (batched) entries hold them. */
const SNAPSHOT_LOG_BYTES = 4 << 20;
/** Raft clock defaults: a follower waits electionTicks..2×electionTicks ticks for a leader. */
export const DEFAULT_TICK_MS = 50;
export const DEFAULT_ELECTION_TICKS = 10;
const READ_TIMEOUT_MS = 5_000;
/** The longest interval between heartbeats to a learner. */
const LEARNER_HEARTBEAT_MAX_MS = 2_500;

export class ClusterNode {
  readonly id: NodeId;
  readonly log: SqliteRaftLog;
  readonly fsm: StateMachine;
  readonly raft: RaftNode;
  readonly transport: PeerTransport;
  private readonly readyLoop: ReadyLoop;
  readonly snapshotReceiver: SnapshotReceiver;
  private readonly opts:
    & Required<Omit<ClusterNodeOptions, "onRemoved" | "onFatal" | "tls">>
    & Pick<ClusterNodeOptions, "onRemoved" | "onFatal" | "tls">;
  /** The one client for every request to a peer (TLS, signed requests; see core/peer/client.ts). */
  readonly peerHttp: PeerHttp;
  private readonly waiters = new Map<number, Waiter>();
  private readonly appliedWaiters: { index: number; resolve: () => void }[] = [];
  private readRounds: ReadRound[] = [];
  private nextRead: ReadRound | null = null;
  private readonly lastContact = new Map<NodeId, number>();
  private tickTimer: ReturnType<typeof setInterval> | undefined;
  private membershipTimer: ReturnType<typeof setInterval> | undefined;
  private scheduled = false;
  private processing = false;
  private leader: NodeId | null = null;
  private role = "follower";
  private stopped = false;
  /** Set by failStop: nothing is stepped, persisted or applied any more. */
  private halted = false;
  private removed = false;

  constructor(opts: ClusterNodeOptions) {
    this.opts = {
      tickMs: DEFAULT_TICK_MS,
      electionTicks: DEFAULT_ELECTION_TICKS,
      heartbeatTicks: 2,
      maxUncommittedBytes: envBytes("NOVACTL_MAX_UNCOMMITTED_BYTES", 64 << 20),
      snapshotChunkBytes: envBytes("NOVACTL_SNAPSHOT_CHUNK_BYTES", 1 << 20),
      peerQueueBytes: envBytes("NOVACTL_PEER_QUEUE_BYTES", 16 << 20),
      ...opts,
    };
    this.id = opts.identity.name;
    this.log = new SqliteRaftLog(join(opts.dataDir, "raft.db"));
    this.fsm = new StateMachine(join(opts.dataDir, "state.db"));
    this.recoverStateMachine();
    try {
      assertDataDirSupported(this.fsm.clusterLevel(), opts.dataDir);
    } catch (err) {
      this.fsm.close();
      void this.log.close().catch(() => {});
      throw err;
    }
    this.log.raiseCommitTo(this.fsm.appliedIndex());
    this.log.confAtApplied = () => this.fsm.confState();
    this.raft = new RaftNode({
      id: this.id,
      electionTicks: this.opts.electionTicks,
      heartbeatTicks: this.opts.heartbeatTicks,
      random: Math.random,
      preVote: true,
      checkQuorum: true,
      maxMsgBytes: 1 << 20,
      maxInflight: 256,
      maxUncommittedBytes: this.opts.maxUncommittedBytes,
      applied: this.fsm.appliedIndex(),
    }, this.log);
    this.peerHttp = new PeerHttp(opts.tls ?? null, {
      name: this.id,
      credential: opts.identity.peerCredential,
    });
    this.transport = new PeerTransport(
      {
        id: this.id,
        url: opts.identity.url,
        clusterId: opts.identity.clusterId,
      },
      {
        resolve: (peer) => this.fsm.member(peer)?.url || undefined,
        unreachable: (peer) => this.raft.reportUnreachable(peer),
        removed: () => this.onRemovedByLeader(),
        snapshotSent: (peer, ok) => {
          this.raft.reportSnapshot(peer, ok);
          this.schedule();
        },
      },
      { maxQueueBytes: this.opts.peerQueueBytes, snapshotChunkBytes: this.opts.snapshotChunkBytes },
      this.peerHttp.fetch,
    );
    this.snapshotReceiver = new SnapshotReceiver(
      this.log.snapshotDir,
      (env) => this.receive(env, env.messages[0].snapshot?.file),
    );
    this.readyLoop = this.createReadyLoop();
  }

  /** The Ready loop with production I/O (the simulation runs it with its own). */
  private createReadyLoop(): ReadyLoop {
    return new ReadyLoop(this.raft, this.log, {
      send: (messages) => this.transport.send(messages),
      observe: (rd) => this.observeSoftState(rd),
      durable: (rd, ms) => {
        if (rd.entries.length || rd.hardState) metrics.fsyncSeconds.observe(ms / 1000);
      },
      restore: (snap) => this.restoreSnapshot(snap.meta),
      apply: (entries) => this.applyCommitted(entries),
      readStates: (rd) => this.handleReadStates(rd),
      advanced: (rd, ms) => {
        this.releaseAppliedWaiters();
        this.updateGauges();
        if (TRACE) this.traceReady(rd, ms);
      },
      stopped: () => this.stopped || this.halted,
      appliedIndex: () => this.fsm.appliedIndex(),
      snapshotThreshold: () => this.snapshotThreshold(),
      maxLogBytes: MAX_LOG_BYTES,
      snapshotLogBytes: SNAPSHOT_LOG_BYTES,
      snapshotToFile: (path) => this.fsm.snapshotToFile(path),
      removeFile: (path) => Deno.remove(path),
      compacted: (snap, ms) => {
        log.info("log compacted", { index: snap.index, bytes: snap.bytes, ms: Math.round(ms) });
        metrics.snapshots.inc();
      },
      compactionFailed: (err) => log.error("snapshot failed", { error: String(err) }),
    });
  }

  /** A state machine behind the snapshot (crash between log and FSM writes) restarts from it. */
  private recoverStateMachine(): void {
    const snap = this.log.snapshot();
    if (snap.meta.index > this.fsm.appliedIndex() && snap.file) {
      this.fsm.restoreFromFileSync(snap.file, snap.meta.index);
    }
  }

  get identity(): NodeIdentity {
    return this.opts.identity;
  }

  /** The node's TLS identity (null in unit tests that run without one). */
  get tls(): NodeTls | null {
    return this.opts.tls ?? null;
  }

  start(): void {
    this.tickTimer = setInterval(() => {
      try {
        this.raft.setLearnerHeartbeatTicks(this.learnerHeartbeatTicks());
        this.raft.tick();
      } catch (err) {
        this.failStop("raft tick failed", err); // only a broken invariant throws here
        return;
      }
      this.schedule();
    }, this.opts.tickMs);
    this.membershipTimer = setInterval(() => this.manageMembership(), 500);
    // A lone voter need not wait an election timeout to lead again.
    const conf = this.fsm.confState();
    if (conf.voters.length === 1 && conf.voters[0] === this.id) this.raft.campaign();
    this.schedule();
  }

  // ---- the Ready loop -------------------------------------------------------

  private schedule(): void {
    if (this.scheduled || this.stopped || this.halted) return;
    this.scheduled = true;
    // A macrotask, not a microtask, so requests that arrive meanwhile join this
    // batch; setImmediate because nested setTimeout(0) is clamped to milliseconds.
    setImmediate(() => {
      this.scheduled = false;
      this.processReady();
    });
  }

  private processReady(): void {
    if (this.processing || this.stopped || this.halted) return;
    this.processing = true;
    this.loopDone = this.drainReady().finally(() => {
      this.processing = false;
      // Work that arrived during the last await is picked up now.
      if (this.raft.hasReady()) this.schedule();
    });
  }

  private async drainReady(): Promise<void> {
    try {
      await this.readyLoop.drain();
    } catch (err) {
      // Storage and apply failures are fatal: continuing could acknowledge unpersisted
      // state, or record an outcome the other replicas did not (ApplyFailedError).
      this.failStop("fatal error in raft loop", err);
    }
  }

  /**
   * Stops this node for good after a failure that is not the cluster's but this
   * node's (or a broken invariant): it halts the Raft loop at once, logs loudly
   * and, unless a test supplied onFatal, exits non-zero. A supervisor restarts it;
   * it then replays from what is durable, or stays down if the disk is broken.
   */
  private failStop(what: string, err: unknown): void {
    if (this.halted) return;
    this.halted = true;
    clearInterval(this.tickTimer);
    clearInterval(this.membershipTimer);
    log.error(what, { error: String(err), stack: (err as Error)?.stack, fatal: true });
    if (this.opts.onFatal) this.opts.onFatal(err);
    else Deno.exit(70);
  }

  private loopDone: Promise<void> = Promise.resolve();

  private traceReady(rd: Ready, ms: number): void {
    log.debug("ready", {
      t: Math.round(performance.now() * 10) / 10,
      entries: rd.entries.length,
      committed: rd.committedEntries.length,
      msgs: rd.messages.map((m) => `${m.type}>${m.to}:${m.entries?.length ?? ""}`).join(","),
      ms: Math.round(ms * 100) / 100,
    });
  }

  /**
   * Restores the state machine from the snapshot just persisted, streaming
   * its file; ticks and peer messages go on meanwhile (the next Ready waits).
   */
  private async restoreSnapshot(meta: { index: number; term: number }): Promise<void> {
    const t0 = performance.now();
    await this.fsm.restoreFromFile(this.log.snapshotPath(meta), meta.index);
    log.info("snapshot restored", {
      index: meta.index,
      bytes: this.log.snapshotBytes(),
      ms: Math.round(performance.now() - t0),
    });
  }

  private observeSoftState(rd: Ready): void {
    const { leader, role } = rd.softState;
    if (leader !== this.leader) {
      log.info("leader changed", { leader, term: this.raft.basicStatus().term });
      metrics.leaderChanges.inc();
      this.leader = leader;
    }
    if (role !== this.role) {
      this.role = role;
      if (role !== "leader") this.failReads(new NotLeaderError(leader));
    }
  }

  private applyCommitted(entries: Entry[]): void {
    const results = this.fsm.applyEntries(entries);
    for (const e of entries) {
      const w = this.waiters.get(e.index);
      if (!w) continue;
      this.waiters.delete(e.index);
      clearTimeout(w.timer);
      if (e.term !== w.term) {
        w.reject(new UnavailableError("proposal was overwritten by a new leader; retry"));
        continue;
      }
      const r: ApplyResult = results.get(e.index) ?? { ok: true, value: null };
      if (r.ok) w.resolve(r.value);
      else w.reject(r.error);
    }
    const conf = entries.filter((e) => e.type === "conf");
    if (conf.length) this.onMembershipApplied(conf, results);
  }

  /**
   * Only an applied change that removes this very node removes it. Not being a member
   * after some change proves nothing: a joiner catching up through the log applies the
   * additions of the members before it long before its own (measured: a 4th node joining
   * a cluster with 10,000 VMs and no recent snapshot shut itself down as "removed").
   */
  private onMembershipApplied(conf: Entry[], results: Map<number, ApplyResult>): void {
    this.forgetDepartedPeers();
    if (this.removed || this.fsm.member(this.id)) return;
    const removesMe = conf.some((e) => {
      if (results.get(e.index)?.ok === false) return false;
      const cc = JSON.parse(e.data) as ConfChange;
      return cc.type === "remove" && cc.node === this.id;
    });
    if (removesMe) this.markRemoved("applied its own removal");
  }

  /** Per-peer state must not outlive membership, or it grows with every node ever removed. */
  private forgetDepartedPeers(): void {
    const members = new Set(this.fsm.members().map((m) => m.name));
    for (const peer of [...this.lastContact.keys()]) {
      if (members.has(peer)) continue;
      this.lastContact.delete(peer);
      this.transport.forget(peer);
    }
  }

  /**
   * A removed node often never learns that its removal committed (the leader
   * stops replicating to it), so the leader tells it when it calls again.
   */
  private onRemovedByLeader(): void {
    if (!this.removed) this.markRemoved("the leader no longer lists it as a member");
  }

  private markRemoved(why: string): void {
    this.removed = true;
    log.warn("this node was removed from the cluster", { why });
    setTimeout(() => this.opts.onRemoved?.(), 200);
  }

  private snapshotThreshold(): number {
    try {
      return this.fsm.config().config["raft.snapshotEntries"];
    } catch {
      return DEFAULT_CONFIG["raft.snapshotEntries"];
    }
  }

  private updateGauges(): void {
    const s = this.raft.basicStatus();
    metrics.term.set(s.term);
    metrics.commitIndex.set(s.commit);
    metrics.appliedIndex.set(this.fsm.appliedIndex());
    metrics.isLeader.set(s.role === "leader" ? 1 : 0);
  }

  // ---- inbound peer traffic -------------------------------------------------

  /**
   * Steps the messages of a peer's envelope. A snapshot's `file` is a local
   * path, so only our SnapshotReceiver may set it (as `snapshotFile`).
   */
  receive(env: Envelope, snapshotFile?: string): void {
    for (const m of env.messages) if (m.snapshot) m.snapshot.file = snapshotFile;
    if (this.stopped) return;
    if (this.halted) throw new UnavailableError("node halted after a fatal error");
    if (env.clusterId !== this.opts.identity.clusterId) {
      throw new NovaError("forbidden", "message from another cluster");
    }
    if (this.transport.blocked.has(env.from)) {
      throw new UnavailableError("peer blocked by fault injection");
    }
    this.transport.learnUrl(env.from, env.fromUrl);
    this.lastContact.set(env.from, Date.now());
    if (TRACE) {
      log.debug("recv", {
        t: Math.round(performance.now() * 10) / 10,
        from: env.from,
        msgs: env.messages.map((m) => `${m.type}:${m.index ?? ""}`).join(","),
      });
    }
    for (const m of this.screenNonMember(env.from, env.messages)) this.stepSafely(m);
    this.schedule();
  }

  /** One chunk of a snapshot the leader streams to us (see SnapshotReceiver). */
  async receiveSnapshotChunk(
    meta: SnapshotChunkMeta,
    body: ReadableStream<Uint8Array> | null,
  ): Promise<void> {
    if (this.stopped) throw new UnavailableError("node is shutting down");
    if (this.halted) throw new UnavailableError("node halted after a fatal error");
    if (meta.clusterId !== this.opts.identity.clusterId) {
      throw new NovaError("forbidden", "snapshot from another cluster");
    }
    this.lastContact.set(meta.from, Date.now());
    await this.snapshotReceiver.chunk(meta, body);
  }

  /**
   * A removed member (which often never learns of its removal) must not disturb
   * the cluster: the leader refuses it outright (410, and it shuts down), and
   * nobody lets a non-member's newer term depose a leader it still follows.
   * Without a known leader there is nothing to disturb, and a voter added while
   * this node lagged must be able to win its vote (liveness), so its messages pass.
   */
  private screenNonMember(from: NodeId, messages: Message[]): Message[] {
    if (this.raft.isMember(from)) return messages;
    const s = this.raft.status();
    this.refuseRemovedMember(from, s);
    if (!s.lead) return messages;
    const kept = messages.filter((m) => m.term <= s.term);
    if (kept.length < messages.length) {
      log.debug("dropped newer-term messages from a non-member", { from, term: s.term });
      metrics.droppedNonMemberMessages.inc(messages.length - kept.length);
    }
    return kept;
  }

  /**
   * Only the leader decides a non-member sender was removed: its membership
   * includes every committed change, and a joiner is added before it ever sends.
   */
  private refuseRemovedMember(from: NodeId, s: { role: string; applied: number; term: number }) {
    if (s.role !== "leader") return;
    // Once an entry of its own term is applied, a new leader's membership includes every
    // change committed before its term (each took effect when handed out for applying).
    if (this.raft.termAt(s.applied) !== s.term) return;
    throw new NovaError("removed", `${from} is not a member of this cluster`);
  }

  /** Ordinary bad or stale messages are dropped; a broken Raft invariant stops the node. */
  private stepSafely(m: Message): void {
    try {
      this.raft.step(m);
    } catch (err) {
      if (err instanceof RaftInvariantError) {
        this.failStop(`raft invariant violated by ${m.type} from ${m.from}`, err);
        throw new UnavailableError("node halted: raft invariant violated");
      }
      log.warn("dropped raft message", { type: m.type, from: m.from, error: String(err) });
    }
  }

  // ---- proposals ------------------------------------------------------------

  isLeader(): boolean {
    return this.raft.basicStatus().role === "leader";
  }

  leaderId(): NodeId | null {
    return this.raft.basicStatus().lead || null;
  }

  leaderUrl(): string | null {
    const l = this.leaderId();
    if (!l) return null;
    return l === this.id ? this.opts.identity.url : this.fsm.member(l)?.url ?? null;
  }

  /** Replicates a command and resolves with its deterministic result once applied here. */
  propose(cmd: Command): Promise<unknown> {
    return this.proposeIndexed(cmd).then((r) => r.value);
  }

  /** Like propose, also telling the log index the command was applied at (for read-your-writes elsewhere). */
  proposeIndexed(cmd: Command): Promise<{ value: unknown; index: number }> {
    try {
      // The cluster level's gate (core/upgrade/): older members cannot apply newer commands.
      assertCommandAllowed(cmd, this.fsm);
    } catch (err) {
      return Promise.reject(err);
    }
    this.#runBeforePropose();
    return this.track(() => this.raft.propose(JSON.stringify(cmd)));
  }

  readonly #beforePropose = new Set<() => void>();
  #inBeforePropose = false;

  /**
   * Calls `hook` synchronously before each proposal, so what it proposes lands in the
   * same Ready batch (one fsync) as the proposal that woke it: the audit log rides along
   * with the writes it records instead of costing a Raft round of its own.
   */
  beforePropose(hook: () => void): () => void {
    this.#beforePropose.add(hook);
    return () => this.#beforePropose.delete(hook);
  }

  #runBeforePropose(): void {
    if (this.#inBeforePropose || this.#beforePropose.size === 0) return;
    this.#inBeforePropose = true;
    try {
      for (const hook of this.#beforePropose) hook();
    } finally {
      this.#inBeforePropose = false;
    }
  }

  private track(append: () => number): Promise<{ value: unknown; index: number }> {
    const started = performance.now();
    let index: number;
    try {
      index = append();
    } catch (err) {
      return Promise.reject(this.translateRaftError(err));
    }
    const term = this.raft.basicStatus().term;
    this.schedule();
    return new Promise<{ value: unknown; index: number }>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(index);
        reject(new TimeoutError(`commit of entry ${index}; the outcome is unknown`));
      }, PROPOSAL_TIMEOUT_MS);
      this.waiters.set(index, {
        term,
        resolve: (value: unknown) => resolve({ value, index }),
        reject,
        timer,
      });
    }).finally(() => metrics.proposalSeconds.observe((performance.now() - started) / 1000));
  }

  private translateRaftError(err: unknown): Error {
    if (err instanceof RaftNotLeaderError) return new NotLeaderError(err.leader ?? null);
    if (err instanceof ConfChangeError) return new ConflictError(err.message);
    if (err instanceof ProposalDroppedError) {
      metrics.proposalsDropped.inc();
      return new OverloadedError(`the cluster is busy: ${err.message}`, 1);
    }
    return err instanceof Error ? err : new Error(String(err));
  }

  /** Proposes a membership change, retrying while another change is still pending. */
  async changeMembership(cc: ConfChange, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.track(() => this.raft.proposeConfChange(cc));
        return;
      } catch (err) {
        const retriable = err instanceof ConflictError &&
          /pending|not yet|current term/i.test(err.message);
        if (!retriable || Date.now() > deadline) throw err;
        await delay(100);
      }
    }
  }

  // ---- linearizable reads (ReadIndex) ---------------------------------------

  /**
   * Resolves when a read of the local state machine is linearizable: the
   * leader confirmed it still leads and has applied up to the read index.
   * Concurrent callers share one ReadIndex round.
   */
  linearizableRead(opts: { coalesceMs?: number } = {}): Promise<void> {
    if (!this.isLeader()) return Promise.reject(new NotLeaderError(this.leaderId()));
    return new Promise<void>((resolve, reject) => {
      const slot = opts.coalesceMs ? "nextCoalescedRead" : "nextRead";
      if (!this[slot]) {
        const round: ReadRound = {
          context: crypto.randomUUID(),
          index: null,
          waiters: [],
          timer: setTimeout(() => this.expireRead(round), READ_TIMEOUT_MS),
        };
        this[slot] = round;
        if (opts.coalesceMs) setTimeout(() => this.launchRead(round), opts.coalesceMs);
        else setImmediate(() => this.launchRead(round));
      }
      this[slot]!.waiters.push({ resolve, reject });
    });
  }

  /**
   * Readers that can wait a little (`coalesceMs`: lease renewals, a few per host and
   * second) share one round per window instead of one each.
   */
  private nextCoalescedRead: ReadRound | null = null;

  private launchRead(round: ReadRound): void {
    if (this.nextRead === round) this.nextRead = null;
    if (this.nextCoalescedRead === round) this.nextCoalescedRead = null;
    try {
      this.raft.readIndex(round.context);
      this.readRounds.push(round);
      this.schedule();
    } catch (err) {
      clearTimeout(round.timer);
      for (const w of round.waiters) w.reject(this.translateRaftError(err));
    }
  }

  private handleReadStates(rd: Ready): void {
    for (const rs of rd.readStates) {
      const round = this.readRounds.find((r) => r.context === rs.context);
      if (round) round.index = rs.index;
    }
    for (const ctx of rd.droppedReadContexts ?? []) {
      const round = this.readRounds.find((r) => r.context === ctx);
      if (round) this.finishRead(round, new NotLeaderError(this.leaderId()));
    }
  }

  private releaseAppliedWaiters(): void {
    const applied = this.fsm.appliedIndex();
    for (const round of [...this.readRounds]) {
      if (round.index !== null && round.index <= applied) this.finishRead(round);
    }
    for (let i = this.appliedWaiters.length - 1; i >= 0; i--) {
      if (this.appliedWaiters[i].index <= applied) {
        this.appliedWaiters[i].resolve();
        this.appliedWaiters.splice(i, 1);
      }
    }
  }

  private finishRead(round: ReadRound, err?: Error): void {
    this.readRounds = this.readRounds.filter((r) => r !== round);
    clearTimeout(round.timer);
    for (const w of round.waiters) err ? w.reject(err) : w.resolve();
  }

  private expireRead(round: ReadRound): void {
    if (this.nextRead === round) this.nextRead = null;
    if (this.nextCoalescedRead === round) this.nextCoalescedRead = null;
    this.finishRead(round, new TimeoutError("confirming leadership for a linearizable read"));
  }

  private failReads(err: Error): void {
    for (const round of [...this.readRounds]) this.finishRead(round, err);
  }

  /** Resolves once this node has applied `index` (e.g. after a forwarded write). */
  waitApplied(index: number, timeoutMs = 5_000): Promise<void> {
    if (this.fsm.appliedIndex() >= index) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const waiter = { index, resolve: () => (clearTimeout(timer), resolve()) };
      const timer = setTimeout(() => {
        // A waiter that gave up must not stay queued (a lagging node would collect them).
        const i = this.appliedWaiters.indexOf(waiter);
        if (i >= 0) this.appliedWaiters.splice(i, 1);
        reject(new TimeoutError(`applying index ${index}`));
      }, timeoutMs);
      this.appliedWaiters.push(waiter);
    });
  }

  // ---- leadership transfer ----------------------------------------------------

  async transferLeadership(to: NodeId, timeoutMs = 5_000): Promise<void> {
    this.raft.transferLeadership(to);
    this.schedule();
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      await delay(25);
      if (this.leaderId() === to) return;
    }
    throw new TimeoutError(`transferring leadership to ${to}`);
  }

  /** Hands leadership to the most caught-up healthy voter, if we lead and one exists. */
  async handOffLeadership(): Promise<void> {
    if (!this.isLeader()) return;
    const s = this.raft.status();
    const candidates = s.conf.voters
      .filter((v) => v !== this.id && this.isRecentlyContacted(v))
      .sort((a, b) => (s.progress[b]?.match ?? 0) - (s.progress[a]?.match ?? 0));
    if (!candidates.length) return;
    try {
      await this.transferLeadership(candidates[0], 3_000);
      log.info("leadership handed over", { to: candidates[0] });
    } catch (err) {
      log.warn("leadership hand-over failed", { error: String(err) });
    }
  }

  // ---- membership management (leader) -------------------------------------------

  private offlineAfterMs(): number {
    try {
      return this.fsm.config().config["nodes.offlineAfterMs"];
    } catch {
      return DEFAULT_CONFIG["nodes.offlineAfterMs"];
    }
  }

  /**
   * Learners (most hosts of a large cluster) are heartbeated twice per
   * nodes.offlineAfterMs, at most every 2.5 s: each costs the leader a message
   * and an answer, and with 200 hosts the voters' 100 ms rate would be 4,000
   * messages a second. Their liveness does not wait on it: every host renews its
   * lease with the leader more often than that, and a renewal counts as contact
   * ({@link heardFrom}). New entries reach them at once, as appends.
   */
  private learnerHeartbeatTicks(): number {
    const everyMs = Math.min(LEARNER_HEARTBEAT_MAX_MS, this.offlineAfterMs() / 2);
    return Math.max(this.opts.heartbeatTicks, Math.floor(everyMs / this.opts.tickMs));
  }

  private maxVoters(): number {
    try {
      return this.fsm.config().config["cluster.maxVoters"];
    } catch {
      return DEFAULT_CONFIG["cluster.maxVoters"];
    }
  }

  /** A member proved itself alive outside Raft (an authenticated lease renewal). */
  heardFrom(peer: NodeId): void {
    if (this.raft.isMember(peer)) this.lastContact.set(peer, Date.now());
  }

  private isRecentlyContacted(peer: NodeId): boolean {
    if (peer === this.id) return true;
    const t = this.lastContact.get(peer);
    return t !== undefined && Date.now() - t < this.offlineAfterMs();
  }

  private membershipBusy = false;

  /**
   * Keeps an odd number of voters up to cluster.maxVoters: promotes caught-up
   * learners, and replaces a voter that has been offline by a healthy standby.
   */
  private async manageMembership(): Promise<void> {
    if (this.membershipBusy || !this.isLeader()) return;
    this.membershipBusy = true;
    try {
      const cc = this.nextMembershipChange();
      if (cc) {
        log.info("membership change", { ...cc });
        await this.changeMembership(cc, 2_000);
      }
    } catch (err) {
      log.debug("membership change deferred", { error: String(err) });
    } finally {
      this.membershipBusy = false;
    }
  }

  nextMembershipChange(): ConfChange | null {
    const s = this.raft.status();
    const max = this.maxVoters();
    const voters = s.conf.voters;
    const healthy = (id: NodeId) => this.isRecentlyContacted(id);
    const caughtUp = (id: NodeId) => (s.progress[id]?.match ?? 0) >= s.lastIndex - 100;
    const standbys = s.conf.learners.filter((l) => healthy(l) && caughtUp(l));
    const deadVoters = voters.filter((v) => !healthy(v));
    if (voters.length > max || (voters.length % 2 === 0 && voters.length > 1 && !standbys.length)) {
      // Too many voters (after a replacement or a lowered maximum): retire a dead one first.
      const victim = deadVoters[0] ??
        (voters.length > max ? voters.find((v) => v !== this.id) : undefined);
      if (victim && (voters.length > max || deadVoters.length)) {
        return { type: "demote", node: victim };
      }
    }
    if (!standbys.length) return null;
    const healthyVoters = voters.length - deadVoters.length;
    if (voters.length < max) {
      // Promote only towards an odd count: a second standby must be there to follow.
      const wouldBe = voters.length + 1;
      if (wouldBe % 2 === 1 || standbys.length >= 2) return { type: "promote", node: standbys[0] };
      return null;
    }
    if (deadVoters.length && healthyVoters + 1 <= max + 1) {
      return { type: "promote", node: standbys[0] };
    }
    return null;
  }

  // ---- status ----------------------------------------------------------------

  status(): ClusterStatus {
    const s = this.raft.status();
    const isLeader = s.role === "leader";
    const nodes = new Map(this.fsm.nodes().map((n) => [n.name, n]));
    const members = this.fsm.members().map((m): MemberStatus => {
      const last = m.name === this.id ? Date.now() : this.lastContact.get(m.name);
      const nodeState = nodes.get(m.name)?.state;
      let state: MemberState = this.isRecentlyContacted(m.name) ? "ready" : "offline";
      if (state === "ready" && nodeState && nodeState !== "ready" && nodeState !== "offline") {
        state = nodeState;
      }
      return {
        ...m,
        state,
        version: nodes.get(m.name)?.inventory?.version ?? null,
        lastContactMs: last === undefined ? null : Date.now() - last,
        match: isLeader ? s.progress[m.name]?.match ?? null : null,
      };
    });
    return {
      clusterId: this.opts.identity.clusterId,
      level: this.fsm.clusterLevel(),
      self: this.id,
      leader: s.lead || null,
      term: s.term,
      commitIndex: s.commit,
      appliedIndex: this.fsm.appliedIndex(),
      lastIndex: s.lastIndex,
      snapshotIndex: this.log.snapshot().meta.index,
      members,
    };
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    await closeAudit(this); // its last records still go out while the node can propose
    this.stopped = true;
    clearInterval(this.tickTimer);
    clearInterval(this.membershipTimer);
    this.transport.close();
    await this.snapshotReceiver.abort();
    for (const w of this.waiters.values()) {
      clearTimeout(w.timer);
      w.reject(new UnavailableError("node is shutting down"));
    }
    this.waiters.clear();
    this.failReads(new UnavailableError("node is shutting down"));
    await this.loopDone;
    await this.log.close();
    this.fsm.close();
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
