/** Long operations as seen from one node's replica. */
import type { ClusterNode } from "./node.ts";
import type { OperationRecord, OperationSpec } from "../fsm/mod.ts";
import { NotFoundError } from "../errors/mod.ts";
import { currentRequestId } from "../log/mod.ts";
import { settleOnChange, type SettleOptions } from "./settle.ts";

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
 * Resolves when the operation has left "running" here, or at the deadline (or abort) with
 * its current record, whatever its state. Woken by the replica's change of this operation
 * (or a snapshot), so the answer leaves as soon as the end is applied here.
 *
 * @throws {NotFoundError} when the operation is not known here (or is pruned meanwhile).
 */
export async function waitForOperation(
  node: ClusterNode,
  id: string,
  opts: SettleOptions,
): Promise<OperationRecord> {
  const changes = (listener: () => void) =>
    node.fsm.onChange((c) => {
      if (c === null || (c.resource === "operation" && c.name === id)) listener();
    });
  const op = await settleOnChange(
    changes,
    () => node.fsm.operation(id),
    (op) => !op || op.state !== "running",
    opts,
  );
  if (!op) throw new NotFoundError("operation", id);
  return op;
}
