/**
 * Deterministic simulation of Raft clusters: one seeded PRNG drives the
 * network (loss, delay, reordering, duplication, symmetric and one-way
 * partitions), crashes and restarts from persisted state, slow disks,
 * compaction, leadership transfers, a membership nemesis (learners and voters
 * added, promoted, demoted and removed, in bursts, at stale leaders too) and a
 * client issuing writes and ReadIndex reads. After the faults stop, the
 * cluster must converge (liveness).
 *
 * Contract:
 * - A seed alone determines a run: parameters ({@link drawParams}), faults,
 *   workload and every node's randomness come from one PRNG seeded with it,
 *   and nothing reads clocks or Math.random. `SIM_SEED=n` replays seed n
 *   (printed in every {@link SimFailure}); planted bugs are replayed with
 *   `SIM_MUTATIONS=...` (see {@link replayCommand}).
 * - Safety invariants are checked as the run goes, and each is a property of
 *   Raft itself, not of one bug:
 *   - election safety: at most one leader per term;
 *   - configuration safety (no two disjoint majorities): every node that a
 *     majority of its configuration could elect (their logs are no more up to
 *     date than its own) holds every committed entry, with its configuration
 *     as of its commit index (which it applies before it may campaign), or
 *     the one it counts votes with while a candidate; a leader's votes come
 *     from a majority of the voters it leads with; and when its commit index
 *     advances, a majority of the voters it commits with durably hold the entry;
 *   - commit stability and leader completeness: a committed entry never
 *     changes, and every leader holds every entry committed in earlier terms;
 *   - log matching, over sent entries and over whole persisted logs;
 *   - persistence ordering: what a message acknowledges is already durable,
 *     and nothing beyond the persisted log is applied;
 *   - state machine safety: every node applies the same entries in the same
 *     order (a running digest), with acknowledged writes never lost and reads
 *     never stale.
 * - A violation throws SimFailure with the reason, the replay command and the
 *   last events. sim_test.ts sweeps seeds from a fresh base seed each run and
 *   proves, with planted bugs (RaftConfig.testingMutations), that the checks
 *   notice broken membership guards.
 * - Two drivers: inline (this file's handleReady: fast, and it can crash a
 *   node between persisting a Ready and sending it), or, with `production`,
 *   ClusterNode's ReadyLoop over real SQLite logs (sim_production.ts), where a
 *   leader sends before its write is durable, the core keeps stepping while a
 *   write is in flight, and compaction runs beside the loop.
 */
import { MemoryStorage } from "./memory_storage.ts";
import {
  ConfChangeError,
  LeadershipTransferError,
  NotLeaderError,
  RaftInvariantError,
  RaftNode,
} from "./raft.ts";
import { mulberry32 } from "./testing.ts";
import { ProductionDriver, type ProductionHooks } from "./sim_production.ts";
import type {
  ConfChange,
  ConfState,
  Entry,
  Message,
  NodeId,
  RaftConfig,
  RaftMutation,
  Ready,
  Snapshot,
} from "./types.ts";

/** Knobs drawn from the seed so every seed explores a different corner. */
export interface SimParams {
  voters: number;
  spares: number;
  membership: boolean;
  /**
   * Membership under pressure: frequent changes, proposed also the moment a
   * leader appears, leaders lost right after proposing one, and nodes that
   * restart from an old snapshot onto a slow disk (one entry applied per
   * Ready), so their membership lags what they know is committed.
   */
  membershipStorm: boolean;
  preVote: boolean;
  checkQuorum: boolean;
  electionTicks: number;
  heartbeatTicks: number;
  maxInflight: number;
  maxMsgBytes: number;
  lossRate: number;
  dupRate: number;
  maxDelay: number;
  partitionRate: number;
  /** Share of partitions that are one-way: A reaches B, B cannot reach A. */
  oneWayRate: number;
  /** Chance per tick that the membership nemesis proposes changes (when membership is on). */
  membershipRate: number;
  /** Chance per tick of a leadership transfer. */
  transferRate: number;
  crashRate: number;
  /** Chance per Ready of crashing after persisting it but before sending anything. */
  crashMidReadyRate: number;
  /** Chance that a new leader is crashed or cut off within a few ticks of its election. */
  leaderChurnRate: number;
  /** Chance a node's driver lags a round behind (slow disk): inputs pile up before a Ready. */
  slowDriverRate: number;
  /**
   * Chance per tick that one node's disk turns slow for a few ticks: its
   * driver handles one Ready per tick while the core keeps ticking and stepping
   * messages (as node.ts does while it awaits a write), so commits it learns
   * stay unapplied for a while.
   */
  stallRate: number;
  /** Restarted nodes rebuild their state machine from the snapshot (else it survived). */
  volatileFsmRate: number;
  compactEvery: number;
  /** Cap on committed bytes per Ready (0: the core's default); 1 hands out one entry per Ready. */
  committedBytesPerReady: number;
  chaosTicks: number;
  livenessTicks: number;
}

export interface SimStats {
  seed: number;
  params: SimParams;
  ticks: number;
  leaderTerms: number;
  writesAcked: number;
  readsServed: number;
  crashes: number;
  partitions: number;
  snapshotsInstalled: number;
  confChanges: number;
  /** Conf changes the core refused (another pending, leader not settled in its term). */
  confChangesRefused: number;
  transfers: number;
  oneWayPartitions: number;
  /** Ticks the healed cluster needed to converge. */
  convergedAfter: number;
}

/** How a seed was run, beyond the seed itself (part of its replay command). */
export interface SimMode {
  mutations?: readonly RaftMutation[];
  production?: boolean;
}

/** The command that replays one seed verbosely, in the same mode. */
export function replayCommand(seed: number, mode: SimMode = {}): string {
  let env = mode.mutations?.length ? `SIM_MUTATIONS=${mode.mutations.join(",")} ` : "";
  if (mode.production) env += "SIM_PRODUCTION=1 ";
  return `${env}SIM_SEED=${seed} deno test -A core/raft/sim_test.ts`;
}

export class SimFailure extends Error {
  constructor(
    readonly seed: number,
    reason: string,
    trace: string[],
    mode: SimMode = {},
  ) {
    super(
      `simulation seed ${seed} failed: ${reason}\n` +
        `replay: ${replayCommand(seed, mode)}\n` +
        `last events:\n  ${trace.join("\n  ")}`,
    );
    this.name = "SimFailure";
  }
}

