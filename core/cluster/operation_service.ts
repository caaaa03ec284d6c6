/** Long operations as seen from one node's replica. */
import type { ClusterNode } from "./node.ts";
import type { OperationRecord } from "../fsm/mod.ts";
import { NotFoundError } from "../errors/mod.ts";

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
  for (;;) {
    const op = node.fsm.operation(id);
    if (!op) throw new NotFoundError("operation", id);
    if (op.state !== "running" || Date.now() >= deadline || opts.signal?.aborted) return op;
    await new Promise((r) => setTimeout(r, 100));
  }
}
