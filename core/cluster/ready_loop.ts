/**
 * The driver around the Raft core: what a node does with each Ready, and when
 * it compacts its log. ClusterNode runs it with SQLite, HTTP peers and timers;
 * the simulation (core/raft/sim.ts) runs the same code with the real SQLite
 * log under its faulty network and disk, so its ordering rules are checked by
 * the simulation's invariants.
 *
 * Per Ready, in this order (etcd-raft's doc.go, with its leader exception):
 * 1. start persisting the snapshot, entries and hard state;
 * 2. a leader sends its messages at once, while its own write is in flight
 *    (Raft thesis 10.2.1): a commit that counts its unsynced entries only
 *    surfaces in a later Ready, which is not taken before this write is
 *    durable; everyone else sends only once the write is durable, so every
 *    acknowledgment and vote they send is on disk;
 * 3. restore a received snapshot, then apply the committed entries;
 * 4. hand read states over, advance the core, and maybe compact.
 *
 * Compaction runs beside the loop: the state machine is snapshotted to a file
 * in the background and the log compacted to it only if that is still useful
 * (not when a newer snapshot was installed meanwhile or the log was replaced).
 */
import type { ConfState, Entry, Message, Ready, Snapshot } from "../raft/types.ts";

/** The part of RaftNode the loop drives. */
export interface ReadyCore {
  hasReady(): boolean;
  ready(): Ready;
  advance(rd: Ready): void;
}

/** Durable Raft storage (SqliteRaftLog in production). */
export interface ReadyLog {
  /** Records a Ready; resolves once it is durable. Writes are applied in call order. */
  save(rd: Ready): Promise<void>;
  snapshot(): Snapshot;
  lastIndex(): number;
  /** Payload bytes of the entries after the snapshot (what a compaction would drop). */
  bytesAfterSnapshot(): number;
  /** Size of the current snapshot's data. */
  snapshotBytes(): number;
  /** A fresh path for a snapshot file being written. */
  tempSnapshotPath(): string;
  /** Records the snapshot in `file` (taken at applied `index`) and drops the entries it covers. */
  compact(index: number, conf: ConfState, file: string, bytes: number): Promise<void>;
}

/** A state machine snapshot written to a file in the background. */
export interface StateSnapshot {
  index: number;
  conf: ConfState;
  bytes: number;
}

/** Everything around the loop that differs between production and simulation. */
export interface ReadyLoopHost {
  /** Hands messages to the transport; must not block. */
  send(messages: Message[]): void;
  /** Sees every Ready before it is persisted (leader changes, role changes). */
  observe?(rd: Ready): void;
  /** The Ready's writes are durable; `ms` since persisting began. */
  durable?(rd: Ready, ms: number): void;
  /** Replaces the state machine with a snapshot just persisted (the next Ready waits). */
  restore(snapshot: Snapshot): void | Promise<void>;
  /** Applies committed entries, in order. */
  apply(entries: Entry[]): void;
  /** After applying, before advance: read states and dropped reads. */
  readStates?(rd: Ready): void;
  /** After advance: release waiters, update gauges. */
  advanced?(rd: Ready, ms: number): void;
  /** Whether the node is shutting down (no new Ready, no compaction). */
  stopped(): boolean;
  appliedIndex(): number;
  /** Applied entries beyond the last snapshot that make a compaction worthwhile. */
  snapshotThreshold(): number;
  /** Log bytes after which a compaction is due whatever the state's size. */
  maxLogBytes: number;
  /**
   * Log bytes after which a compaction is due however few entries hold them: batched
   * proposals put many commands in one entry, so counting entries alone lets the log
   * grow unbounded in bytes, and a new member replays all of it instead of a snapshot.
   */
  snapshotLogBytes: number;
  /** Writes a consistent snapshot of the state machine to `path` while applying goes on. */
  snapshotToFile(path: string): Promise<StateSnapshot>;
  /** Removes a snapshot file that will not be used. */
  removeFile(path: string): Promise<void>;
  compacted?(snap: StateSnapshot, ms: number): void;
  compactionFailed?(err: unknown): void;
}

export class ReadyLoop {
  private compacting = false;
  private compactionDone: Promise<void> = Promise.resolve();

  constructor(
    private readonly core: ReadyCore,
    private readonly log: ReadyLog,
    private readonly host: ReadyLoopHost,
  ) {}

  /**
   * Handles Readies until the core has none. Errors (storage failures) reject:
   * the caller must stop the node, as continuing could acknowledge unpersisted state.
   */
  async drain(): Promise<void> {
    while (!this.host.stopped() && this.core.hasReady()) {
      await this.handle(this.core.ready());
    }
  }

  /** The compaction in progress, if any (settles, never rejects). */
  compaction(): Promise<void> {
    return this.compactionDone;
  }

  async handle(rd: Ready): Promise<void> {
    const host = this.host;
    host.observe?.(rd);
    const t0 = performance.now();
    const durable = this.log.save(rd);
    const leading = rd.softState.role === "leader";
    if (leading) host.send(rd.messages);
    await durable;
    host.durable?.(rd, performance.now() - t0);
    if (!leading) host.send(rd.messages);
    if (rd.snapshot) await host.restore(rd.snapshot);
    if (rd.committedEntries.length) host.apply(rd.committedEntries);
    host.readStates?.(rd);
    this.core.advance(rd);
    this.maybeCompact();
    host.advanced?.(rd, performance.now() - t0);
  }

  /** Compacts the log once enough entries, or bytes, were applied since the last snapshot. */
  maybeCompact(): void {
    if (this.compacting) return;
    const host = this.host;
    const log = this.log;
    const applied = host.appliedIndex();
    const entriesDue = applied - log.snapshot().meta.index >= host.snapshotThreshold();
    if (!entriesDue && log.bytesAfterSnapshot() < host.snapshotLogBytes) return;
    // Amortize: rewriting a large state costs in proportion to its size, so
    // wait until the log holds as many bytes (compaction work stays O(bytes written)),
    // but no longer than maxLogBytes: the live log is mirrored in memory.
    const wanted = Math.min(log.snapshotBytes(), host.maxLogBytes);
    if (log.bytesAfterSnapshot() < wanted) return;
    this.compacting = true;
    const t0 = performance.now();
    const tmp = log.tempSnapshotPath();
    this.compactionDone = host.snapshotToFile(tmp).then((snap) => {
      const stale = host.stopped() || snap.index <= log.snapshot().meta.index ||
        snap.index > log.lastIndex(); // a snapshot was installed meanwhile
      if (stale) return host.removeFile(tmp).then(() => undefined);
      return log.compact(snap.index, snap.conf, tmp, snap.bytes).then(() => snap);
    }).then((snap) => {
      if (snap) host.compacted?.(snap, performance.now() - t0);
    }).catch((err) => {
      host.compactionFailed?.(err);
      return host.removeFile(tmp).catch(() => {});
    }).finally(() => (this.compacting = false));
  }
}
