/**
 * Production paths inside the simulation (sim.ts, `production: true`): each
 * node's Readies are handled by the ReadyLoop that ClusterNode runs
 * (core/cluster/ready_loop.ts) over the real SqliteRaftLog and its
 * worker-thread writer, in a temp directory, under the simulation's faulty
 * network.
 *
 * Determinism: the loop never awaits real I/O directly. Every write (a Ready,
 * a compaction) and every background snapshot returns a gate that the
 * simulation opens at a tick it draws from the seed, after the real SQLite
 * write has completed; between gates the loops run only on microtasks. So
 * a seed still determines the run, while a leader's messages really leave
 * before its write is durable and a follower's only after, the core keeps
 * stepping messages and ticks while a write is in flight, and compaction
 * runs beside the loop, as in production.
 *
 * A separate MemoryStorage per node mirrors what is durable (updated when a
 * gate opens): the simulation's invariants read it, and each restart checks
 * that the reopened SQLite log holds exactly that.
 */
import { setImmediate } from "node:timers";
import { join } from "node:path";
import { type ReadyLog, ReadyLoop, type StateSnapshot } from "../cluster/ready_loop.ts";
import { SqliteRaftLog } from "../store/raft_log.ts";
import type { MemoryStorage } from "./memory_storage.ts";
import { RaftNode } from "./raft.ts";
import type {
  ConfState,
  Entry,
  HardState,
  Message,
  NodeId,
  RaftConfig,
  Ready,
  Snapshot,
} from "./types.ts";

/** What the simulation does at each step of the production loop. */
export interface ProductionHooks {
  now(): number;
  /** Ticks a write or a background snapshot on `id` takes (drawn from the seed). */
  latency(id: NodeId): number;
  send(id: NodeId, m: Message): void;
  /** Entries just became durable on `id` (log matching checks). */
  persisted(id: NodeId, entries: Entry[]): void;
  restore(id: NodeId, snap: Snapshot): void;
  apply(id: NodeId, entries: Entry[]): void;
  readStates(id: NodeId, rd: Ready): void;
  advanced(id: NodeId): void;
  appliedIndex(id: NodeId): number;
  /** The state machine as of now: what a background snapshot captures. */
  snapshotState(id: NodeId): StateSnapshot;
  snapshotThreshold(): number;
  fail(reason: string): never;
}

/** A write or background snapshot the simulation has not declared done yet. */
interface Gate {
  dueAt: number;
  /** Writes land in order; a background snapshot is no write. */
  write: boolean;
  /** The real I/O; the gate opens only after it completed. */
  real: Promise<void>;
  /** Mirrors the write into the durable view. */
  effect: () => void;
  open: () => void;
}

interface Incarnation {
  raft: RaftNode;
  log: SqliteRaftLog;
  loop: ReadyLoop;
  gates: Gate[];
  draining: boolean;
  alive: boolean;
}

interface ProductionNode {
  dir: string;
  durable: MemoryStorage;
  current: Incarnation | null;
  /** The previous incarnation's writes landing and its log closing. */
  closing: Promise<void>;
}

export class ProductionDriver {
  private readonly root: string;
  private readonly nodes = new Map<NodeId, ProductionNode>();
  /** A failure thrown inside a loop (an invariant, a storage error), rethrown by settle(). */
  private failure: unknown = null;

  constructor(private readonly hooks: ProductionHooks) {
    // tmpfs when there is one: fsync is free there, and the code path is the same.
    let dir: string | undefined;
    try {
      if (Deno.statSync("/dev/shm").isDirectory) dir = "/dev/shm";
    } catch { /* no tmpfs: the default temp dir */ }
    this.root = Deno.makeTempDirSync({ dir, prefix: "novactl-sim-" });
  }