export function drawParams(rng: () => number): SimParams {
  const pick = <T>(xs: T[]) => xs[Math.floor(rng() * xs.length)];
  const voters = rng() < 0.6 ? 3 : 5;
  const membership = rng() < 0.4;
  // A storm keeps leaders short-lived and logs divergent: the histories where
  // commit-rule and election bugs show (e.g. the Raft paper's figure 8).
  const storm = rng() < 0.3;
  const membershipStorm = membership && rng() < 0.5;
  const params: SimParams = {
    voters,
    spares: membership ? 1 + Math.floor(rng() * 2) : 0,
    membership,
    membershipStorm,
    preVote: rng() < 0.7,
    checkQuorum: rng() < 0.7,
    electionTicks: 10,
    heartbeatTicks: pick([1, 2, 3]),
    maxInflight: pick([1, 2, 4, 16]),
    maxMsgBytes: storm ? pick([40, 100]) : pick([40, 100, 300, 1 << 20]),
    lossRate: pick([0, 0.02, 0.05, 0.15]),
    dupRate: pick([0, 0.02, 0.1]),
    maxDelay: pick([0, 1, 2, 4]),
    partitionRate: storm ? 0.03 : pick([0.01, 0.03, 0.06]),
    oneWayRate: pick([0, 0.3, 0.6]),
    membershipRate: pick([0.03, 0.1, 0.3]),
    transferRate: pick([0.005, 0.01, 0.05]),
    crashRate: storm ? 0.03 : pick([0, 0.005, 0.01, 0.03]),
    crashMidReadyRate: pick([0, 0, 0.001, 0.004]),
    leaderChurnRate: storm ? pick([0.6, 0.8]) : pick([0, 0.1, 0.3]),
    slowDriverRate: pick([0, 0.2, 0.5]),
    stallRate: pick([0, 0.02, 0.1]),
    volatileFsmRate: pick([0, 0.5, 1]),
    compactEvery: pick([5, 10, 25, 1000]),
    committedBytesPerReady: pick([0, 0, 1, 100]),
    chaosTicks: 250 + Math.floor(rng() * 150),
    livenessTicks: 400,
  };
  if (!membershipStorm) return params;
  return {
    ...params,
    membershipRate: 0.3,
    stallRate: pick([0.02, 0.1]),
    volatileFsmRate: 1,
    compactEvery: pick([25, 1000]),
    committedBytesPerReady: 1,
  };
}

/** Raft's up-to-date order on logs (what a vote compares). */
function moreUpToDate(
  a: { lastIndex: number; lastTerm: number },
  b: { lastIndex: number; lastTerm: number },
): boolean {
  return a.lastTerm > b.lastTerm || (a.lastTerm === b.lastTerm && a.lastIndex > b.lastIndex);
}

