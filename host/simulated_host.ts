/**
 * A SIMULATED host, for scale tests and benchmarks only (`novactl node start
 * --simulated-host`): it takes the VMs the scheduler places on it and reports
 * them as the real host would once it converged — running, stopped, removed —
 * without QEMU, disks or images. Everything else about the node is real: its
 * Raft membership, its leases, its reports through the leader, its API.
 *
 * It lets one machine carry a control plane with far more (and far larger)
 * hosts than it could run guests for: the inventory it registers comes from
 * flags. Its registration says so (`version` ends in "(simulated host)"), and a
 * real VM's console, snapshots or disks are not available on it.
 *
 * @module
 */
import type { HostCluster } from "./vm_host.ts";
import type { VmRecord } from "../core/fsm/mod.ts";
import { KeyedSerializer } from "../core/concurrency/mod.ts";
import { log } from "../core/log/mod.ts";

/** What a simulated host registers as its hardware. */
export interface SimulatedHardware {
  cpus: number;
  memoryMiB: number;
}

/** Marks a simulated host's inventory (`version`), so no one takes it for a real one. */
export const SIMULATED_SUFFIX = " (simulated host)";

/**
 * The periodic pass only retries reports that failed (every change is reconciled as it
 * is applied). Thousands of VMs per simulated host made the real host's 2 s pass 4 % of
 * a leader's CPU in bench:api, a cost no real host of that size would add to the leader.
 */
const RECONCILE_EVERY_MS = 10_000;

export class SimulatedHost {
  readonly #cluster: HostCluster;
  readonly #work = new KeyedSerializer();
  readonly #queued = new Set<string>();
  #timer: ReturnType<typeof setInterval> | null = null;
  #unsubscribe: (() => void) | null = null;

  constructor(cluster: HostCluster) {
    this.#cluster = cluster;
  }

  start(): void {
    log.warn("SIMULATED HOST: VMs placed here are reported without running QEMU");
    this.#unsubscribe = this.#cluster.onVmChange((name) => {
      if (name === null) this.#reconcileAll();
      else this.#schedule(name);
    });
    this.#reconcileAll();
    this.#timer = setInterval(() => this.#reconcileAll(), RECONCILE_EVERY_MS);
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#unsubscribe?.();
  }

  #reconcileAll(): void {
    for (const vm of this.#cluster.vmsHere()) this.#schedule(vm.name);
  }

  /** The generation each VM last ran at here (a newer one is a restart). */
  readonly #generations = new Map<string, number>();

  #schedule(name: string): void {
    if (this.#queued.has(name)) return;
    this.#queued.add(name);
    void this.#work.run(name, async () => {
      this.#queued.delete(name);
      try {
        await this.#reconcile(name);
      } catch (err) {
        log.debug("simulated reconcile failed; will retry", { vm: name, error: String(err) });
      }
    });
  }

  /** What a real host reports once it converged on the VM's desired state. */
  async #reconcile(name: string): Promise<void> {
    const vm = this.#cluster.vm(name);
    if (!vm || vm.node !== this.#cluster.nodeName) return;
    if (vm.desired === "deleted") {
      this.#generations.delete(name);
      await this.#cluster.report({ op: "vm.remove", name, node: vm.node, at: Date.now() });
      return;
    }
    const want = vm.desired === "running" ? "running" : "stopped";
    if (want === "running" && vm.state === "running") {
      // A restart (a newer generation): a real host replaces the QEMU, reporting it on the way.
      const ran = this.#generations.get(name);
      if (ran === undefined || ran >= vm.generation) {
        this.#generations.set(name, vm.generation);
        return;
      }
      await this.#observe(vm, "starting");
    } else if (vm.state === want || (want === "stopped" && vm.state === "failed")) return;
    await this.#observe(vm, want);
  }

  #observe(vm: VmRecord, state: "starting" | "running" | "stopped"): Promise<unknown> {
    if (state === "running") this.#generations.set(vm.name, vm.generation);
    return this.#cluster.report({
      op: "vm.observed",
      name: vm.name,
      node: vm.node!,
      state,
      at: Date.now(),
    }, { readOwnWrite: false });
  }
}

/**
 * A simulated host's fencing device. It runs no QEMU, so there is nothing to kill when
 * its lease runs out: it takes every feed and is always there. The lease itself is
 * renewed with the leader exactly as on a real host (that traffic is what a simulation
 * of many hosts is for); no watchdog process is started.
 */
export class SimulatedFencing {
  feed(_fenceAt: number): Promise<void> {
    return Promise.resolve();
  }
  alive(): boolean {
    return true;
  }
  /** Nothing was fed before this process: no inherited lease. */
  inheritedFenceAt(): number {
    return 0;
  }
  onLost(_listener: () => void): void {}
  close(): void {}
}