  /**
   * Opens the node's SQLite log once the previous incarnation's writes have
   * landed, checks it holds exactly what was durable, and starts a ReadyLoop.
   */
  async start(
    id: NodeId,
    durable: MemoryStorage,
    cfg: RaftConfig,
    confAtApplied: () => ConfState,
  ): Promise<RaftNode> {
    let node = this.nodes.get(id);
    if (!node) {
      node = { dir: join(this.root, id), durable, current: null, closing: Promise.resolve() };
      Deno.mkdirSync(node.dir);
      this.nodes.set(id, node);
    }
    await node.closing;
    const log = new SqliteRaftLog(join(node.dir, "raft.db"));
    try {
      this.checkReopened(id, log, durable);
    } catch (err) {
      await log.close();
      throw err;
    }
    log.confAtApplied = confAtApplied;
    log.raiseCommitTo(cfg.applied);
    const raft = new RaftNode(cfg, log);
    const inc: Incarnation = { raft, log, loop: null!, gates: [], draining: false, alive: true };
    inc.loop = new ReadyLoop(raft, this.gatedLog(id, inc, durable), this.loopHost(id, inc));
    node.current = inc;
    return raft;
  }

  /**
   * The process dies: the loop stops where it is. Writes already handed to
   * SQLite land (a crash right after their fsync); nothing more is sent or applied.
   */
  crash(id: NodeId): void {
    const node = this.nodes.get(id);
    const inc = node?.current;
    if (!node || !inc) return;
    inc.alive = false;
    node.current = null;
    const inFlight = inc.gates;
    inc.gates = [];
    node.closing = Promise.all(inFlight.map((g) => g.real)).then(() => inc.log.close());
    for (const g of inFlight) g.effect();
  }

  /**
   * Runs every loop until each waits on a write that is not due yet, or has
   * no Ready: opens due gates in a fixed order, then lets the loops run.
   */
  async settle(): Promise<void> {
    for (let round = 0; round < 10_000; round++) {
      this.kickIdleLoops();
      await new Promise((r) => setImmediate(r));
      this.rethrow();
      const due = this.dueGates();
      if (!due.length && !this.anyIdleWithReady()) return;
      for (const { gate } of due) await gate.real;
      for (const { inc, gate } of due) {
        inc.gates = inc.gates.filter((g) => g !== gate);
        gate.effect();
        gate.open();
      }
    }
    this.hooks.fail("the production loops did not settle");
  }

  /** Closes every log and removes the temp directory. */
  async close(): Promise<void> {
    for (const id of this.nodes.keys()) {
      try {
        this.crash(id);
      } catch { /* the run already ended (or failed): only closing matters now */ }
    }
    await Promise.allSettled([...this.nodes.values()].map((n) => n.closing));
    Deno.removeSync(this.root, { recursive: true });
  }

  // ---- the loop's surroundings --------------------------------------------------------

  private kickIdleLoops(): void {
    for (const node of this.nodes.values()) {
      const inc = node.current;
      if (!inc || inc.draining || !inc.alive) continue;
      inc.draining = true;
      inc.loop.drain().then(
        () => (inc.draining = false),
        (err) => (this.failure ??= err),
      );
    }
  }

  private anyIdleWithReady(): boolean {
    for (const node of this.nodes.values()) {
      const inc = node.current;
      if (inc?.alive && !inc.draining && inc.raft.hasReady()) return true;
    }
    return false;
  }

  private dueGates(): { inc: Incarnation; gate: Gate }[] {
    const now = this.hooks.now();
    const due: { inc: Incarnation; gate: Gate }[] = [];
    for (const node of this.nodes.values()) {
      const inc = node.current;
      if (!inc) continue;
      // Writes land in order: a due write waits for every earlier one.
      let blocked = false;
      for (const gate of inc.gates) {
        if (gate.dueAt > now) blocked ||= gate.write;
        else if (!blocked || !gate.write) due.push({ inc, gate });
      }
    }
    return due;
  }

  private rethrow(): void {
    if (this.failure === null) return;
    const err = this.failure;
    this.failure = null;
    throw err;
  }

  private gate(
    id: NodeId,
    inc: Incarnation,
    write: boolean,
    real: Promise<void>,
    effect: () => void,
  ): Promise<void> {
    let open!: () => void;
    const opened = new Promise<void>((resolve) => (open = resolve));
    // A rejected write fails the simulation when settle() awaits it.
    real.catch(() => {});
    const dueAt = this.hooks.now() + this.hooks.latency(id);
    inc.gates.push({ dueAt, write, real, effect, open });
    return opened;
  }

