/** The leader's view of each follower's replication (etcd-raft's tracker). */
import type { Entry } from "./types.ts";

/**
 * probe: we don't know the follower's log; send one AppendEntries, wait for its answer.
 * replicate: the follower matches; pipeline up to maxInflight appends optimistically.
 * snapshot: an InstallSnapshot is on its way; send nothing until reportSnapshot/ack.
 */
export type ProgressState = "probe" | "replicate" | "snapshot";

/** Last indexes of AppendEntries sent but not yet acknowledged (replicate state). */
export class Inflights {
  private queue: number[] = [];

  constructor(readonly capacity: number) {}

  add(lastIndex: number): void {
    this.queue.push(lastIndex);
  }

  /** An ack up to `index` frees every append ending at or before it. */
  freeLE(index: number): void {
    let n = 0;
    while (n < this.queue.length && this.queue[n] <= index) n++;
    if (n) this.queue.splice(0, n);
  }

  freeFirstOne(): void {
    this.queue.shift();
  }

  full(): boolean {
    return this.queue.length >= this.capacity;
  }

  count(): number {
    return this.queue.length;
  }

  reset(): void {
    this.queue = [];
  }
}

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = "probe";
  /** Index of the snapshot in flight (snapshot state). */
  pendingSnapshot = 0;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  /** probe state: an append is outstanding; wait for a response or heartbeat. */
  probeSent = false;
  readonly inflights: Inflights;

  constructor(next: number, public isLearner: boolean, maxInflight: number) {
    this.next = next;
    this.inflights = new Inflights(maxInflight);
  }

  becomeProbe(): void {
    // After a snapshot, resume after it even if the follower has not acked it yet.
    this.next = this.state === "snapshot"
      ? Math.max(this.match + 1, this.pendingSnapshot + 1)
      : this.match + 1;
    this.enter("probe");
  }

  becomeReplicate(): void {
    this.next = this.match + 1;
    this.enter("replicate");
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.enter("snapshot");
    this.pendingSnapshot = snapshotIndex;
  }

  private enter(state: ProgressState): void {
    this.state = state;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.reset();
  }

  /** An ack of `index`; returns whether match advanced. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * A rejection of the append that followed `rejected`; `hint` is the highest
   * index that may still match. Returns false for stale rejections.
   */
  maybeDecrTo(rejected: number, hint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    // Probes go one at a time, so only a rejection of the latest one counts.
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, hint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  /** Bookkeeping after sending an AppendEntries carrying `entries`. */
  sentEntries(entries: Entry[]): void {
    if (this.state === "replicate") {
      if (!entries.length) return;
      const last = entries[entries.length - 1].index;
      this.next = last + 1;
      this.inflights.add(last);
    } else if (this.state === "probe") {
      this.probeSent = true;
    }
  }

  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.full();
      case "snapshot":
        return true;
    }
  }
}
