/**
 * Each node's audit buffer: records of requests it served and of actions it
 * took on its own are collected here and proposed to the replicated audit log
 * (core/fsm/audit.ts) in batches, one `audit.append` command per batch.
 *
 * - On the leader a batch rides along with the next proposal (ClusterNode
 *   beforePropose): it joins that proposal's Ready batch, so under load the
 *   audit log costs no Raft round (no fsync) of its own. When nothing else is
 *   proposed it goes after {@link AuditBufferOptions.intervalMs}.
 * - On a follower a batch goes to the leader every {@link AuditBufferOptions.intervalMs}
 *   (or at once when {@link AuditBufferOptions.batch} records wait), the way
 *   hosts report (submitToLeader).
 * - While no leader is reachable records wait, retried with backoff; past
 *   {@link AuditBufferOptions.cap} the oldest are dropped and counted in
 *   `novactl_audit_dropped_total`.
 *
 * Records are not durable until their batch commits: a node that crashes
 * first loses them (see core/fsm/audit.ts for the window).
 */
import type { ClusterNode } from "./node.ts";
import { submitToLeader } from "./service.ts";
import type { AuditInput } from "../fsm/mod.ts";
import { MAX_RECORDS_PER_APPEND } from "../fsm/audit.ts";
import { metrics } from "../metrics/mod.ts";
import { log } from "../log/mod.ts";

/** Tuning of an {@link AuditBuffer}. */
export interface AuditBufferOptions {
  /** How long a follower gathers records before sending them (ms). */
  intervalMs: number;
  /** Records per `audit.append`; a follower sends at once when this many wait. */
  batch: number;
  /** Records kept while the leader is unreachable; beyond it the oldest are dropped. */
  cap: number;
  /** Longest wait between retries after a failed send (ms). */
  maxBackoffMs: number;
}

const DEFAULTS: AuditBufferOptions = {
  intervalMs: 100,
  batch: 256,
  cap: 10_000,
  maxBackoffMs: 5_000,
};

/** A node's pending audit records and the loop that proposes them. */
export class AuditBuffer {
  readonly #node: ClusterNode;
  readonly #opts: AuditBufferOptions;
  #pending: AuditInput[] = [];
  #timer: ReturnType<typeof setTimeout> | null = null;
  #sending: Promise<void> | null = null;
  #failures = 0;
  #closed = false;

  constructor(node: ClusterNode, opts: Partial<AuditBufferOptions> = {}) {
    this.#node = node;
    this.#opts = { ...DEFAULTS, ...opts };
    this.#opts.batch = Math.min(this.#opts.batch, MAX_RECORDS_PER_APPEND);
    node.beforePropose(() => this.#rideAlong());
  }

  /** On the leader, proposes what waits now, just before (and with) another proposal. */
  #rideAlong(): void {
    if (this.#closed || this.#sending || !this.#pending.length || !this.#node.isLeader()) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    void this.#send();
  }

  /** Records waiting to be proposed. */
  get pending(): number {
    return this.#pending.length;
  }

  /** Queues one record; never blocks and never throws. */
  record(r: AuditInput): void {
    if (this.#closed) {
      metrics.auditDropped.inc();
      return;
    }
    this.#pending.push(r);
    this.#trim();
    this.#arm();
  }

  /** Sends what waits now; resolves when the send finished (or failed). */
  async flush(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    while (this.#sending) await this.#sending;
    if (this.#pending.length) await this.#send();
  }

  /**
   * Stops the loop after one last send attempt (bounded by `timeoutMs`); what
   * is still pending then is dropped and counted.
   */
  async close(timeoutMs = 1_000): Promise<void> {
    if (this.#closed) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.flush().catch(() => {}),
      new Promise<void>((r) => timer = setTimeout(r, timeoutMs)),
    ]);
    clearTimeout(timer);
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#pending.length) metrics.auditDropped.inc(this.#pending.length);
    this.#pending = [];
  }

  #trim(): void {
    const over = this.#pending.length - this.#opts.cap;
    if (over > 0) {
      this.#pending.splice(0, over);
      metrics.auditDropped.inc(over);
    }
  }

  #arm(): void {
    if (this.#timer || this.#sending || this.#closed || !this.#pending.length) return;
    const full = this.#pending.length >= this.#opts.batch;
    const delay = this.#failures
      ? Math.min(this.#opts.maxBackoffMs, this.#opts.intervalMs * 2 ** this.#failures)
      : full
      ? 0
      : this.#opts.intervalMs;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#send();
    }, delay);
  }

  #send(): Promise<void> {
    const records = this.#pending.splice(0, this.#opts.batch);
    const command = { op: "audit.append" as const, records, at: Date.now() };
    const node = this.#node;
    const sent =
      (node.isLeader()
        ? node.propose(command)
        : submitToLeader(node, command, { readOwnWrite: false }))
        .then(() => void (this.#failures = 0))
        .catch((err) => {
          this.#failures = Math.min(this.#failures + 1, 16);
          log.debug("audit records not sent yet", { records: records.length, error: String(err) });
          // Back in front, oldest first; the cap still holds.
          this.#pending.unshift(...records);
          this.#trim();
        })
        .finally(() => {
          this.#sending = null;
          this.#arm();
        });
    this.#sending = sent;
    return sent;
  }
}

const buffers = new WeakMap<ClusterNode, AuditBuffer>();

/** The node's audit buffer (made on first use). */
export function auditBufferOf(node: ClusterNode): AuditBuffer {
  let b = buffers.get(node);
  if (!b) buffers.set(node, b = new AuditBuffer(node));
  return b;
}

/** Flushes and stops the node's audit buffer, if it has one (on node stop). */
export async function closeAudit(node: ClusterNode, timeoutMs?: number): Promise<void> {
  await buffers.get(node)?.close(timeoutMs);
}

/**
 * Records an action the cluster took on its own: principal `system:<component>`
 * (the action's first part), source and node this node.
 * @param action `<component>.<what>`, e.g. `ha.restart`, `fencing.kill`, `rebalance.move`
 * @param resource what it acted on, `kind/name` (e.g. `vm/web1`)
 */
export function auditSystem(
  node: ClusterNode,
  action: string,
  resource: string | null,
  detail?: string,
): void {
  auditBufferOf(node).record({
    at: Date.now(),
    principal: `system:${action.split(".")[0]}`,
    role: null,
    source: node.id,
    node: node.id,
    requestId: null,
    method: "SYSTEM",
    route: action,
    path: "",
    resource,
    code: null,
    ms: 0,
    detail: detail ?? null,
  });
}