  /** The SQLite log as the ReadyLoop sees it: every write completes at a simulated tick. */
  private gatedLog(id: NodeId, inc: Incarnation, durable: MemoryStorage): ReadyLog {
    const { log } = inc;
    return {
      save: (rd) => {
        const real = log.save(rd);
        if (!rd.snapshot && !rd.entries.length && !rd.hardState) return real; // nothing to write
        return this.gate(id, inc, true, real, () => {
          saveDurably(durable, rd);
          this.hooks.persisted(id, rd.entries);
        });
      },
      snapshot: () => log.snapshot(),
      lastIndex: () => log.lastIndex(),
      bytesAfterSnapshot: () => log.bytesAfterSnapshot(),
      compact: (index, conf, data) => {
        const real = log.compact(index, conf, data);
        return this.gate(id, inc, true, real, () => compactDurably(durable, index, conf, data));
      },
    };
  }

  private loopHost(id: NodeId, inc: Incarnation) {
    const h = this.hooks;
    return {
      send: (messages: Message[]) => {
        for (const m of messages) h.send(id, m);
      },
      restore: (snap: Snapshot) => h.restore(id, snap),
      apply: (entries: Entry[]) => h.apply(id, entries),
      readStates: (rd: Ready) => h.readStates(id, rd),
      advanced: () => h.advanced(id),
      stopped: () => !inc.alive,
      appliedIndex: () => h.appliedIndex(id),
      snapshotThreshold: () => h.snapshotThreshold(),
      snapshotInBackground: () => {
        // Taken now (a read transaction), delivered later: applying goes on meanwhile.
        const snap = h.snapshotState(id);
        return this.gate(id, inc, false, Promise.resolve(), () => {}).then(() => snap);
      },
      compactionFailed: (err: unknown) => (this.failure ??= err),
    };
  }

  /** What SQLite holds after a restart must be what was durable before the crash. */
  private checkReopened(id: NodeId, log: SqliteRaftLog, durable: MemoryStorage): void {
    const want = durable.hardState();
    const got = log.hardState();
    const describe = (h: HardState, first: number, last: number, snap: number) =>
      `term ${h.term} vote ${h.vote} entries ${first}..${last} snapshot ${snap}`;
    const mismatch = () =>
      this.hooks.fail(
        `${id}'s reopened SQLite log (${
          describe(got, log.firstIndex(), log.lastIndex(), log.snapshot().meta.index)
        }) differs from what was durable (${
          describe(want, durable.firstIndex(), durable.lastIndex(), durable.snapshot().meta.index)
        })`,
      );
    if (got.term !== want.term || got.vote !== want.vote) mismatch();
    if (log.lastIndex() !== durable.lastIndex()) mismatch();
    if (log.snapshot().meta.index !== durable.snapshot().meta.index) mismatch();
    for (let i = log.firstIndex(); i <= log.lastIndex(); i++) {
      if (i >= durable.firstIndex() && log.term(i) !== durable.term(i)) mismatch();
    }
  }
}

/** Mirrors SqliteRaftLog.save: a received snapshot keeps the log tail it matches. */
function saveDurably(durable: MemoryStorage, rd: Ready): void {
  const snap = rd.snapshot;
  if (snap) {
    const { index, term, conf } = snap.meta;
    const matches = index > durable.snapshot().meta.index && index <= durable.lastIndex() &&
      durable.term(index) === term;
    if (matches) compactDurably(durable, index, conf, snap.data);
    else durable.applySnapshot(snap);
  }
  if (rd.entries.length) durable.append(rd.entries);
  if (rd.hardState) durable.setHardState(rd.hardState);
}

function compactDurably(durable: MemoryStorage, index: number, conf: ConfState, data: string) {
  if (index <= durable.snapshot().meta.index || index > durable.lastIndex()) return;
  durable.createSnapshot(index, conf, data);
  durable.compact(index);
}
