/**
 * High availability on the leader: once a host's lease has surely expired,
 * its HA VMs are re-placed on healthy hosts (highest priority first) and its
 * other VMs are reported failed. The host's fencing watchdog killed its HA VMs
 * before its lease ran out, so an HA VM never runs on two hosts at once. An
 * HA VM that fails to start where it was placed is placed again on another
 * host, within its restart budget: it is never left down with nobody trying.
 */
import type { ClusterNode } from "./node.ts";
import type { LeaseTable } from "./lease.ts";
import type { VmRecord } from "../fsm/mod.ts";
import { log } from "../log/mod.ts";
import { metrics } from "../metrics/mod.ts";
import { auditSystem } from "./audit.ts";
import { explain, place } from "../scheduler/mod.ts";
import { hostViews, placedVms, placementRequestOf, serializedDecision } from "./vm_service.ts";

export class HaManager {
  /** The host each VM last left because that host lost its lease: the likely holder of a stale disk lock. */
  private readonly lostOn = new Map<string, string>();
  private readonly restarts = new Map<string, number[]>();
  /** Hosts this leader found lost (lease surely expired), counted once until they return. */
  private readonly lost = new Set<string>();
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

  /**
   * Hosts whose lease has surely expired, as seen by this leader. Removed members count
   * too: their host record is gone but their VMs keep the host's name (`cluster remove` of
   * a dead host, or a recovery that removed every other member, core/recovery/), and their
   * lease runs out like any other, so their HA VMs restart elsewhere.
   */
  deadHosts(): string[] {
    const leaseMs = this.node.fsm.config().config["ha.leaseMs"];
    const hosts = new Set([...this.node.fsm.nodeNames(), ...this.node.fsm.removedMembers()]);
    return [...hosts].filter((n) => n !== this.node.id && this.leases.surelyExpired(n, leaseMs));
  }

  async tick(): Promise<void> {
    // Grants belong to the term they were made in: the lease table forgets them itself.
    if (!this.node.isLeader()) return;
    const cfg = this.node.fsm.config().config;
    const dead = new Set(this.deadHosts());
    this.countLost(dead);
    if (dead.size) await this.failOrphanedOperations(dead);
    const byPriority = (a: VmRecord, b: VmRecord) =>
      (b.haPriority ?? 0) - (a.haPriority ?? 0) || a.name.localeCompare(b.name);
    // Found by index (the dead hosts' VMs, the HA VMs), not by parsing every VM each round.
    const wanted = (v: VmRecord) => v.desired === "running" && !v.template;
    const stranded = [...dead].flatMap((host) => this.node.fsm.listVms({ node: host }))
      .filter(wanted).sort(byPriority);
    for (const vm of stranded) {
      if (vm.ha && cfg["ha.enabled"]) await this.failover(vm, dead, this.hostLost(vm));
      else if (vm.state !== "failed") await this.markLost(vm);
    }
    if (!cfg["ha.enabled"]) return;
    const ha = this.node.fsm.listVms({ ha: true }).filter(wanted);
    for (const vm of ha.filter((v) => v.node && !dead.has(v.node)).sort(byPriority)) {
      if (startFailed(vm)) {
        await this.failover(vm, new Set([...dead, vm.node!]), this.startLost(vm));
      }
    }
  }

  /** A fencing event per host newly lost: its HA VMs were fenced by its watchdog. */
  private countLost(dead: Set<string>): void {
    for (const host of dead) {
      if (!this.lost.has(host)) metrics.fencingEvents.inc({ event: "host_lost" });
    }
    this.lost.clear();
    for (const host of dead) this.lost.add(host);
  }

  private hostLost(vm: VmRecord): { why: string; stillValid: () => boolean; lostOn?: string } {
    const leaseMs = () => this.node.fsm.config().config["ha.leaseMs"];
    return {
      lostOn: vm.node!,
      why: `host ${vm.node} lost its lease`,
      // Checked again right before the move: a grant may have landed since the pass began.
      stillValid: () => this.leases.surelyExpired(vm.node!, leaseMs()),
    };
  }

  /** Why an HA VM that failed to start on a live host moves on; a lock names its likely holder. */
  private startLost(vm: VmRecord): { why: string; stillValid: () => boolean } {
    const detail = vm.reason!.replace(/^start failed: /, "");
    const holder = this.lostOn.get(vm.name);
    const why = /locked by another QEMU/.test(detail)
      ? `disk locked by another QEMU${holder ? `, probably on ${holder}` : ""}`
      : detail;
    return {
      why: `start on ${vm.node} failed: ${why}`,
      stillValid: () => startFailed(this.node.fsm.vm(vm.name) ?? vm),
    };
  }

  /** Operations whose runner died will never report: fail them and unmark their VMs. */
  private async failOrphanedOperations(dead: Set<string>): Promise<void> {
    for (const op of this.node.fsm.runningOperations()) {
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

  private async failover(
    vm: VmRecord,
    exclude: Set<string>,
    cause: { why: string; stillValid: () => boolean; lostOn?: string },
  ): Promise<void> {
    if (!this.withinRestartBudget(vm)) {
      const reason = `HA restart limit reached; last: ${cause.why}`;
      if (vm.state !== "failed" || vm.reason !== reason) {
        await this.node.propose({
          op: "vm.observed",
          name: vm.name,
          node: vm.node!,
          state: "failed",
          reason,
          at: Date.now(),
        });
      }
      return;
    }
    await serializedDecision(this.node, async () => {
      const fresh = this.node.fsm.vm(vm.name);
      if (!fresh || fresh.node !== vm.node || !cause.stillValid()) return;
      const hosts = hostViews(this.node).map((h) =>
        exclude.has(h.node.name) ? { ...h, schedulable: false, state: "offline" } : h
      );
      const others = placedVms(this.node).filter((v) => v.name !== vm.name);
      const placed = place(
        placementRequestOf(this.node, fresh, { exclude: [...exclude] }),
        hosts,
        others,
        this.node.fsm.config().config,
      );
      if (!placed.ok) {
        const reason = `HA: no host can take it (${cause.why}): ${explain(placed.reasons)}`;
        if (fresh.state !== "failed" || fresh.reason !== reason) {
          await this.node.propose({
            op: "vm.observed",
            name: vm.name,
            node: vm.node!,
            state: "failed",
            reason,
            at: Date.now(),
          });
        }
        return;
      }
      this.restarts.get(vm.name)!.push(Date.now());
      if (cause.lostOn) this.lostOn.set(vm.name, cause.lostOn);
      log.warn("HA failover", { vm: vm.name, from: vm.node, to: placed.node, why: cause.why });
      await this.node.propose({
        op: "vm.moved",
        name: vm.name,
        from: vm.node!,
        to: placed.node,
        reason: `HA restart: ${cause.why}`,
        at: Date.now(),
      });
      metrics.haRestarts.inc();
      auditSystem(this.node, "ha.restart", `vm/${vm.name}`, `to ${placed.node}: ${cause.why}`);
    });
  }
}

/** The host reported that this VM did not start (and left its retry to the leader). */
function startFailed(vm: VmRecord): boolean {
  return vm.state === "failed" && !!vm.reason?.startsWith("start failed: ");
}
