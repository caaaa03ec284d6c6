/**
 * The node's view of the Raft log: durable entries read through {@link Storage}
 * followed by an in-memory {@link Unstable} tail (and possibly a received
 * snapshot) that the driver has not persisted yet.
 */
import { CompactedError, type Entry, type Snapshot, type Storage } from "./types.ts";
import { RaftInvariantError } from "./errors.ts";

/** Approximate wire size of an entry (the same estimate the SQLite log uses). */
export function entrySize(e: Entry): number {
  return e.data.length + 32;
}

/** The longest prefix of `ents` within maxBytes, but always at least one entry. */
export function limitSize(ents: Entry[], maxBytes: number | undefined): Entry[] {
  if (maxBytes === undefined || ents.length <= 1) return ents;
  let size = entrySize(ents[0]);
  let n = 1;
  for (; n < ents.length; n++) {
    size += entrySize(ents[n]);
    if (size > maxBytes) break;
  }
  return n === ents.length ? ents : ents.slice(0, n);
}

/** Entries (and a snapshot) accepted in memory but not yet persisted by the driver. */
export class Unstable {
  snapshot: Snapshot | null = null;
  /** The snapshot was handed out in a Ready that has not been advanced yet. */
  snapshotInProgress = false;
  entries: Entry[] = [];
  /** Index of entries[0] (or where the next entry goes when empty). */
  offset: number;
  /** Entries below this index were handed out in a Ready already. */
  offsetInProgress: number;

  constructor(offset: number) {
    this.offset = offset;
    this.offsetInProgress = offset;
  }

  maybeFirstIndex(): number | undefined {
    return this.snapshot ? this.snapshot.meta.index + 1 : undefined;
  }

  maybeLastIndex(): number | undefined {
    if (this.entries.length) return this.offset + this.entries.length - 1;
    return this.snapshot?.meta.index;
  }

  maybeTerm(i: number): number | undefined {
    if (i < this.offset) {
      return this.snapshot?.meta.index === i ? this.snapshot.meta.term : undefined;
    }
    const last = this.maybeLastIndex();
    if (last === undefined || i > last) return undefined;
    return this.entries[i - this.offset].term;
  }

  /** Entries to hand out in the next Ready. */
  nextEntries(): Entry[] {
    return this.entries.slice(this.offsetInProgress - this.offset);
  }

  nextSnapshot(): Snapshot | null {
    return this.snapshot && !this.snapshotInProgress ? this.snapshot : null;
  }

  /** Marks everything currently held as handed out. */
  acceptInProgress(): void {
    this.offsetInProgress = this.offset + this.entries.length;
    if (this.snapshot) this.snapshotInProgress = true;
  }

  /** The driver persisted entries up to (index, term): drop them from memory. */
  stableTo(index: number, term: number): void {
    // A mismatch means the entry was replaced after the Ready: the newer one is still unstable.
    if (index < this.offset || this.maybeTerm(index) !== term) return;
    this.entries = this.entries.slice(index + 1 - this.offset);
    this.offset = index + 1;
    this.offsetInProgress = Math.max(this.offsetInProgress, this.offset);
  }

  stableSnapTo(index: number): void {
    if (this.snapshot?.meta.index !== index) return;
    this.snapshot = null;
    this.snapshotInProgress = false;
  }

  restore(s: Snapshot): void {
    this.offset = s.meta.index + 1;
    this.offsetInProgress = this.offset;
    this.entries = [];
    this.snapshot = s;
    this.snapshotInProgress = false;
  }

  /** Appends `ents`, first discarding any held entries at or after ents[0].index. */
  truncateAndAppend(ents: Entry[]): void {
    const from = ents[0].index;
    if (from === this.offset + this.entries.length) {
      for (const e of ents) this.entries.push(e);
    } else if (from <= this.offset) {
      // Replaces everything we hold; Storage entries >= from are now shadowed.
      this.offset = from;
      this.offsetInProgress = from;
      this.entries = ents.slice();
    } else {
      this.entries = this.entries.slice(0, from - this.offset).concat(ents);
      this.offsetInProgress = Math.min(this.offsetInProgress, from);
    }
  }

  slice(lo: number, hi: number): Entry[] {
    return this.entries.slice(lo - this.offset, hi - this.offset);
  }
}

/** Durable entries plus the unstable tail, with the commit and apply cursors. */
export class RaftLog {
  readonly unstable: Unstable;
  /** Highest index known committed. */
  committed: number;
  /** Highest index handed to the driver to apply (conf changes take effect here). */
  applying: number;
  /** Highest index the driver confirmed applied through advance(). */
  applied: number;