function majority(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

// ---- the replicated state machine ------------------------------------------------

/** FNV-1a over a string, folded into a running hash: a digest of the applied sequence. */
function chainHash(prev: number, data: string): number {
  let h = (prev ^ 0x811c9dc5) >>> 0;
  for (let i = 0; i < data.length; i++) {
    h ^= data.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

interface KvValue {
  value: string;
  index: number;
}

/** A KV store plus the applied sequence digest; normal entries are "key=value". */
class SimStateMachine {
  applied = 0;
  /** Digest of every entry applied so far (index, term-free data): equal digests, equal history. */
  digest = 0;
  conf: ConfState;
  kv = new Map<string, KvValue>();

  constructor(conf: ConfState) {
    this.conf = { voters: [...conf.voters], learners: [...conf.learners] };
  }

  apply(e: Entry): void {
    this.applied = e.index;
    this.digest = chainHash(this.digest, `${e.index}:${e.type}:${e.data}`);
    if (e.data === "") return;
    if (e.type === "conf") {
      applyConf(this.conf, JSON.parse(e.data) as ConfChange);
      return;
    }
    const eq = e.data.indexOf("=");
    this.kv.set(e.data.slice(0, eq), { value: e.data.slice(eq + 1), index: e.index });
  }

  serialize(): string {
    return JSON.stringify({
      applied: this.applied,
      digest: this.digest,
      conf: this.conf,
      kv: [...this.kv],
    });
  }

  static restore(snap: Snapshot, bootstrap: ConfState): SimStateMachine {
    if (snap.meta.index === 0) return new SimStateMachine(bootstrap);
    const d = JSON.parse(snap.data) as {
      applied: number;
      digest: number;
      conf: ConfState;
      kv: [string, KvValue][];
    };
    const sm = new SimStateMachine(d.conf);
    sm.applied = d.applied;
    sm.digest = d.digest;
    sm.kv = new Map(d.kv);
    return sm;
  }
}

/** Same tolerant semantics as the core and the production FSM. */
function applyConf(conf: ConfState, cc: ConfChange): void {
  const without = (xs: NodeId[]) => xs.filter((x) => x !== cc.node);
  const has = (xs: NodeId[]) => xs.includes(cc.node);
  switch (cc.type) {
    case "addLearner":
      if (!has(conf.voters) && !has(conf.learners)) conf.learners.push(cc.node);
      break;
    case "promote":
      if (has(conf.learners)) {
        conf.learners = without(conf.learners);
        conf.voters.push(cc.node);
      }
      break;
    case "demote":
      if (has(conf.voters)) {
        conf.voters = without(conf.voters);
        conf.learners.push(cc.node);
      }
      break;
    case "remove":
      conf.voters = without(conf.voters);
      conf.learners = without(conf.learners);
      break;
  }
}

// ---- cluster members ------------------------------------------------------------------

interface Proposal {
  /** Term of the leader that proposed it. */
  term: number;
  data: string;
  key: string;
  value: string;
  marker: boolean;
}

interface PendingRead {
  key: string;
  /** Highest index of any write acknowledged before the read began. */
  minIndex: number;
  /** Index of the latest acknowledged write to `key` when the read began. */
  minKeyIndex: number;
  readIndex: number | null;
}

interface SimNode {
  id: NodeId;
  /** Durable: survives crashes. */
  storage: MemoryStorage;
  sm: SimStateMachine;
  raft: RaftNode | null;
  incarnation: number;
  downUntil: number;
  /** Until this tick the driver handles at most one Ready per tick (a slow disk). */
  stalledUntil: number;
  lastStalledReady: number;
  proposals: Map<number, Proposal>;
  /** Conf changes this node proposed as leader and has not applied yet. */
  confInFlight: { index: number; term: number; cc: ConfChange }[];
  reads: Map<string, PendingRead>;
  /** Leader observation state for invariant checks. */
  observedTerm: number;
  observedCommit: number;
}

interface Packet {
  at: number;
  m: Message;
  senderIncarnation: number;
  lost: boolean;
}

interface AckedWrite {
  key: string;
  value: string;
  index: number;
}

// ---- the simulation ----------------------------------------------------------------------

export interface SimOptions {
  /** Print every event as it happens. */
  verbose?: boolean;
  /** Also print every delivered message from this tick on (debugging). */
  traceMessagesFrom?: number;
  /** Override drawn parameters. */
  params?: Partial<SimParams>;
  /** Planted bugs switched on in every node's core (sim_test.ts proves the checks notice). */
  mutations?: RaftMutation[];
  /**
   * Drive nodes with the production Ready loop over real SQLite logs
   * (sim_production.ts) instead of the inline driver; the seed's run differs.
   */
  production?: boolean;
}

export async function runSimulation(seed: number, opts: SimOptions = {}): Promise<SimStats> {
  const sim = new Simulation(seed, opts);
  try {
    return await sim.run();
  } finally {
    await sim.close();
  }
}

class Simulation {
  private readonly rng: () => number;
  readonly params: SimParams;
  private now = 0;
  private readonly nodes: SimNode[] = [];
  private readonly byId = new Map<NodeId, SimNode>();
  private readonly bootstrap: ConfState;
  private packets: Packet[] = [];
  /** node → partition group; nodes in different groups cannot talk. */
  private groups: Map<NodeId, number> | null = null;
  private partitionEnds = 0;
  /** Directed links "a>b" that drop everything a sends to b (one-way partitions). */
  private oneWay = new Set<string>();
  private oneWayEnds = 0;
  private faults = true;
  /** Faults due soon after an event: the leader lost, or the cluster split at random. */
  private churn: { node: SimNode; incarnation: number; at: number; split?: boolean }[] = [];
  private readonly trace: string[] = [];

  // Invariant bookkeeping.
  private readonly leaderOfTerm = new Map<number, NodeId>();
  /** "term>candidate" → voters that durably granted it their vote in that term. */
  private readonly grants = new Map<string, Set<NodeId>>();
  /** index → term of the committed entry, as seen by the leader that committed it. */
  private readonly committedTerm: number[] = [];
  /** index → lowest term of a leader seen with the index committed. */
  private readonly commitTermOf: number[] = [];
  private maxCommitted = 0;
  /** index → "type:data" of committed entries whose content is known. */
  private readonly committedData: string[] = [];
  /** Highest index up to which every committed entry's content is known. */
  private knownCommittedPrefix = 0;
  /** Membership after each committed conf change over that prefix, in log order. */
  private readonly confTimeline: { index: number; conf: ConfState }[] = [];
  /** index → {term, data} of what state machines applied. */
  private readonly applied: { term: number; data: string; digest: number }[] = [];
  /** "index/term" → data and previous term, for log matching. */
  private readonly persisted = new Map<string, { data: string; prevTerm: number | undefined }>();
  private readonly acked: AckedWrite[] = [];
  private maxAckedIndex = 0;
  private readonly maxAckedByKey = new Map<string, number>();
  private counter = 0;
  private markerIndex: number | null = null;

  private readonly stats: SimStats;

  private readonly verbose: boolean;
  private readonly traceMessagesFrom: number;
  private readonly mutations: RaftMutation[];
  private readonly production: ProductionDriver | null;

  constructor(readonly seed: number, opts: SimOptions) {
    this.rng = mulberry32(seed);
    this.params = { ...drawParams(this.rng), ...opts.params };
    this.mutations = opts.mutations ?? [];
    this.production = opts.production ? new ProductionDriver(this.productionHooks()) : null;
    this.verbose = opts.verbose ?? false;
    this.traceMessagesFrom = opts.traceMessagesFrom ?? Infinity;
    const p = this.params;
    const voterIds = Array.from({ length: p.voters }, (_, i) => `n${i + 1}`);
    this.bootstrap = { voters: voterIds, learners: [] };
    for (let i = 0; i < p.voters + p.spares; i++) this.addNode(`n${i + 1}`);
    this.stats = {
      seed,
      params: p,
      ticks: 0,
      leaderTerms: 0,
      writesAcked: 0,
      readsServed: 0,
      crashes: 0,
      partitions: 0,
      snapshotsInstalled: 0,
      confChanges: 0,
      confChangesRefused: 0,
      transfers: 0,
      oneWayPartitions: 0,
      convergedAfter: -1,
    };
    this.event(`params ${JSON.stringify(p)}`);
  }

  async run(): Promise<SimStats> {
    if (this.production) {
      for (const n of this.nodes) await this.startNode(n);
    }
    for (; this.now < this.params.chaosTicks; this.now++) await this.step();
    await this.healEverything();
    const start = this.now;
    const deadline = this.now + this.params.livenessTicks;
    for (; this.now < deadline; this.now++) {
      await this.step();
      if (this.converged()) {
        this.stats.convergedAfter = this.now - start;
        this.stats.ticks = this.now;
        this.checkFinalState();
        this.checkLogMatching();
        if (this.verbose) console.log(`converged: ${this.describe()}`);
        return this.stats;
      }
    }
    this.fail(
      `no convergence within ${this.params.livenessTicks} ticks after healing: ${this.describe()}`,
    );
  }

  // ---- world step ----------------------------------------------------------------

  async close(): Promise<void> {
    await this.production?.close();
  }

  private async step(): Promise<void> {
    if (this.faults) this.injectFaults();
    await this.restartDueNodes();
    this.client();
    await this.drive();
    for (const n of this.upNodes()) {
      this.guardInvariants(n, () => n.raft!.tick());
      this.observe(n);
    }
    await this.drive();
    await this.deliverDuePackets();
    if (this.faults && !this.production) this.maybeCompact();
    this.checkPotentialLeaders();
    if (this.now % 50 === 0) this.checkLogMatching();
  }

  /** Lets every node's driver handle its Readies. */
  private async drive(): Promise<void> {
    if (this.production) await this.production.settle();
    else this.processAllReadies();
  }

  private async deliverDuePackets(): Promise<void> {
    // Messages with zero delay are delivered within the same tick, in later rounds.
    for (let round = 0; round < 8; round++) {
      const due: Packet[] = [];
      const later: Packet[] = [];
      for (const p of this.packets) (p.at <= this.now ? due : later).push(p);
      if (!due.length) return;
      this.packets = later;
      this.shuffle(due);
      for (const p of due) this.deliver(p);
      await this.drive();
    }
  }

  private deliver(p: Packet): void {
    const { m } = p;
    const to = this.byId.get(m.to);
    const from = this.byId.get(m.from)!;
    const ok = !p.lost && to?.raft && this.connected(m.from, m.to);
    if (m.type === "snap") this.reportSnapshot(from, p, !!ok);
    if (!ok) {
      // A real transport notices some failures (connection refused, timeouts).
      if (from.raft && from.incarnation === p.senderIncarnation && this.rng() < 0.3) {
        from.raft.reportUnreachable(m.to);
      }
      return;
    }
    if (this.now >= this.traceMessagesFrom) {
      console.log(`[t=${this.now}] deliver ${JSON.stringify(m)}`);
    }
    this.guardInvariants(to!, () => to!.raft!.step(m));
    this.observe(to!);
  }

  /** The core's own invariant checks (log conflicts with the committed prefix) fail the run too. */
  private guardInvariants(n: SimNode, input: () => void): void {
    try {
      input();
    } catch (err) {
      if (!(err instanceof RaftInvariantError)) throw err;
      this.fail(`Raft invariant broken on ${n.id}: ${err.message}`);
    }
  }

  private reportSnapshot(from: SimNode, p: Packet, ok: boolean): void {
    if (!from.raft || from.incarnation !== p.senderIncarnation) return;
    from.raft.reportSnapshot(p.m.to, ok);
  }

  private send(from: SimNode, m: Message): void {
    const p = this.params;
    const faulty = this.faults;
    const copies = faulty && this.rng() < p.dupRate ? 2 : 1;
    // A healed network is prompt but may still reorder a little.
    const maxDelay = faulty ? p.maxDelay : Math.min(p.maxDelay, 1);
    for (let i = 0; i < copies; i++) {
      const delay = Math.floor(this.rng() * (maxDelay + 1));
      this.packets.push({
        at: this.now + delay,
        m,
        senderIncarnation: from.incarnation,
        lost: faulty && this.rng() < p.lossRate,
      });
    }
  }

  /** Whether what `a` sends now reaches `b`. */
  private connected(a: NodeId, b: NodeId): boolean {
    if (this.oneWay.has(`${a}>${b}`)) return false;
    return !this.groups || this.groups.get(a) === this.groups.get(b);
  }

  // ---- faults ---------------------------------------------------------------------------

  private injectFaults(): void {
    const p = this.params;
    if (this.groups && this.now >= this.partitionEnds) {
      this.groups = null;
      this.event("partition healed");
    } else if (!this.groups && this.rng() < p.partitionRate) {
      this.startPartition();
    }
    if (this.oneWay.size && this.now >= this.oneWayEnds) {
      this.oneWay.clear();
      this.event("one-way partition healed");
    } else if (!this.oneWay.size && this.rng() < p.partitionRate * p.oneWayRate) {
      this.startOneWayPartition();
    }
    if (this.rng() < p.crashRate) this.crashRandomNode();
    if (this.rng() < p.stallRate) this.stallRandomDriver();
    this.runLeaderChurn();
    if (this.rng() < p.transferRate) this.transferLeadership();
    if (p.membership && this.rng() < p.membershipRate) this.changeMembership();
  }

  /**
   * Asymmetric faults: a node that hears the leader but cannot answer it (its
   * acks and votes vanish), or a leader whose heartbeats vanish while its
   * followers' messages still arrive. Check-quorum, pre-vote and stickiness
   * all meet the cases a symmetric cut never produces.
   */
  private startOneWayPartition(): void {
    const ids = this.nodes.map((n) => n.id);
    const a = this.rng() < 0.5 ? (this.leader() ?? this.pick(this.nodes)).id : this.pick(ids);
    const others = ids.filter((id) => id !== a);
    const cut = others.filter(() => this.rng() < 0.6);
    if (!cut.length) cut.push(this.pick(others));
    const outbound = this.rng() < 0.5;
    for (const b of cut) this.oneWay.add(outbound ? `${a}>${b}` : `${b}>${a}`);
    this.oneWayEnds = this.now + 5 + Math.floor(this.rng() * 50);
    this.stats.oneWayPartitions++;
    this.event(`one-way partition ${[...this.oneWay].join(" ")} until ${this.oneWayEnds}`);
  }

  private startPartition(): void {
    const kind = this.rng();
    if (kind < 0.3) {
      this.partition([this.pick(this.nodes).id], 5 + Math.floor(this.rng() * 60));
    } else if (kind < 0.5) {
      // Strand the leader in a minority: it keeps appending entries nobody commits.
      const leader = this.leader() ?? this.pick(this.nodes);
      const buddy = this.pick(this.nodes.filter((n) => n !== leader));
      const side = this.nodes.length >= 5 ? [leader.id, buddy.id] : [leader.id];
      this.partition(side, 5 + Math.floor(this.rng() * 40));
    } else {
      this.splitAtRandom(kind < 0.85 ? 2 : 3, 5 + Math.floor(this.rng() * 60));
    }
  }

  private splitAtRandom(parts: number, ticks: number): void {
    const groups = new Map<NodeId, number>();
    for (const n of this.nodes) groups.set(n.id, Math.floor(this.rng() * parts));
    this.setGroups(groups, ticks);
  }

  /** Cuts `side` off from everyone else for `ticks`. */
  private partition(side: NodeId[], ticks: number): void {
    const groups = new Map<NodeId, number>();
    for (const n of this.nodes) groups.set(n.id, side.includes(n.id) ? 1 : 0);
    this.setGroups(groups, ticks);
  }

  private setGroups(groups: Map<NodeId, number>, ticks: number): void {
    this.groups = groups;
    this.partitionEnds = this.now + ticks;
    this.stats.partitions++;
    this.event(`partition ${JSON.stringify([...groups])} until ${this.partitionEnds}`);
  }

  private stallRandomDriver(): void {
    this.stall(this.pick(this.nodes), 1 + this.rng() * 10);
  }

  private stall(n: SimNode, ticks: number): void {
    n.stalledUntil = this.now + Math.floor(ticks);
    this.event(`${n.id}'s driver is slow until ${n.stalledUntil}`);
  }

  private crashRandomNode(): void {
    const up = this.upNodes();
    if (up.length) this.crash(this.pick(up), 1 + Math.floor(this.rng() * 40));
  }

  /** Loses everything not persisted; the node comes back after `ticks`. */
  private crash(n: SimNode, ticks: number): void {
    n.raft = null;
    this.production?.crash(n.id);
    n.proposals.clear(); // outcome unknown to the client: never acknowledged
    n.reads.clear();
    n.downUntil = this.now + ticks;
    this.stats.crashes++;
    this.event(`crash ${n.id} until ${n.downUntil}`);
  }

  /** Right after an election: crash the new leader or cut it off, soon. */
  private scheduleLeaderChurn(n: SimNode): void {
    if (!this.faults || this.rng() >= this.params.leaderChurnRate) return;
    this.churn.push({
      node: n,
      incarnation: n.incarnation,
      at: this.now + Math.floor(this.rng() * 4),
    });
  }

  private scheduleChurnAfterConfChange(n: SimNode): void {
    if (!this.faults || this.rng() >= 0.5) return;
    const split = this.rng() < 0.5;
    this.churn.push({
      node: n,
      incarnation: n.incarnation,
      at: this.now + Math.floor(this.rng() * 4),
      split,
    });
  }

  /**
   * A new leader's first commit is when it learns (or, if buggy, guesses) what is
   * committed: cutting it off right then, before its later appends land, is what
   * exposes wrong commit rules (Raft paper, figure 8).
   */
  private firstCommitOfTerm(n: SimNode): void {
    if (!this.faults || this.groups || this.rng() >= this.params.leaderChurnRate) return;
    this.event(`${n.id} isolated right after its first commit`);
    this.partition([n.id], 10 + Math.floor(this.rng() * 20));
  }

  private runLeaderChurn(): void {
    const due = this.churn.filter((c) => c.at <= this.now);
    if (!due.length) return;
    this.churn = this.churn.filter((c) => c.at > this.now);
    for (const c of due) {
      if (!c.node.raft || c.node.incarnation !== c.incarnation) continue;
      if (c.split) {
        if (!this.groups) this.splitAtRandom(2, 5 + Math.floor(this.rng() * 40));
        continue;
      }
      if (this.rng() < 0.5 || this.groups) this.crash(c.node, 1 + Math.floor(this.rng() * 15));
      else this.partition([c.node.id], 3 + Math.floor(this.rng() * 20));
    }
  }

  private async restartDueNodes(): Promise<void> {
    for (const n of this.nodes) {
      if (!n.raft && n.downUntil <= this.now) await this.startNode(n);
    }
  }

  private async startNode(n: SimNode): Promise<void> {
    const snap = this.production
      ? await this.production.open(n.id, n.storage)
      : n.storage.snapshot();
    // Rebuild the state machine from the durable snapshot if it did not survive, or if
    // we crashed between persisting a received snapshot and applying it (as node.ts does).
    if (this.rng() < this.params.volatileFsmRate || snap.meta.index > n.sm.applied) {
      n.sm = SimStateMachine.restore(snap, this.bootstrap);
    }
    n.incarnation++;
    n.observedTerm = 0;
    n.observedCommit = 0;
    const cfg = this.config(n.id, n.sm.applied);
    n.raft = this.production
      ? this.production.run(n.id, cfg, () => n.sm.conf)
      : new RaftNode(cfg, n.storage);
    // A restart often meets a cold, slow disk: replaying the log lags the commit index.
    if (this.faults && this.rng() < this.params.stallRate * 5) this.stall(n, 10 + this.rng() * 30);
    this.event(`start ${n.id} applied=${n.sm.applied} hs=${JSON.stringify(n.storage.hardState())}`);
  }

  private maybeCompact(): void {
    for (const n of this.upNodes()) {
      const snapIndex = n.storage.snapshot().meta.index;
      if (n.sm.applied - snapIndex < this.params.compactEvery || this.rng() > 0.2) continue;
      n.storage.createSnapshot(n.sm.applied, n.sm.conf, n.sm.serialize());
      // Sometimes keep a few entries behind the snapshot for slow followers.
      const keep = Math.floor(this.rng() * 4);
      n.storage.compact(Math.max(n.storage.firstIndex() - 1, n.sm.applied - keep));
    }
  }

  private transferLeadership(): void {
    const leader = this.leader();
    if (!leader) return;
    const voters = leader.raft!.status().conf.voters.filter((v) => v !== leader.id);
    if (!voters.length) return;
    const to = this.pick(voters);
    try {
      leader.raft!.transferLeadership(to);
      this.stats.transfers++;
      this.event(`transfer ${leader.id} -> ${to}`);
    } catch (err) {
      if (!(err instanceof LeadershipTransferError)) throw err;
    }
    this.observe(leader);
  }

  /**
   * The membership nemesis: a burst of one to three changes at whichever node
   * claims to lead, stale leaders included. The core must refuse all but one
   * change in flight, and any change before it has committed in its term.
   */
  private changeMembership(): void {
    const leaders = this.nodes.filter((n) => n.raft?.basicStatus().role === "leader");
    if (!leaders.length) return;
    const leader = this.pick(leaders);
    const burst = 1 + Math.floor(this.rng() * 3);
    for (let i = 0; i < burst && leader.raft; i++) this.proposeConfChange(leader);
  }

  /**
   * An operator (or node.ts's membership manager) often acts the moment a new
   * leader appears: before it has committed in its term, while changes of
   * earlier leaders may still sit uncommitted in its log.
   */
  private changeMembershipAtNewLeader(n: SimNode): void {
    if (!this.faults || !this.params.membershipStorm || this.rng() >= 0.5) return;
    this.proposeConfChange(n);
  }

  private proposeConfChange(leader: SimNode): void {
    const conf = this.projectedConf(leader);
    const members = [...conf.voters, ...conf.learners];
    const outsiders = this.nodes.map((n) => n.id).filter((id) => !members.includes(id));
    const options: ConfChange[] = [];
    for (const id of outsiders) options.push({ type: "addLearner", node: id });
    for (const id of conf.learners) {
      if (conf.voters.length < 5) options.push({ type: "promote", node: id });
      options.push({ type: "remove", node: id });
    }
    if (conf.voters.length > 3) {
      for (const id of conf.voters) {
        options.push({ type: "demote", node: id }, { type: "remove", node: id });
      }
    }
    if (!options.length) return;
    const cc = this.pick(options);
    try {
      const index = leader.raft!.proposeConfChange(cc);
      leader.confInFlight.push({ index, term: leader.raft!.basicStatus().term, cc });
      this.stats.confChanges++;
      // Losing the leader, or splitting the cluster, right after it appended a
      // change leaves the change in some logs only, known committed by fewer.
      if (this.params.membershipStorm) this.scheduleChurnAfterConfChange(leader);
      this.event(`conf change ${cc.type} ${cc.node} at ${index} by ${leader.id}`);
    } catch (err) {
      if (!(err instanceof ConfChangeError || err instanceof NotLeaderError)) throw err;
      this.stats.confChangesRefused++;
    }
    this.observe(leader);
  }

  /**
   * The membership the operator expects once the leader's own changes in flight
   * apply: the nemesis keeps at least three voters in it, so a core that lets
   * changes pile up fails on safety, not merely by running out of voters.
   */
  private projectedConf(leader: SimNode): ConfState {
    const { term } = leader.raft!.basicStatus();
    leader.confInFlight = leader.confInFlight.filter((c) =>
      c.term === term && c.index > leader.sm.applied
    );
    const conf = leader.raft!.status().conf;
    const projected = { voters: [...conf.voters], learners: [...conf.learners] };
    // Changes of earlier leaders still in its log count too: they may yet commit.
    const { storage } = leader;
    const from = Math.max(leader.sm.applied + 1, storage.firstIndex());
    for (const e of storage.entries(from, storage.lastIndex() + 1)) {
      if (e.type === "conf" && e.data !== "") applyConf(projected, JSON.parse(e.data));
    }
    for (const c of leader.confInFlight) {
      if (c.index > storage.lastIndex()) applyConf(projected, c.cc);
    }
    return projected;
  }

  private async healEverything(): Promise<void> {
    this.faults = false;
    this.groups = null;
    this.oneWay.clear();
    for (const n of this.nodes) if (!n.raft) await this.startNode(n);
    for (const p of this.packets) p.lost = false;
    this.event("healed: no more faults");
  }

  // ---- client ------------------------------------------------------------------------------

  private client(): void {
    if (!this.faults) {
      const leader = this.leader();
      if (leader) this.proposeMarker(leader);
      return;
    }
    // Clients talk to whichever node claims to lead, stale leaders included.
    const leaders = this.nodes.filter((n) => n.raft?.basicStatus().role === "leader");
    if (!leaders.length) return;
    const leader = this.pick(leaders);
    if (this.rng() < 0.4) {
      const n = 1 + Math.floor(this.rng() * 3);
      for (let i = 0; i < n; i++) this.proposeWrite(leader, false);
    }
    if (this.rng() < 0.2) this.startRead(leader);
  }

  private proposeWrite(leader: SimNode, marker: boolean): number | null {
    const key = marker ? "marker" : `k${Math.floor(this.rng() * 5)}`;
    const value = `v${++this.counter}`;
    const data = `${key}=${value}`;
    try {
      const index = leader.raft!.propose(data);
      const term = leader.raft!.basicStatus().term;
      leader.proposals.set(index, { term, data, key, value, marker });
      if (marker) this.event(`marker ${data} proposed at ${index} by ${leader.id}`);
      this.observe(leader);
      return index;
    } catch (err) {
      if (!(err instanceof NotLeaderError)) throw err;
      return null;
    }
  }

  private proposeMarker(leader: SimNode): void {
    if (this.markerIndex !== null) return;
    // A marker from an earlier term may have been truncated away: retry in every term.
    const term = leader.raft!.basicStatus().term;
    const pending = [...leader.proposals.values()].some((p) => p.marker && p.term === term);
    if (!pending) this.proposeWrite(leader, true);
  }

  private startRead(leader: SimNode): void {
    const context = `r${++this.counter}`;
    const key = `k${Math.floor(this.rng() * 5)}`;
    leader.raft!.readIndex(context);
    leader.reads.set(context, {
      key,
      minIndex: this.maxAckedIndex,
      minKeyIndex: this.maxAckedByKey.get(key) ?? 0,
      readIndex: null,
    });
    this.observe(leader);
  }

  // ---- Ready processing (the driver) ----------------------------------------------------------

  private processAllReadies(): void {
    for (const n of this.nodes) {
      if (this.faults && this.rng() < this.params.slowDriverRate) continue;
      if (this.faults && n.stalledUntil > this.now) {
        // A slow disk: one write (one Ready) per tick, the core steps on in between.
        if (n.raft?.hasReady() && n.lastStalledReady < this.now) {
          n.lastStalledReady = this.now;
          this.handleReady(n, n.raft.ready());
        }
        continue;
      }
      while (n.raft?.hasReady()) this.handleReady(n, n.raft.ready());
    }
  }

  private handleReady(n: SimNode, rd: Ready): void {
    // 1. persist
    n.storage.save(rd);
    if (rd.snapshot) this.stats.snapshotsInstalled++;
    this.checkPersisted(n, rd.entries);
    if (this.faults && this.rng() < this.params.crashMidReadyRate) {
      // Crash between the fsync and the sends: nothing of this Ready leaves the node.
      this.crash(n, 1 + Math.floor(this.rng() * 15));
      return;
    }
    // 2. send
    for (const m of rd.messages) {
      this.checkAckIsDurable(n, m);
      this.noteVoteGranted(m);
      this.send(n, m);
    }
    // 3. apply
    if (rd.snapshot) this.installSnapshot(n, rd.snapshot);
    for (const e of rd.committedEntries) this.applyEntry(n, e);
    for (const rs of rd.readStates) this.readIndexKnown(n, rs.context, rs.index);
    for (const c of rd.droppedReadContexts ?? []) n.reads.delete(c);
    this.serveReads(n);
    // 4. advance
    n.raft!.advance(rd);
    this.observe(n);
  }

  /**
   * The production driver's view of the simulation: the same checks as the
   * inline driver, at the same steps of the Ready loop. Its writes take
   * ticks: a slow disk (a stall) holds them until the stall ends.
   */
  private productionHooks(): ProductionHooks {
    const node = (id: NodeId) => this.byId.get(id)!;
    return {
      now: () => this.now,
      latency: (id) => {
        if (!this.faults) return 0;
        const stalled = node(id).stalledUntil - this.now;
        if (stalled > 0) return stalled;
        return this.rng() < 0.3 ? 1 + Math.floor(this.rng() * 3) : 0;
      },
      send: (id, m) => {
        const n = node(id);
        this.checkAckIsDurable(n, m);
        this.noteVoteGranted(m);
        this.send(n, m);
      },
      persisted: (id, entries) => this.checkPersisted(node(id), entries),
      restore: (id, snap) => {
        this.stats.snapshotsInstalled++;
        this.installSnapshot(node(id), snap);
      },
      apply: (id, entries) => {
        for (const e of entries) this.applyEntry(node(id), e);
      },
      readStates: (id, rd) => {
        const n = node(id);
        for (const rs of rd.readStates) this.readIndexKnown(n, rs.context, rs.index);
        for (const c of rd.droppedReadContexts ?? []) n.reads.delete(c);
        this.serveReads(n);
      },
      advanced: (id) => this.observe(node(id)),
      appliedIndex: (id) => node(id).sm.applied,
      snapshotState: (id) => {
        const { sm } = node(id);
        return { index: sm.applied, conf: structuredClone(sm.conf), data: sm.serialize() };
      },
      snapshotThreshold: () => this.params.compactEvery,
      fail: (reason) => this.fail(reason),
    };
  }

  private installSnapshot(n: SimNode, snap: Snapshot): void {
    if (snap.meta.index <= n.sm.applied) {
      this.fail(`${n.id} got snapshot ${snap.meta.index} but already applied ${n.sm.applied}`);
    }
    n.sm = SimStateMachine.restore(snap, this.bootstrap);
    this.checkDigest(n, snap.meta.index);
    this.event(`${n.id} installed snapshot ${snap.meta.index}`);
  }

  private applyEntry(n: SimNode, e: Entry): void {
    if (e.index !== n.sm.applied + 1) {
      this.fail(
        `${n.id} applies ${e.index} after ${n.sm.applied}: committed entries not contiguous`,
      );
    }
    this.checkApplyPersisted(n, e);
    n.sm.apply(e);
    this.checkStateMachineSafety(n, e);
    const p = n.proposals.get(e.index);
    if (!p) return;
    n.proposals.delete(e.index);
    if (p.data !== e.data) return; // overwritten by another leader: the client sees an error
    this.acked.push({ key: p.key, value: p.value, index: e.index });
    this.stats.writesAcked++;
    this.maxAckedIndex = Math.max(this.maxAckedIndex, e.index);
    this.maxAckedByKey.set(p.key, Math.max(this.maxAckedByKey.get(p.key) ?? 0, e.index));
    if (p.marker) {
      this.markerIndex = Math.max(this.markerIndex ?? 0, e.index);
      this.event(`marker acked at ${e.index}`);
    }
  }

  private readIndexKnown(n: SimNode, context: string, index: number): void {
    const r = n.reads.get(context);
    if (!r) return;
    if (index < r.minIndex) {
      this.fail(
        `read ${context} on ${n.id} got read index ${index} but a write at ${r.minIndex} ` +
          "was acknowledged before the read began",
      );
    }
    r.readIndex = index;
  }

  private serveReads(n: SimNode): void {
    for (const [context, r] of n.reads) {
      if (r.readIndex === null || n.sm.applied < r.readIndex) continue;
      n.reads.delete(context);
      const got = n.sm.kv.get(r.key);
      if ((got?.index ?? 0) < r.minKeyIndex) {
        this.fail(
          `stale read ${context} of ${r.key} on ${n.id}: saw index ${got?.index ?? 0}, ` +
            `but the write at ${r.minKeyIndex} was acknowledged before the read began`,
        );
      }
      this.stats.readsServed++;
    }
  }

  // ---- invariants ---------------------------------------------------------------------------

  /** Called after every input to a node: election safety, commit stability, leader completeness. */
  private observe(n: SimNode): void {
    if (!n.raft) return;
    const s = n.raft.basicStatus();
    if (s.role !== "leader") return;
    const prev = this.leaderOfTerm.get(s.term);
    if (prev === undefined) {
      this.leaderOfTerm.set(s.term, n.id);
      this.stats.leaderTerms++;
      this.event(`${n.id} leads term ${s.term}`);
      this.checkElectionQuorum(n, s.term);
      this.scheduleLeaderChurn(n);
      this.changeMembershipAtNewLeader(n);
    } else if (prev !== n.id) {
      this.fail(`election safety: ${prev} and ${n.id} both lead term ${s.term}`);
    }
    if (n.observedTerm !== s.term) {
      n.observedTerm = s.term;
      n.observedCommit = 0;
      this.checkLeaderCompleteness(n, s.term);
    }
    if (n.observedCommit === 0 && s.commit > 0) this.firstCommitOfTerm(n);
    if (s.commit > n.observedCommit) this.checkCommitQuorum(n, s.commit);
    for (let i = Math.max(n.observedCommit + 1, 1); i <= s.commit; i++) {
      this.recordCommitted(n, i, s.term);
    }
    n.observedCommit = Math.max(n.observedCommit, s.commit);
  }

  private recordCommitted(n: SimNode, index: number, leaderTerm: number): void {
    const term = n.raft!.termAt(index);
    if (term === undefined) return; // compacted: it was applied (and checked) here already
    const known = this.committedTerm[index];
    if (known !== undefined && known !== term) {
      this.fail(
        `committed entry ${index} changed: term ${known} before, ${term} on leader ${n.id}`,
      );
    }
    this.committedTerm[index] = term;
    this.learnCommitted(index, this.persisted.get(`${index}/${term}`)?.data);
    const t = this.commitTermOf[index];
    if (t === undefined || leaderTerm < t) this.commitTermOf[index] = leaderTerm;
    this.maxCommitted = Math.max(this.maxCommitted, index);
  }

  private learnCommitted(index: number, data: string | undefined): void {
    if (data === undefined || this.committedData[index] !== undefined) return;
    this.committedData[index] = data;
    while (this.committedData[this.knownCommittedPrefix + 1] !== undefined) {
      const i = ++this.knownCommittedPrefix;
      const d = this.committedData[i];
      if (!d.startsWith("conf:") || d === "conf:") continue;
      const prev = this.confTimeline[this.confTimeline.length - 1]?.conf ?? this.bootstrap;
      const conf = { voters: [...prev.voters], learners: [...prev.learners] };
      applyConf(conf, JSON.parse(d.slice("conf:".length)) as ConfChange);
      this.confTimeline.push({ index: i, conf });
    }
  }

  /** Membership as of committed index `index`, if every entry up to it is known. */
  private confAt(index: number): ConfState | undefined {
    if (index > this.knownCommittedPrefix) return undefined;
    for (let k = this.confTimeline.length - 1; k >= 0; k--) {
      if (this.confTimeline[k].index <= index) return this.confTimeline[k].conf;
    }
    return this.bootstrap;
  }

  /**
   * Configuration safety, as leader completeness for every potential leader:
   * a node that a majority of its own configuration could elect (no member's
   * log is more up to date than its own) holds every committed entry. Its
   * configuration is the one as of its commit index, which it applies before
   * it may campaign. A committed entry missing there means the entry's commit
   * quorum and that majority are disjoint: two majorities that could each decide.
   */
  private checkPotentialLeaders(): void {
    const index = this.maxCommitted;
    const term = this.committedTerm[index];
    if (!index || term === undefined) return;
    const logs = new Map(this.nodes.map((n) => [n.id, this.logPosition(n)]));
    for (const x of this.nodes) {
      if (this.holdsEntry(x, index, term)) continue;
      const own = logs.get(x.id)!;
      const atCommit = this.confAt(own.commit);
      if (atCommit) {
        this.checkCannotBeElected(x, atCommit, `as of its commit index ${own.commit}`, logs);
      }
      // A candidate counts votes with the membership it has now.
      const role = x.raft?.basicStatus().role;
      if (role === "candidate" || role === "preCandidate") {
        this.checkCannotBeElected(x, x.raft!.status().conf, `as a ${role}`, logs);
      }
    }
  }

  private checkCannotBeElected(
    x: SimNode,
    conf: ConfState,
    which: string,
    logs: Map<NodeId, { lastIndex: number; lastTerm: number }>,
  ): void {
    if (!conf.voters.includes(x.id)) return;
    const own = logs.get(x.id)!;
    const backers = conf.voters.filter((v) => {
      const p = logs.get(v);
      return p !== undefined && !moreUpToDate(p, own);
    });
    if (backers.length < majority(conf.voters.length)) return;
    this.fail(
      `configuration safety: ${x.id} lacks committed entry ${this.maxCommitted} yet ` +
        `${backers.join(",")} of its voters ${conf.voters.join(",")} (${which}) could elect it`,
    );
  }

  /** Where a node's log ends (what a vote compares) and what it knows committed. */
  private logPosition(n: SimNode): { lastIndex: number; lastTerm: number; commit: number } {
    if (n.raft) {
      const { lastIndex, commit } = n.raft.status();
      return { lastIndex, lastTerm: n.raft.termAt(lastIndex) ?? 0, commit };
    }
    const s = n.storage;
    return {
      lastIndex: s.lastIndex(),
      lastTerm: s.term(s.lastIndex()),
      commit: s.hardState().commit,
    };
  }

  private holdsEntry(n: SimNode, index: number, term: number): boolean {
    if (n.raft) {
      const t = n.raft.termAt(index);
      if (t !== undefined) return t === term;
      return n.raft.status().lastIndex >= index; // compacted: covered by its snapshot
    }
    const s = n.storage;
    if (s.snapshot().meta.index >= index) return true;
    return index <= s.lastIndex() && s.term(index) === term;
  }

  private noteVoteGranted(m: Message): void {
    if (m.type !== "voteResp" || m.reject) return;
    const key = `${m.term}>${m.to}`;
    const granted = this.grants.get(key) ?? new Set<NodeId>();
    granted.add(m.from);
    this.grants.set(key, granted);
  }

  /**
   * Configuration safety for elections: the voters that durably granted a new
   * leader its term form a majority of the configuration it leads with. Two
   * leaders of one term would need two disjoint majorities.
   */
  private checkElectionQuorum(n: SimNode, term: number): void {
    const voters = n.raft!.status().conf.voters;
    const granted = this.grants.get(`${term}>${n.id}`) ?? new Set<NodeId>();
    const backing = voters.filter((v) => v === n.id || granted.has(v));
    if (backing.length < majority(voters.length)) {
      this.fail(
        `${n.id} leads term ${term} with votes from ${backing.join(",") || "nobody"}, ` +
          `not a majority of its voters ${voters.join(",")}`,
      );
    }
  }

  /**
   * Configuration safety for commits: when a leader's commit index advances, a
   * majority of the voters it commits with durably hold that entry (the
   * leader itself counts when the entry is in its log: a leader may count its
   * own write while it is still in flight).
   */
  private checkCommitQuorum(n: SimNode, commit: number): void {
    const raft = n.raft!;
    const term = raft.termAt(commit);
    // Only commits this leader counted itself: a restarted node's commit index was
    // counted by an earlier leader, in an earlier configuration.
    if (term !== raft.basicStatus().term) return;
    const voters = raft.status().conf.voters;
    const holders = voters.filter((v) => v === n.id || this.holdsDurably(v, commit, term));
    if (holders.length < majority(voters.length)) {
      this.fail(
        `${n.id} commits ${commit}@${term} but only ${
          holders.join(",") || "nobody"
        } of its voters ` +
          `${voters.join(",")} hold it`,
      );
    }
  }

  private holdsDurably(id: NodeId, index: number, term: number): boolean {
    const storage = this.byId.get(id)?.storage;
    if (!storage) return false;
    if (storage.snapshot().meta.index >= index) return true;
    if (index > storage.lastIndex()) return false;
    return storage.term(index) === term;
  }

  /** Every entry committed in an earlier term must be in a new leader's log. */
  private checkLeaderCompleteness(n: SimNode, term: number): void {
    const last = n.raft!.status().lastIndex;
    for (let i = 1; i <= this.maxCommitted; i++) {
      const ct = this.commitTermOf[i];
      if (ct === undefined || ct >= term) continue;
      if (i > last) {
        this.fail(`leader completeness: ${n.id} leads term ${term} without committed entry ${i}`);
      }
      const ours = n.raft!.termAt(i);
      if (ours !== undefined && ours !== this.committedTerm[i]) {
        this.fail(
          `leader completeness: ${n.id} (term ${term}) has term ${ours} at committed index ${i}, ` +
            `committed with term ${this.committedTerm[i]}`,
        );
      }
    }
  }

  /** Log matching: an (index, term) pair always names the same entry after the same history. */
  private checkPersisted(n: SimNode, entries: Entry[]): void {
    for (const e of entries) {
      const key = `${e.index}/${e.term}`;
      let prevTerm: number | undefined;
      try {
        prevTerm = n.storage.term(e.index - 1);
      } catch {
        prevTerm = undefined;
      }
      const seen = this.persisted.get(key);
      if (!seen) {
        this.persisted.set(key, { data: `${e.type}:${e.data}`, prevTerm });
        continue;
      }
      if (seen.data !== `${e.type}:${e.data}`) {
        this.fail(`log matching: entry ${key} on ${n.id} differs from another node's`);
      }
      if (seen.prevTerm !== undefined && prevTerm !== undefined && seen.prevTerm !== prevTerm) {
        this.fail(
          `log matching: entry ${key} on ${n.id} follows term ${prevTerm}, elsewhere ${seen.prevTerm}`,
        );
      }
    }
  }

  /**
   * Log matching over whole persisted logs: if two logs hold an entry with the
   * same index and term, they are identical up to it (where both still hold entries).
   */
  private checkLogMatching(): void {
    const logs = this.nodes.map((n) => ({ id: n.id, entries: n.storage.allEntries() }));
    for (let a = 0; a < logs.length; a++) {
      for (let b = a + 1; b < logs.length; b++) this.checkLogPair(logs[a], logs[b]);
    }
  }

  private checkLogPair(
    a: { id: NodeId; entries: Entry[] },
    b: { id: NodeId; entries: Entry[] },
  ): void {
    if (!a.entries.length || !b.entries.length) return;
    const aFirst = a.entries[0].index;
    const bFirst = b.entries[0].index;
    const lo = Math.max(aFirst, bFirst);
    const hi = Math.min(
      a.entries[a.entries.length - 1].index,
      b.entries[b.entries.length - 1].index,
    );
    let matched = false;
    for (let i = hi; i >= lo; i--) {
      const x = a.entries[i - aFirst];
      const y = b.entries[i - bFirst];
      if (x.term === y.term) matched = true;
      if (matched && (x.term !== y.term || x.data !== y.data || x.type !== y.type)) {
        this.fail(`log matching: ${a.id} and ${b.id} share a later entry but differ at ${i}`);
      }
    }
  }

  /**
   * Persistence ordering: whatever a message acknowledges is already on disk
   * (or superseded by a durable newer term, which makes the message merely
   * look delayed: a node never acts on an older term again).
   */
  private checkAckIsDurable(n: SimNode, m: Message): void {
    const hs = n.storage.hardState();
    if (hs.term > m.term) return;
    if (m.type === "appResp" && !m.reject && m.index !== undefined) {
      if (m.index > n.storage.lastIndex()) {
        this.fail(
          `${n.id} acks index ${m.index} but persisted only up to ${n.storage.lastIndex()}`,
        );
      }
    } else if (m.type === "voteResp" && !m.reject) {
      if (hs.term !== m.term || hs.vote !== m.to) {
        this.fail(`${n.id} grants a vote to ${m.to} in term ${m.term} before persisting it`);
      }
    }
  }

  private checkApplyPersisted(n: SimNode, e: Entry): void {
    if (e.index > n.storage.lastIndex()) {
      this.fail(`${n.id} applies ${e.index} beyond its persisted log (${n.storage.lastIndex()})`);
    }
    if (e.index >= n.storage.firstIndex() && n.storage.term(e.index) !== e.term) {
      this.fail(`${n.id} applies ${e.index}@${e.term} but persisted a different entry`);
    }
  }

  private checkStateMachineSafety(n: SimNode, e: Entry): void {
    const known = this.applied[e.index];
    const data = `${e.type}:${e.data}`;
    if (!known) {
      this.applied[e.index] = { term: e.term, data, digest: n.sm.digest };
      this.learnCommitted(e.index, data);
    } else if (known.term !== e.term || known.data !== data) {
      this.fail(`state machine safety: ${n.id} applies a different entry at ${e.index}`);
    }
    this.checkDigest(n, e.index);
    const ct = this.committedTerm[e.index];
    if (ct !== undefined && ct !== e.term) {
      this.fail(`${n.id} applies ${e.index}@${e.term} but ${e.index}@${ct} was committed`);
    }
  }

  private checkDigest(n: SimNode, index: number): void {
    const known = this.applied[index];
    if (known && known.digest !== n.sm.digest) {
      this.fail(
        `state machine safety: ${n.id}'s history up to ${index} differs from another node's`,
      );
    }
  }

  // ---- liveness -------------------------------------------------------------------------------

  private converged(): boolean {
    if (this.markerIndex === null) return false;
    const leader = this.leader();
    if (!leader) return false;
    const conf = leader.raft!.status().conf;
    for (const id of [...conf.voters, ...conf.learners]) {
      const n = this.byId.get(id)!;
      if (!n.raft || n.sm.applied < this.markerIndex) return false;
    }
    return true;
  }

  private checkFinalState(): void {
    const leader = this.leader()!;
    const conf = leader.raft!.status().conf;
    for (const id of [...conf.voters, ...conf.learners]) {
      const sm = this.byId.get(id)!.sm;
      for (const w of this.acked) {
        // Later writes to the key may have replaced the value, never an older one.
        const got = sm.kv.get(w.key);
        if (!got || got.index < w.index) {
          this.fail(`acknowledged write ${w.key}=${w.value}@${w.index} missing on ${id}`);
        }
      }
    }
  }

  // ---- helpers ---------------------------------------------------------------------------------

  private addNode(id: NodeId): void {
    const storage = new MemoryStorage(this.bootstrap);
    const sm = new SimStateMachine(this.bootstrap);
    storage.confAtApplied = () => node.sm.conf;
    const node: SimNode = {
      id,
      storage,
      sm,
      raft: null,
      incarnation: 0,
      downUntil: 0,
      stalledUntil: 0,
      lastStalledReady: -1,
      proposals: new Map(),
      confInFlight: [],
      reads: new Map(),
      observedTerm: 0,
      observedCommit: 0,
    };
    // Production nodes open their SQLite logs when the run starts.
    if (!this.production) node.raft = new RaftNode(this.config(id, 0), storage);
    this.nodes.push(node);
    this.byId.set(id, node);
  }

  private config(id: NodeId, applied: number): RaftConfig {
    const p = this.params;
    return {
      id,
      electionTicks: p.electionTicks,
      heartbeatTicks: p.heartbeatTicks,
      random: mulberry32(Math.floor(this.rng() * 2 ** 32)),
      testingMutations: this.mutations.length ? new Set(this.mutations) : undefined,
      preVote: p.preVote,
      checkQuorum: p.checkQuorum,
      maxMsgBytes: p.maxMsgBytes,
      maxInflight: p.maxInflight,
      maxCommittedBytesPerReady: p.committedBytesPerReady || undefined,
      applied,
    };
  }

  private upNodes(): SimNode[] {
    return this.nodes.filter((n) => n.raft !== null);
  }

  /** A node that believes it leads (with the highest term if several do). */
  private leader(): SimNode | null {
    let best: SimNode | null = null;
    let bestTerm = -1;
    for (const n of this.nodes) {
      const s = n.raft?.basicStatus();
      if (s?.role === "leader" && s.term > bestTerm) {
        best = n;
        bestTerm = s.term;
      }
    }
    return best;
  }

  private pick<T>(xs: T[]): T {
    return xs[Math.floor(this.rng() * xs.length)];
  }

  private shuffle<T>(xs: T[]): void {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.rng() * (i + 1));
      [xs[i], xs[j]] = [xs[j], xs[i]];
    }
  }

  private describe(): string {
    return this.nodes.map((n) => {
      if (!n.raft) return `${n.id}:down`;
      const s = n.raft.status();
      const progress = s.role === "leader" ? ` progress=${JSON.stringify(s.progress)}` : "";
      return `${n.id}:${s.role}/t${s.term}/lead=${s.lead}/commit=${s.commit}/applied=${n.sm.applied}` +
        `/last=${s.lastIndex}/first=${n.storage.firstIndex()}/voters=${s.conf.voters.join(",")}` +
        `/learners=${s.conf.learners.join(",")}${progress}`;
    }).join(" ") + ` marker=${this.markerIndex}`;
  }

  private event(line: string): void {
    const text = `[t=${this.now}] ${line}`;
    if (this.verbose) console.log(text);
    this.trace.push(text);
    if (this.trace.length > 40) this.trace.shift();
  }

  private fail(reason: string): never {
    throw new SimFailure(this.seed, `${reason} (at tick ${this.now})`, this.trace, {
      mutations: this.mutations,
      production: this.production !== null,
    });
  }
}
