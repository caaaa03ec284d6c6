/**
 * High availability on the leader: once a host's lease has surely expired,
 * its HA VMs are re-placed on healthy hosts (highest priority first) and its
 * other VMs are reported failed. The host itself stopped its HA VMs before
 * its lease ran out, so an HA VM never runs on two hosts at once.
 */
import type { ClusterNode } from "./node.ts";
import type { LeaseTable } from "./lease.ts";
import type { VmRecord } from "../fsm/mod.ts";
import { log } from "../log/mod.ts";
import { explain, place } from "../scheduler/mod.ts";
import { hostViews, placementRequestOf, serializedDecision } from "./vm_service.ts";

export class HaManager {
  private wasLeader = false;
  private readonly restarts = new Map<string, number[]>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private busy = false;

  constructor(private readonly node: ClusterNode, private readonly leases: LeaseTable) {}

  start(intervalMs = 500): void {
    this.timer = setInterval(() => {
      if (this.busy) return;
      this.busy = true;
      this.tick().catch((err) => log.warn("HA pass failed", { error: String(err) }))
        .finally(() => (this.busy = false));
    }, intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Hosts whose lease has surely expired, as seen by this leader. */
  deadHosts(): string[] {
    const leaseMs = this.node.fsm.config().config["ha.leaseMs"];
    return this.node.fsm.nodes().map((n) => n.name).filter((n) =>
      n !== this.node.id && this.leases.surelyExpired(n, leaseMs)
    );
  }

  async tick(): Promise<void> {
    if (!this.node.isLeader()) {
      this.wasLeader = false;
      return;
    }
    if (!this.wasLeader) {
      // Grants made by an earlier leader are unknown here: count every host from now.
      this.leases.resetForNewTerm();
      this.wasLeader = true;
      return;
    }
    const cfg = this.node.fsm.config().config;
    const dead = new Set(this.deadHosts());
    if (!dead.size) return;
    await this.failOrphanedOperations(dead);
    const stranded = this.node.fsm.vms()
      .filter((v) => v.node && dead.has(v.node) && v.desired === "running" && !v.template)
      .sort((a, b) => (b.haPriority ?? 0) - (a.haPriority ?? 0) || a.name.localeCompare(b.name));
    for (const vm of stranded) {
      if (vm.ha && cfg["ha.enabled"]) await this.failover(vm, dead);
      else if (vm.state !== "failed") await this.markLost(vm);
    }
  }

  /** Operations whose runner died will never report: fail them and unmark their VMs. */
  private async failOrphanedOperations(dead: Set<string>): Promise<void> {
    for (const op of this.node.fsm.operations()) {
      if (op.state !== "running" || !dead.has(op.runner)) continue;
      await this.node.propose({
        op: "operation.update",
        id: op.id,
        state: "failed",
        error: `host ${op.runner} running it went offline`,
        at: Date.now(),
      });
      const vm = this.node.fsm.vm(op.target);
      if (vm?.migration?.opId === op.id) {
        await this.node.propose({
          op: "vm.update",
          name: vm.name,
          changes: { migration: null },
          by: "ha",
          at: Date.now(),
        });
      }
    }
  }

  private async markLost(vm: VmRecord): Promise<void> {
    await this.node.propose({
      op: "vm.observed",
      name: vm.name,
      node: vm.node!,
      state: "failed",
      reason: `host ${vm.node} is offline (lease expired)`,
      at: Date.now(),
    });
  }

  /** The VM's own HA policy (max restarts in a window), else the cluster's. */
  private withinRestartBudget(vm: VmRecord): boolean {
    const cfg = this.node.fsm.settings();
    const windowMs = vm.haRestartWindowMs ?? cfg["vms.restartWindowMs"];
    const limit = vm.haMaxRestarts ?? cfg["vms.restartLimit"];
    const now = Date.now();
    const recent = (this.restarts.get(vm.name) ?? []).filter((t) => now - t < windowMs);
    this.restarts.set(vm.name, recent);
    return recent.length < limit;
  }

  private async failover(vm: VmRecord, dead: Set<string>): Promise<void> {
    if (!this.withinRestartBudget(vm)) {
      if (vm.state !== "failed") {
        await this.node.propose({
          op: "vm.observed",
          name: vm.name,
          node: vm.node!,
          state: "failed",
          reason: "HA restart limit reached",
          at: Date.now(),
        });
      }
      return;
    }
    await serializedDecision(this.node, async () => {
      const fresh = this.node.fsm.vm(vm.name);
      if (!fresh || fresh.node !== vm.node) return;
      const hosts = hostViews(this.node).map((h) =>
        dead.has(h.node.name) ? { ...h, schedulable: false, state: "offline" } : h
      );
      const others = this.node.fsm.vms().filter((v) => v.name !== vm.name);
      const placed = place(
        placementRequestOf(this.node, fresh, { exclude: [...dead] }),
        hosts,
        others,
        this.node.fsm.config().config,
      );
      if (!placed.ok) {
        if (fresh.state !== "failed" || !fresh.reason?.startsWith("HA: no host")) {
          await this.node.propose({
            op: "vm.observed",
            name: vm.name,
            node: vm.node!,
            state: "failed",
            reason: `HA: no host can take it: ${explain(placed.reasons)}`,
            at: Date.now(),
          });
        }
        return;
      }
      this.restarts.get(vm.name)!.push(Date.now());
      log.warn("HA failover", { vm: vm.name, from: vm.node, to: placed.node });
      await this.node.propose({
        op: "vm.moved",
        name: vm.name,
        from: vm.node!,
        to: placed.node,
        reason: `HA restart: host ${vm.node} lost its lease`,
        at: Date.now(),
      });
    });
  }
}
