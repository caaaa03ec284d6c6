/**
 * What a host tells the leader (VM states, removals, snapshots, progress),
 * many reports per request.
 *
 * Every VM a host takes in costs at least one report (a created VM is
 * reported stopped, a started one running), so a burst of creates is a burst
 * of reports from every host. One request at a time goes to the leader and the
 * reports that arrive meanwhile wait for the next one: alone, a report leaves
 * at once; under load, each request carries all that queued behind the last
 * (as Nomad batches its clients' updates). The leader proposes them together,
 * so they share its Raft round too.
 *
 * @module
 */
import type { ClusterNode } from "./node.ts";
import type { Command } from "../fsm/mod.ts";
import { NovaError } from "../errors/mod.ts";
import { postToLeader, submitToLeader } from "./service.ts";
import { metrics } from "../metrics/mod.ts";

/** Reports per request at most. */
export const MAX_REPORTS_PER_REQUEST = 256;
/** Bytes of reports per request at most (the leader takes 1 MiB). */
export const MAX_REPORT_BYTES_PER_REQUEST = 512 * 1024;

/** One report's outcome as `/internal/propose` answers it for a batch. */
export type ReportOutcome =
  | { result: unknown; index: number }
  | { error: { code: string; message: string } };

interface Queued {
  command: Command;
  bytes: number;
  readOwnWrite: boolean;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

export class ReportBatcher {
  readonly #node: ClusterNode;
  #queue: Queued[] = [];
  #sending = false;

  constructor(node: ClusterNode) {
    this.#node = node;
  }

  /**
   * Has the leader apply `command`; resolves with its result once this node applied it
   * too (unless `readOwnWrite` is false), as {@link submitToLeader} does for one.
   */
  submit(command: Command, opts: { readOwnWrite?: boolean } = {}): Promise<unknown> {
    if (this.#node.isLeader()) return submitToLeader(this.#node, command, opts);
    return new Promise((resolve, reject) => {
      this.#queue.push({
        command,
        bytes: JSON.stringify(command).length,
        readOwnWrite: opts.readOwnWrite !== false,
        resolve,
        reject,
      });
      if (!this.#sending) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#sending = true;
    try {
      while (this.#queue.length) await this.#send(this.#takeBatch());
    } finally {
      this.#sending = false;
    }
  }

  #takeBatch(): Queued[] {
    let bytes = 0;
    let n = 0;
    while (
      n < this.#queue.length && n < MAX_REPORTS_PER_REQUEST &&
      (n === 0 || bytes + this.#queue[n].bytes <= MAX_REPORT_BYTES_PER_REQUEST)
    ) bytes += this.#queue[n++].bytes;
    return this.#queue.splice(0, n);
  }

  async #send(batch: Queued[]): Promise<void> {
    metrics.reportsPerRequest.observe(batch.length);
    let outcomes: ReportOutcome[];
    try {
      outcomes = await this.#post(batch.map((q) => q.command));
    } catch (err) {
      for (const q of batch) q.reject(err as Error);
      return;
    }
    const wanted = batch.flatMap((q, i) => {
      const o = outcomes[i];
      return q.readOwnWrite && o && "index" in o ? [o.index] : [];
    });
    if (wanted.length) {
      await this.#node.waitApplied(Math.max(...wanted), 10_000).catch(() => {});
    }
    batch.forEach((q, i) => {
      const o = outcomes[i];
      if (!o) q.reject(new NovaError("internal", "the leader answered fewer reports than sent"));
      else if ("error" in o) {
        q.reject(new NovaError(o.error.code as NovaError["code"], o.error.message));
      } else q.resolve(o.result);
    });
  }

  /** One request to the leader with every command of the batch. */
  async #post(commands: Command[]): Promise<ReportOutcome[]> {
    return (await postToLeader(this.#node, { commands }) as { results: ReportOutcome[] }).results;
  }
}
