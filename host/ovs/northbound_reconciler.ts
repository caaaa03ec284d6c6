/**
 * The leader's northbound pass, run for real: whenever the applied state
 * touches networks or VMs (whose NICs are network ports), and every 30 s to
 * repair drift, the leader makes OVN's northbound database equal what the
 * replicated state says (./northbound.ts). Followers never write it.
 *
 * A change only marks the state dirty; one pass runs at a time, shortly
 * after, and is skipped when the desired rows are those the last successful
 * pass wrote (VM state reports change VMs often, their NICs seldom). Passes
 * and failures are counted in `novactl_network_northbound_passes_total`.
 *
 * @module
 */
import type { NetworkRecord } from "../../core/fsm/mod.ts";
import { log } from "../../core/log/mod.ts";
import { metrics } from "../../core/metrics/mod.ts";
import { runTool } from "./daemon_dir.ts";
import {
  applyNorthbound,
  desiredNorthbound,
  desiredPortGroups,
  type NicPort,
  type SecurityGroupState,
} from "./northbound.ts";

/** What the reconciler reads of the cluster. */
export interface NorthboundSource {
  isLeader(): boolean;
  networks(): NetworkRecord[];
  /** The NICs on `network`. */
  nics(network: string): NicPort[];
  /** Security groups with their rules and member NICs. */
  securityGroups(): SecurityGroupState[];
  /** Calls back after an applied change to `resource` (null: the whole state was replaced). */
  onChange(listener: (resource: string | null) => void): () => void;
  /** The northbound remotes (`tcp:A:6641,...`); "" while none is known. */
  northbound(): string;
}

const DEBOUNCE_MS = 100;
const REPAIR_EVERY_MS = 30_000;

export class NorthboundReconciler {
  #dirty = true;
  #lastWritten = "";
  #running: Promise<void> | null = null;
  #timers: ReturnType<typeof setTimeout>[] = [];
  #unsubscribe: (() => void) | null = null;
  #stopped = false;

  constructor(readonly source: NorthboundSource) {}

  start(): void {
    this.#unsubscribe = this.source.onChange((resource) => {
      if (
        resource === null || resource === "network" || resource === "vm" ||
        resource === "securityGroup"
      ) this.markDirty();
    });
    // The repair pass: forgets what it wrote, so the database is read and compared again.
    this.#timers.push(setInterval(() => {
      this.#lastWritten = "";
      this.markDirty();
    }, REPAIR_EVERY_MS));
    this.markDirty();
  }

  stop(): void {
    this.#stopped = true;
    this.#unsubscribe?.();
    for (const t of this.#timers) clearInterval(t);
  }

  markDirty(): void {
    this.#dirty = true;
    if (this.#stopped) return;
    setTimeout(() => void this.runPass(), DEBOUNCE_MS);
  }

  /** One pass if one is due; resolves when it is done (tests). */
  async runPass(): Promise<void> {
    if (this.#running) return await this.#running;
    this.#running = this.pass().finally(() => this.#running = null);
    await this.#running;
  }

  private async pass(): Promise<void> {
    if (this.#stopped || !this.#dirty || !this.source.isLeader()) return;
    const remotes = this.source.northbound();
    if (!remotes) return;
    this.#dirty = false;
    const networks = this.source.networks();
    const nics = networks.flatMap((n) => this.source.nics(n.name));
    const desired = desiredNorthbound(networks, nics);
    const portGroups = desiredPortGroups(this.source.securityGroups(), nics);
    const key = `${remotes}\n${JSON.stringify(desired)}\n${JSON.stringify(portGroups)}`;
    if (key === this.#lastWritten) return;
    try {
      const t0 = performance.now();
      const changes = await applyNorthbound(
        (args) => runTool("ovn-nbctl", [`--db=${remotes}`, "--timeout=10", ...args]),
        desired,
        portGroups,
      );
      this.#lastWritten = key;
      metrics.northboundPasses.inc({ result: "ok" });
      const changed = changes.created.length + changes.updated.length + changes.deleted.length;
      if (changed) {
        log.info("northbound DB updated", { ...changes, ms: Math.round(performance.now() - t0) });
      }
    } catch (err) {
      metrics.northboundPasses.inc({ result: "error" });
      log.warn("northbound pass failed; will retry", { error: String(err) });
      this.#dirty = true;
      this.#timers.push(setTimeout(() => void this.runPass(), 2_000));
    }
  }
}
