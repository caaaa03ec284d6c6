/**
 * Load balancing (DRS-like) on the leader: plans with the scheduler's greedy
 * planner and applies plans as live migrations, a bounded number at a time.
 * Runs periodically when `rebalancer.enabled`; `cluster rebalance` runs it
 * on demand (or only prints the plan with --dry-run).
 */
import { auditSystem } from "./audit.ts";
import type { ClusterNode } from "./node.ts";
import type { OperationRecord } from "../fsm/mod.ts";
import { ConflictError } from "../errors/mod.ts";
import { log } from "../log/mod.ts";
import { type Move, planRebalance, type RebalancePlan } from "../scheduler/mod.ts";
import { hostViews, placementRequestOf, serializedDecision } from "./vm_service.ts";
import { startMigration } from "./migration_service.ts";
import { createOperation, waitForOperation } from "./operation_service.ts";

/** VMs that must stay put: migrating, or moved within the cooldown. */
function frozenVms(node: ClusterNode): Set<string> {
  const cooldown = node.fsm.settings()["rebalancer.cooldownMs"];
  const now = Date.now();
  const frozen = new Set(node.fsm.vms().filter((v) => v.migration).map((v) => v.name));
  for (const op of node.fsm.operations()) {
    if (op.kind === "migrate" && now - Date.parse(op.updatedAt) < cooldown) frozen.add(op.target);
  }
  return frozen;
}

export function rebalancePlan(node: ClusterNode, maxMoves = 50): RebalancePlan {
  const vms = node.fsm.vms();
  const byName = new Map(vms.map((v) => [v.name, v]));
  return planRebalance(hostViews(node), vms, node.fsm.settings(), {
    threshold: node.fsm.settings()["rebalancer.threshold"],
    maxMoves,
    frozen: frozenVms(node),
    requestOf: (v) => placementRequestOf(node, byName.get(v.name)!),
  });
}

/** Starts an operation that carries out `plan`; returns it at once. */
export async function applyRebalance(
  node: ClusterNode,
  plan: RebalancePlan,
  by: string,
): Promise<OperationRecord> {
  if (node.fsm.runningOperations().some((o) => o.kind === "rebalance" && o.state === "running")) {
    throw new ConflictError("a rebalance is already running");
  }
  const op = await createOperation(node, {
    id: `rebalance-${crypto.randomUUID().slice(0, 8)}`,
    kind: "rebalance",
    target: "cluster",
    runner: node.id,
    params: { plan },
    by,
  });
  void runPlan(node, op.id, plan.moves).catch((err) =>
    log.warn("rebalance failed", { error: String(err) })
  );
  return op;
}

async function runPlan(node: ClusterNode, opId: string, moves: Move[]): Promise<void> {
  const queue = [...moves];
  const done: Move[] = [];
  const failed: Record<string, string> = {};
  const worker = async () => {
    for (let m = queue.shift(); m; m = queue.shift()) {
      try {
        const mig = await serializedDecision(node, async () => {
          const vm = node.fsm.vm(m!.vm);
          if (!vm || vm.node !== m!.from || vm.migration) {
            throw new ConflictError("moved meanwhile");
          }
          return await startMigration(node, vm, m!.to, "rebalancer");
        });
        auditSystem(node, "rebalance.move", `vm/${m.vm}`, `${m.from} -> ${m.to} (${mig.id})`);
        const end = await waitForOperation(node, mig.id, { timeoutMs: Infinity });
        if (end.state === "succeeded") done.push(m);
        else failed[m.vm] = end.error ?? end.state;
      } catch (err) {
        failed[m.vm] = (err as Error).message;
      }
    }
  };
  const parallel = node.fsm.settings()["rebalancer.maxConcurrentMigrations"];
  await Promise.all(Array.from({ length: parallel }, worker));
  const ok = Object.keys(failed).length === 0;
  await node.propose({
    op: "operation.update",
    id: opId,
    state: ok ? "succeeded" : "failed",
    result: { moved: done, failed },
    error: ok ? undefined : `some moves failed: ${JSON.stringify(failed)}`,
    at: Date.now(),
  });
}

/** How often the loop looks at the configuration; a new interval applies within this. */
const RECHECK_MS = 1_000;

/**
 * The periodic loop: plans when enabled, applies when the imbalance exceeds the threshold.
 * It wakes every second and passes once `rebalancer.intervalMs` has gone by since the last
 * pass, so enabling it or shortening the interval applies live, not after the old interval.
 */
export class Rebalancer {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private lastPassAt = Date.now();

  constructor(private readonly node: ClusterNode) {}

  start(): void {
    const loop = async () => {
      const cfg = this.node.fsm.settings();
      if (!cfg["rebalancer.enabled"]) this.lastPassAt = Date.now();
      else if (Date.now() - this.lastPassAt >= cfg["rebalancer.intervalMs"]) {
        this.lastPassAt = Date.now();
        if (this.node.isLeader()) await this.pass();
      }
      this.timer = setTimeout(loop, RECHECK_MS);
    };
    this.timer = setTimeout(loop, RECHECK_MS);
  }

  private async pass(): Promise<void> {
    const cfg = this.node.fsm.settings();
    try {
      const plan = rebalancePlan(this.node);
      if (plan.moves.length && plan.imbalanceBefore > cfg["rebalancer.threshold"]) {
        log.info("rebalancing", { moves: plan.moves.length, imbalance: plan.imbalanceBefore });
        await applyRebalance(this.node, plan, "rebalancer");
      }
    } catch (err) {
      log.debug("rebalance pass skipped", { error: String(err) });
    }
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
  }
}
