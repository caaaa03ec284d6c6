/**
 * Operations a host runs: the leader records an operation naming this host as its
 * runner; every host watches the replicated operations and starts the ones that name
 * it and are of its runners' kinds, reports progress while they run, and their outcome.
 * An operation this host ran when its node process stopped is marked failed at the next
 * start (the ids of those it runs are kept in a state file for that), once its replica
 * caught up: before, an operation may look running that this host finished long ago.
 *
 * Subclasses say which kinds they run and how ({@link HostOperationRunner.execute}):
 * backups (host/backup/) and VM snapshots (host/snapshots/).
 *
 * @module
 */
import { ConflictError, NovaError } from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";
import { writeFileDurably } from "../../core/store/mod.ts";
import type { Command, OperationRecord } from "../../core/fsm/mod.ts";

/** What a runner needs of the cluster: the replicated operations, and proposals. */
export interface OperationCluster {
  readonly nodeName: string;
  /** The running operations (a scan looks for its own among them). */
  operations(): OperationRecord[];
  operation(id: string): OperationRecord | null;
  /** Calls `listener` with an operation's id when it changed (null: everything may have). */
  onOperationChange(listener: (id: string | null) => void): () => void;
  report(command: Command): Promise<unknown>;
  audit?(action: string, resource: string, detail: string): void;
}

/** What a runner needs of the host: whether its replica caught up. */
export interface CatchingUp {
  /** Whether this host has applied everything the leader had committed when it started. */
  isCaughtUp(): boolean;
}

/** Reports progress of a running operation, at most every {@link PROGRESS_EVERY_MS}. */
export type ProgressReporter = (phase: string, done: number, total: number) => void;

const PROGRESS_EVERY_MS = 500;

/** Runs this host's operations of some kinds. */
export abstract class HostOperationRunner<C extends OperationCluster = OperationCluster> {
  readonly #running = new Map<string, AbortController>();
  /** Operations this host started and has not finished, persisted across its restarts. */
  #mine = new Set<string>();
  #mineLoaded = false;
  #off: (() => void) | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;

  /**
   * @param stateFile where the ids of the operations this host runs are kept (so that after a
   *   restart it knows which ones it was running when it stopped)
   */
  constructor(
    protected readonly cluster: C,
    private readonly caughtUp: CatchingUp,
    private readonly stateFile: string,
  ) {}

  /** The operation kinds this runner runs. */
  protected abstract readonly kinds: readonly string[];

  /** Runs `op`; resolves with its result, or throws its failure. */
  protected abstract execute(op: OperationRecord, signal: AbortSignal): Promise<
    Record<string, unknown>
  >;

  /** The audit action of `op`'s outcome. */
  protected abstract auditAction(op: OperationRecord): string;

  /** Cleans up after `op`, cut short by this node's restart (before it is marked failed). */
  protected async cleanUpInterrupted(_op: OperationRecord): Promise<void> {}

  /** The result recorded with a failure, if any. */
  protected failureResult(_op: OperationRecord, _err: unknown): Record<string, unknown> | null {
    return null;
  }