  constructor(readonly storage: Storage, committed: number, applied: number) {
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new Unstable(last + 1);
    // A snapshot always covers committed state, even if the hard state lags it.
    this.committed = Math.max(committed, first - 1);
    if (this.committed > last) {
      throw new RaftInvariantError(
        `commit index ${this.committed} is beyond the last log index ${last}: log lost`,
      );
    }
    if (applied < first - 1 || applied > this.committed) {
      throw new Error(
        `applied index ${applied} is outside [${first - 1}, ${this.committed}]: ` +
          "restore the state machine from storage.snapshot() first",
      );
    }
    this.applying = applied;
    this.applied = applied;
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  lastTerm(): number {
    const t = this.term(this.lastIndex());
    if (t === undefined) throw new Error("last log term unavailable");
    return t;
  }

  /**
   * Term of entry i (firstIndex()-1 gives the snapshot term); undefined when i
   * is beyond the log. Throws CompactedError when i is compacted away.
   */
  term(i: number): number | undefined {
    const t = this.unstable.maybeTerm(i);
    if (t !== undefined) return t;
    if (i < this.firstIndex() - 1) throw new CompactedError(i);
    if (i > this.lastIndex()) return undefined;
    return this.storage.term(i);
  }

  /** Like term() but undefined for compacted indexes too. */
  termOrUndefined(i: number): number | undefined {
    try {
      return this.term(i);
    } catch (err) {
      if (err instanceof CompactedError) return undefined;
      throw err;
    }
  }

  matchTerm(i: number, term: number): boolean {
    return this.termOrUndefined(i) === term;
  }

  /** Entries in [lo, hi), at most maxBytes (at least one). Throws CompactedError below firstIndex. */
  entries(lo: number, hi: number, maxBytes?: number): Entry[] {
    if (lo >= hi) return [];
    if (lo < this.firstIndex()) throw new CompactedError(lo);
    if (hi > this.lastIndex() + 1) {
      throw new RangeError(`entries [${lo}, ${hi}) beyond last index ${this.lastIndex()}`);
    }
    const off = this.unstable.offset;
    let out: Entry[] = [];
    if (lo < off) {
      const stableHi = Math.min(hi, off);
      out = this.storage.entries(lo, stableHi, maxBytes);
      if (out.length < stableHi - lo) return out; // the size limit cut it short
    }
    if (hi > off) {
      const tail = this.unstable.slice(Math.max(lo, off), hi);
      out = out.length ? out.concat(tail) : tail;
    }
    return limitSize(out, maxBytes);
  }

  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Follower side of AppendEntries: if our entry at `index` has `logTerm`,
   * reconciles `ents` into the log and returns the index of the last new
   * entry; otherwise undefined (the leader must back off).
   */
  maybeAppend(
    index: number,
    logTerm: number,
    committed: number,
    ents: Entry[],
  ): number | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNew = index + ents.length;
    const conflict = this.findConflict(ents);
    if (conflict !== 0) {
      if (conflict <= this.committed) {
        throw new RaftInvariantError(
          `entry ${conflict} conflicts with the committed prefix (${this.committed})`,
        );
      }
      this.append(ents.slice(conflict - (index + 1)));
    }
    this.commitTo(Math.min(committed, lastNew));
    return lastNew;
  }

  /** Index of the first entry in `ents` that is new or disagrees with our log; 0 if none. */
  findConflict(ents: Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * Fast back-off: the largest index <= `index` whose term is <= `term`, with
   * that term. Everything above it cannot match a log whose entry at `index`
   * has `term`, so whole terms are skipped at once. Term 0 means unknown.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    for (; index > 0; index--) {
      const ours = this.termOrUndefined(index);
      if (ours === undefined) return { index, term: 0 };
      if (ours <= term) return { index, term: ours };
    }
    return { index: 0, term: 0 };
  }

  append(ents: Entry[]): number {
    if (!ents.length) return this.lastIndex();
    const after = ents[0].index - 1;
    if (after < this.committed) {
      throw new RaftInvariantError(
        `appending after ${after} would overwrite committed index ${this.committed}`,
      );
    }
    if (after > this.lastIndex()) {
      throw new RaftInvariantError(
        `appending after ${after} leaves a gap after ${this.lastIndex()}`,
      );
    }
    this.unstable.truncateAndAppend(ents);
    return this.lastIndex();
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    if (index > this.lastIndex()) {
      throw new RaftInvariantError(
        `commit ${index} is beyond the last index ${this.lastIndex()}: log lost or corrupted`,
      );
    }
    this.committed = index;
  }

  /** Installs a snapshot that is ahead of our commit index, discarding the whole log. */
  restore(s: Snapshot): void {
    this.committed = s.meta.index;
    this.applying = Math.max(this.applying, s.meta.index);
    this.unstable.restore(s);
  }

  hasUnappliedCommitted(): boolean {
    return this.committed > this.applying;
  }

  /** Committed entries not yet handed out, at most maxBytes (at least one). */
  nextCommitted(maxBytes?: number): Entry[] {
    if (!this.hasUnappliedCommitted()) return [];
    return this.entries(this.applying + 1, this.committed + 1, maxBytes);
  }
}
