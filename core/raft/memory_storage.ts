/**
 * In-memory {@link Storage} for tests and the simulation. It plays the role
 * of the durable log: whatever a driver saves here survives a simulated
 * crash; the RaftNode's unstable tail does not.
 */
import { limitSize } from "./log.ts";
import {
  CompactedError,
  type ConfState,
  type Entry,
  type HardState,
  type Snapshot,
  type Storage,
} from "./types.ts";

export class MemoryStorage implements Storage {
  private hard: HardState = { term: 0, vote: null, commit: 0 };
  private snap: Snapshot;
  /** ents[0] is a placeholder at the compaction base carrying its term; real entries follow. */
  private ents: Entry[];
  /**
   * Membership initialState() reports. A driver whose state machine survives
   * restarts reports the conf at its applied index (conf entries after it are
   * re-delivered and re-applied by the core); default: the snapshot's conf.
   */
  confAtApplied: (() => ConfState) | null = null;

  /** `conf` is the bootstrap membership, recorded as an empty snapshot at index 0. */
  constructor(conf: ConfState = { voters: [], learners: [] }) {
    this.snap = { meta: { index: 0, term: 0, conf: cloneConf(conf) }, data: "" };
    this.ents = [{ index: 0, term: 0, type: "normal", data: "" }];
  }

  initialState(): { hardState: HardState; conf: ConfState } {
    const conf = this.confAtApplied?.() ?? this.snap.meta.conf;
    return { hardState: { ...this.hard }, conf: cloneConf(conf) };
  }

  hardState(): HardState {
    return { ...this.hard };
  }

  private base(): number {
    return this.ents[0].index;
  }

  firstIndex(): number {
    return this.base() + 1;
  }

  lastIndex(): number {
    return this.base() + this.ents.length - 1;
  }

  term(i: number): number {
    if (i < this.base()) throw new CompactedError(i);
    if (i > this.lastIndex()) {
      throw new RangeError(`log entry ${i} is beyond the last index ${this.lastIndex()}`);
    }
    return this.ents[i - this.base()].term;
  }

  entries(lo: number, hi: number, maxBytes?: number): Entry[] {
    if (lo <= this.base()) throw new CompactedError(lo);
    if (hi > this.lastIndex() + 1) {
      throw new RangeError(`entries [${lo}, ${hi}) beyond the last index ${this.lastIndex()}`);
    }
    return limitSize(this.ents.slice(lo - this.base(), hi - this.base()), maxBytes);
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Whole persisted log from firstIndex() (for invariant checks). */
  allEntries(): Entry[] {
    return this.ents.slice(1);
  }

  setHardState(hs: HardState): void {
    this.hard = { ...hs };
  }

  /** Appends entries, replacing any stored entries at or after entries[0].index. */
  append(entries: Entry[]): void {
    const fresh = entries.filter((e) => e.index > this.base());
    if (!fresh.length) return;
    const first = fresh[0].index;
    if (first > this.lastIndex() + 1) {
      throw new RangeError(`log gap: appending ${first} after ${this.lastIndex()}`);
    }
    this.ents = this.ents.slice(0, first - this.base()).concat(fresh);
  }

  /** Installs a snapshot received from the leader, discarding the whole log. */
  applySnapshot(snap: Snapshot): void {
    if (snap.meta.index <= this.snap.meta.index) {
      throw new Error(`snapshot ${snap.meta.index} is not newer than ${this.snap.meta.index}`);
    }
    this.snap = snap;
    this.ents = [{ index: snap.meta.index, term: snap.meta.term, type: "normal", data: "" }];
  }

  /** Records a snapshot of the state machine at `index` (an applied index); keeps the log. */
  createSnapshot(index: number, conf: ConfState, data: string): Snapshot {
    if (index <= this.snap.meta.index) {
      throw new Error(`snapshot ${index} is not newer than ${this.snap.meta.index}`);
    }
    this.snap = { meta: { index, term: this.term(index), conf: cloneConf(conf) }, data };
    return this.snap;
  }

  /** Drops entries <= index; the latest snapshot must cover them. */
  compact(index: number): void {
    if (index <= this.base()) return;
    if (index > this.snap.meta.index) {
      throw new Error(`cannot compact to ${index} beyond the snapshot at ${this.snap.meta.index}`);
    }
    const term = this.term(index);
    const placeholder: Entry = { index, term, type: "normal", data: "" };
    this.ents = [placeholder].concat(this.ents.slice(index - this.base() + 1));
  }

  /** Persists what a Ready asks for, in the documented order: snapshot, entries, hard state. */
  save(rd: { snapshot: Snapshot | null; entries: Entry[]; hardState: HardState | null }): void {
    if (rd.snapshot) this.applySnapshot(rd.snapshot);
    if (rd.entries.length) this.append(rd.entries);
    if (rd.hardState) this.setHardState(rd.hardState);
  }
}

function cloneConf(c: ConfState): ConfState {
  return { voters: [...c.voters], learners: [...c.learners] };
}