  private async loadMine(): Promise<void> {
    if (this.#mineLoaded) return;
    try {
      const ids = JSON.parse(await Deno.readTextFile(this.stateFile));
      if (Array.isArray(ids)) this.#mine = new Set(ids.map(String));
    } catch { /* none yet */ }
    this.#mineLoaded = true;
  }

  private async saveMine(): Promise<void> {
    await writeFileDurably(this.stateFile, JSON.stringify([...this.#mine]) + "\n").catch((err) =>
      log.warn("cannot record running operations", { file: this.stateFile, error: String(err) })
    );
  }

  /** Starts watching operations; fails the ones a previous run of this node left running. */
  async start(): Promise<void> {
    await this.loadMine();
    this.#off = this.cluster.onOperationChange((id) => {
      if (id === null) this.scan();
      else this.consider(this.cluster.operation(id));
    });
    this.scan();
    // Operations left by an earlier run are judged once this replica caught up (before, one
    // may look running that finished long ago); the periodic scan also catches a missed change.
    this.#timer = setInterval(() => this.scan(), 5_000);
  }

  stop(): void {
    this.#off?.();
    if (this.#timer !== null) clearInterval(this.#timer);
    for (const c of this.#running.values()) c.abort(new ConflictError("node stopping"));
  }

  isRunning(opId: string): boolean {
    return this.#running.has(opId);
  }

  /** Aborts a running operation of this host; false when it runs no such operation. */
  abort(opId: string): boolean {
    const c = this.#running.get(opId);
    c?.abort(new ConflictError(`operation ${opId} aborted`));
    return !!c;
  }

  private scan(): void {
    const ops = this.cluster.operations();
    for (const op of ops) this.consider(op);
    if (this.caughtUp.isCaughtUp()) {
      // Forget operations that finished (or were pruned) while this host was down.
      const running = new Set(ops.filter((o) => o.state === "running").map((o) => o.id));
      const stale = [...this.#mine].filter((id) => !running.has(id) && !this.#running.has(id));
      if (stale.length) {
        for (const id of stale) this.#mine.delete(id);
        void this.saveMine();
      }
    }
  }

  private consider(op: OperationRecord | null): void {
    if (!op || op.state !== "running" || op.runner !== this.cluster.nodeName) return;
    if (!this.kinds.includes(op.kind)) return;
    if (this.#running.has(op.id)) return;
    // Nothing before this replica caught up: an operation may look running in it that this
    // host finished before a restart (the periodic scan comes back to it).
    if (!this.caughtUp.isCaughtUp()) return;
    if (this.#mine.has(op.id)) {
      // Ours, from before this process: whatever it did is gone with it.
      this.#running.set(op.id, new AbortController());
      void this.interrupted(op).finally(() => this.#running.delete(op.id));
      return;
    }
    void this.run(op);
  }

  /** An operation cut short by this node's restart: cleaned up, and failed. */
  private async interrupted(op: OperationRecord): Promise<void> {
    await this.cleanUpInterrupted(op).catch((err) =>
      log.warn("cannot clean up after an interrupted operation", { op: op.id, error: String(err) })
    );
    await this.finish(op.id, "failed", null, "interrupted: its node restarted while it ran");
    this.#mine.delete(op.id);
    await this.saveMine();
  }

  private async run(op: OperationRecord): Promise<void> {
    const ctl = new AbortController();
    this.#running.set(op.id, ctl);
    this.#mine.add(op.id);
    await this.saveMine();
    const t0 = performance.now();
    const resource = String(op.params.vm ?? op.target);
    try {
      const result = await this.execute(op, ctl.signal);
      result.ms = Math.round(performance.now() - t0);
      await this.finish(op.id, "succeeded", result);
      this.cluster.audit?.(this.auditAction(op), resource, `${op.id} succeeded`);
      log.info(`${op.kind} finished`, { op: op.id, target: op.target, ...result });
    } catch (err) {
      const aborted = ctl.signal.aborted;
      const message = (err as Error).message ?? String(err);
      log.warn(`${op.kind} failed`, { op: op.id, target: op.target, error: message, aborted });
      await this.finish(
        op.id,
        aborted ? "aborted" : "failed",
        this.failureResult(op, err),
        message,
      );
      this.cluster.audit?.(
        this.auditAction(op),
        resource,
        `${op.id} ${aborted ? "aborted" : "failed"}: ${message}`,
      );
    } finally {
      this.#running.delete(op.id);
      this.#mine.delete(op.id);
      await this.saveMine();
    }
  }

  private async finish(
    id: string,
    state: OperationOutcome,
    result: Record<string, unknown> | null,
    error?: string,
  ): Promise<void> {
    await reportOutcome(this.cluster, id, state, result, error);
  }

  /** A progress reporter for `opId` (percent of `done` in `total`, and the bytes). */
  protected progress(opId: string): ProgressReporter {
    let last = 0;
    return (phase, done, total) => {
      if (Date.now() - last < PROGRESS_EVERY_MS) return;
      last = Date.now();
      const percent = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 0;
      this.cluster.report({
        op: "operation.update",
        id: opId,
        progress: { phase, percent, doneBytes: done, totalBytes: total },
        at: last,
      }).catch(() => {});
    };
  }
}

/** The error code of a failure (`internal` unless it is one of ours), for its record. */
/** How an operation a host ran ended. */
export type OperationOutcome = "succeeded" | "failed" | "aborted";

/**
 * Records how operation `id` ended (migrations, backups, snapshots). A failure to record it is
 * logged, not thrown: the work is over either way, and callers are past the point of acting on it.
 */
export async function reportOutcome(
  cluster: Pick<OperationCluster, "report">,
  id: string,
  state: OperationOutcome,
  result: Record<string, unknown> | null,
  error?: string,
): Promise<void> {
  await cluster.report({
    op: "operation.update",
    id,
    state,
    result: result ?? undefined,
    error,
    at: Date.now(),
  }).catch((err) => log.warn("cannot record operation outcome", { id, error: String(err) }));
}

export function errorCodeOf(err: unknown): string {
  return err instanceof NovaError ? err.code : "internal";
}
