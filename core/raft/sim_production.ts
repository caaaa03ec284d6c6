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
import { type ReadyLog, ReadyLoop, type ReadyLoopHost } from "../cluster/ready_loop.ts";
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
  snapshotState(id: NodeId): { index: number; conf: ConfState; data: string };
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
  /** A log open() opened and run() has not started yet. */
  opened: SqliteRaftLog | null;
  /** The previous incarnation's writes landing and its log closing. */
  closing: Promise<void>;
}

export class ProductionDriver {
  private readonly root: string;
  private readonly nodes = new Map<NodeId, ProductionNode>();
  /**
   * Snapshot data by index (a state machine at an index is the same on every
   * node): what a leader sends, known without racing the log's file renames.
   */
  private readonly snapshotData = new Map<number, string>();
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
   * landed and checks it holds exactly what was durable. Returns its snapshot
   * with the data read back from the snapshot file (to rebuild the state machine).
   */
  async open(id: NodeId, durable: MemoryStorage): Promise<Snapshot> {
    let node = this.nodes.get(id);
    if (!node) {
      node = {
        dir: join(this.root, id),
        durable,
        current: null,
        opened: null,
        closing: Promise.resolve(),
      };
      Deno.mkdirSync(node.dir);
      this.nodes.set(id, node);
    }
    await node.closing;
    const log = new SqliteRaftLog(join(node.dir, "raft.db"));
    try {
      this.checkReopened(id, log, durable);
      const snap = log.snapshot();
      const data = snap.meta.index ? Deno.readTextFileSync(log.snapshotPath(snap.meta)) : "";
      node.opened = log;
      if (snap.meta.index) this.snapshotData.set(snap.meta.index, data);
      return { meta: snap.meta, data };
    } catch (err) {
      await log.close();
      throw err;
    }
  }

  /** Starts the node's core and ReadyLoop on the log open() opened. */
  run(id: NodeId, cfg: RaftConfig, confAtApplied: () => ConfState): RaftNode {
    const node = this.nodes.get(id)!;
    const log = node.opened!;
    node.opened = null;
    log.confAtApplied = confAtApplied;
    log.raiseCommitTo(cfg.applied);
    const raft = new RaftNode(cfg, log);
    const inc: Incarnation = { raft, log, loop: null!, gates: [], draining: false, alive: true };
    inc.loop = new ReadyLoop(raft, this.gatedLog(id, inc, node.durable), this.loopHost(id, inc));
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
        if (rd.snapshot) this.snapshotData.set(rd.snapshot.meta.index, rd.snapshot.data);
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
      snapshotBytes: () => log.snapshotBytes(),
      tempSnapshotPath: () => log.tempSnapshotPath(),
      compact: (index, conf, file, bytes) => {
        const real = log.compact(index, conf, file, bytes);
        return this.gate(id, inc, true, real, () => compactDurably(durable, index, conf));
      },
    };
  }

  private loopHost(id: NodeId, inc: Incarnation): ReadyLoopHost {
    const h = this.hooks;
    const { log } = inc;
    return {
      send: (messages: Message[]) => {
        for (const m of messages) h.send(id, this.withSnapshotData(m));
      },
      restore: (snap: Snapshot) => {
        // The log renamed or wrote the snapshot into place: read it back from there.
        const data = Deno.readTextFileSync(log.snapshotPath(snap.meta));
        h.restore(id, { meta: snap.meta, data });
      },
      apply: (entries: Entry[]) => h.apply(id, entries),
      readStates: (rd: Ready) => h.readStates(id, rd),
      advanced: () => h.advanced(id),
      stopped: () => !inc.alive,
      appliedIndex: () => h.appliedIndex(id),
      snapshotThreshold: () => h.snapshotThreshold(),
      maxLogBytes: 64 << 20,
      snapshotLogBytes: 4 << 20,
      snapshotToFile: (path: string) => {
        // Taken now (a read transaction), written and reported later: applying goes on.
        const snap = h.snapshotState(id);
        this.snapshotData.set(snap.index, snap.data);
        const real = Deno.writeTextFile(path, snap.data);
        const done = { index: snap.index, conf: snap.conf, bytes: snap.data.length };
        return this.gate(id, inc, false, real, () => {}).then(() => done);
      },
      removeFile: (path: string) => {
        const real = Deno.remove(path).catch(() => {});
        return this.gate(id, inc, false, real, () => {});
      },
      compactionFailed: (err: unknown) => (this.failure ??= err),
    };
  }

  /**
   * A snapshot leaves a node as a file (streamed in production); the simulated
   * network carries its data inline instead, and the receiving SqliteRaftLog
   * writes it into place.
   */
  private withSnapshotData(m: Message): Message {
    if (!m.snapshot || m.snapshot.file === undefined) return m;
    const data = this.snapshotData.get(m.snapshot.meta.index);
    if (data === undefined) this.hooks.fail(`no data for snapshot ${m.snapshot.meta.index}`);
    return { ...m, snapshot: { meta: m.snapshot.meta, data } };
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
    if (matches) compactDurably(durable, index, conf);
    else durable.applySnapshot(snap);
  }
  if (rd.entries.length) durable.append(rd.entries);
  if (rd.hardState) durable.setHardState(rd.hardState);
}

function compactDurably(durable: MemoryStorage, index: number, conf: ConfState): void {
  if (index <= durable.snapshot().meta.index || index > durable.lastIndex()) return;
  durable.createSnapshot(index, conf, "");
  durable.compact(index);
}
