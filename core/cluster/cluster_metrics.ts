/**
 * Cluster-wide metrics, exported by the leader only: VMs by state (read from the state
 * machine when scraped) and operations and migrations by result (counted as their end is
 * applied while this node leads). HA restarts and fencing events are counted where they
 * happen (ha.ts, host/vm_host.ts).
 *
 * Counters restart from zero on a new leader; Prometheus's `rate()` and `increase()` take
 * that as a counter reset of another target.
 */
import { metrics, setVmStateSource } from "../metrics/mod.ts";
import type { OperationRecord } from "../fsm/mod.ts";

/** The narrow view of a node this needs. */
export interface MetricsNode {
  isLeader(): boolean;
  fsm: {
    vmCountsByState(): Partial<Record<string, number>>;
    operation(id: string): OperationRecord | null;
    onChange(listener: (c: { resource: string; name?: string } | null) => void): () => void;
  };
}

/** Operations already counted: an ended operation is immutable, but is applied once more on replay. */
const MAX_REMEMBERED = 2_000;

/** Starts exporting; returns the stop function. */
export function exportClusterMetrics(node: MetricsNode): () => void {
  setVmStateSource(() => node.isLeader() ? node.fsm.vmCountsByState() : null);
  const counted = new Set<string>();
  const off = node.fsm.onChange((c) => {
    if (c?.resource !== "operation" || !c.name || !node.isLeader()) return;
    const op = node.fsm.operation(c.name);
    if (!op || op.state === "running" || counted.has(op.id)) return;
    countEnded(op);
    counted.add(op.id);
    if (counted.size > MAX_REMEMBERED) counted.delete(counted.values().next().value!);
  });
  return () => {
    off();
    setVmStateSource(null);
  };
}

function countEnded(op: OperationRecord): void {
  metrics.operations.inc({ kind: op.kind, result: op.state });
  if (op.kind === "migrate") metrics.migrations.inc({ result: op.state });
}
