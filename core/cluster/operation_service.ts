/** Long operations as seen from one node's replica. */
import type { ClusterNode } from "./node.ts";
import type { OperationRecord, OperationSpec } from "../fsm/mod.ts";
import { NotFoundError } from "../errors/mod.ts";
import { currentRequestId } from "../log/mod.ts";

/**
 * Records a new operation through Raft. It names the API request it was started for, when
 * there is one, as that request's audit record and log lines do.
 */
export async function createOperation(
  node: ClusterNode,
  spec: Omit<OperationSpec, "requestId">,
): Promise<OperationRecord> {
  const requestId = currentRequestId();
  return await node.propose({
    op: "operation.create",
    operation: requestId ? { ...spec, requestId } : spec,
    at: Date.now(),
  }) as OperationRecord;
}

/**
 * Resolves when the operation has left "running" here, or at the deadline
 * (or abort) with its current record, whatever its state.
 */
export async function waitForOperation(
  node: ClusterNode,
  id: string,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<OperationRecord> {
  const deadline = Date.now() + opts.timeoutMs;
  // Woken by the replica's change of this operation (or a snapshot), so the answer leaves as
  // soon as the end is applied here; the periodic look is only a safety net.
  let wake: (() => void) | null = null;
  const off = node.fsm.onChange((c) => {
    if (c === null || (c.resource === "operation" && c.name === id)) wake?.();
  });
  const onAbort = () => wake?.();
  opts.signal?.addEventListener("abort", onAbort);
  try {
    for (;;) {
      const op = node.fsm.operation(id);
      if (!op) throw new NotFoundError("operation", id);
      if (op.state !== "running" || Date.now() >= deadline || opts.signal?.aborted) return op;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(1_000, Math.max(0, deadline - Date.now())));
        function done() {
          clearTimeout(timer);
          wake = null;
          resolve();
        }
        wake = done;
      });
    }
  } finally {
    off();
    opts.signal?.removeEventListener("abort", onAbort);
  }
}
