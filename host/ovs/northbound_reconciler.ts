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
 * Latency matters here: a security-group rule is enforced only once a pass
 * wrote it (bench:net measures rule → flows on every host). So the debounce is
 * short, and a pass diffs against the database as read right after the
 * previous write (one `ovn-nbctl` run instead of two on the way); the repair
 * pass and any failure read afresh.
 *
 * @module
 */
import type { NetworkRecord } from "../../core/fsm/mod.ts";
import { log } from "../../core/log/mod.ts";
import { metrics } from "../../core/metrics/mod.ts";
import { runTool } from "./daemon_dir.ts";
import {
  type ActualNorthbound,
  applyNorthbound,
  desiredNorthbound,
  desiredPortGroups,
  type NicPort,
  type NorthboundChanges,
  type PortGroupRow,
  readNorthbound,
  type SecurityGroupState,
  type SwitchRows,
} from "./northbound.ts";
import {
  applyRouters,
  desiredRouters,
  type RouterInput,
  type RouterRows,
} from "./northbound_routers.ts";

/** What the reconciler reads of the cluster. */
export interface NorthboundSource {
  isLeader(): boolean;
  networks(): NetworkRecord[];
  /** The NICs on `network`. */
  nics(network: string): NicPort[];
  /** Security groups with their rules and member NICs. */
  securityGroups(): SecurityGroupState[];
  /** Routers with their networks, uplink, gateway hosts and floating IPs (none when absent). */
  routers?(): RouterInput[];
  /** Calls back after an applied change to `resource` (null: the whole state was replaced). */
  onChange(listener: (resource: string | null) => void): () => void;
  /** The northbound remotes (`tcp:A:6641,...`); "" while none is known. */
  northbound(): string;
}

/** The northbound database at `remotes`, as the pass writes and reads it (ovn-nbctl by default). */
export interface NorthboundDb {
  apply(
    remotes: string,
    desired: SwitchRows[],
    portGroups: PortGroupRow[],
    actual?: ActualNorthbound,
  ): Promise<NorthboundChanges>;
  read(remotes: string): Promise<ActualNorthbound>;
  /** Makes novactl's routers equal `desired` (./northbound_routers.ts); absent: none written. */
  applyRouters?(remotes: string, desired: RouterRows[]): Promise<NorthboundChanges>;
}

const nbctlAt = (remotes: string) => (args: string[]) =>
  runTool("ovn-nbctl", [`--db=${remotes}`, "--timeout=10", ...args]);

const OVN_NBCTL: NorthboundDb = {
  apply: (remotes, desired, portGroups, actual) =>
    applyNorthbound(nbctlAt(remotes), desired, portGroups, actual),
  read: (remotes) => readNorthbound(nbctlAt(remotes)),
  applyRouters: (remotes, desired) => applyRouters(nbctlAt(remotes), desired),
};

const DEBOUNCE_MS = 20;
const RETRY_MS = 2_000;
const REPAIR_EVERY_MS = 30_000;

export class NorthboundReconciler {
  #dirty = true;
  #lastWritten = "";
  /**
   * The routers' rows the last pass wrote: kept apart, so a security-group rule change
   * (the latency bench:net measures) does not read and compare the routers too.
   */
  #routersWritten = "";
  /** The database as read after the last write (null: read it afresh), and that read. */
  #actual: ActualNorthbound | null = null;
  #reading: Promise<void> | null = null;
  /** The remotes #actual was read from. */
  #actualFrom = "";
  #running: Promise<void> | null = null;
  /** The one pass timer pending, if any: a burst of changes (creates at 1,000/s) is one pass. */
  #scheduled: ReturnType<typeof setTimeout> | null = null;
  #repair: ReturnType<typeof setInterval> | null = null;
  #unsubscribe: (() => void) | null = null;
  #stopped = false;

  constructor(
    readonly source: NorthboundSource,
    private readonly db: NorthboundDb = OVN_NBCTL,
    private readonly debounceMs = DEBOUNCE_MS,
  ) {}

  start(): void {
    this.#unsubscribe = this.source.onChange((resource) => {
      if (
        resource === null || resource === "network" || resource === "vm" ||
        resource === "securityGroup" || resource === "router" || resource === "floatingIp" ||
        resource === "bridgeMapping"
      ) this.markDirty();
    });
    // The repair pass: forgets what it wrote, so the database is read and compared again.
    this.#repair = setInterval(() => {
      this.#lastWritten = "";
      this.#routersWritten = "";
      this.#actual = null;
      this.markDirty();
    }, REPAIR_EVERY_MS);
    this.markDirty();
  }

  stop(): void {
    this.#stopped = true;
    this.#unsubscribe?.();
    if (this.#repair) clearInterval(this.#repair);
    if (this.#scheduled) clearTimeout(this.#scheduled);
    this.#scheduled = null;
  }

  /** Something changed: one pass soon, however many changes arrive meanwhile. */
  markDirty(delayMs = this.debounceMs): void {
    this.#dirty = true;
    if (this.#stopped || this.#scheduled) return;
    this.#scheduled = setTimeout(() => {
      this.#scheduled = null;
      void this.runPass();
    }, delayMs);
  }

  /**
   * Runs passes until nothing is dirty; resolves when done (tests). A change that
   * arrives during a pass gets a pass of its own after it, not just the one running.
   */
  async runPass(): Promise<void> {
    while (this.#running) await this.#running;
    if (!this.#dirty || this.#stopped) return;
    let ran = false;
    this.#running = this.pass().then((r) => void (ran = r)).finally(() => this.#running = null);
    await this.#running;
    if (!this.#dirty || this.#scheduled || this.#stopped) return;
    // Changed during the pass: again now. Not the leader, or no NB known yet: look again soon
    // (a node that becomes leader writes within RETRY_MS, not at the next repair).
    if (ran) await this.runPass();
    else this.markDirty(RETRY_MS);
  }

  /** One pass; false when it could not run (not the leader, no northbound known). */
  private async pass(): Promise<boolean> {
    if (!this.source.isLeader()) {
      // Another leader writes meanwhile: what this one read is stale by the time it leads again.
      this.#actual = null;
      return false;
    }
    if (this.#stopped || !this.#dirty) return false;
    const remotes = this.source.northbound();
    if (!remotes) return false;
    if (remotes !== this.#actualFrom) this.#actual = null;
    this.#dirty = false;
    const networks = this.source.networks();
    const nics = networks.flatMap((n) => this.source.nics(n.name));
    const desired = desiredNorthbound(networks, nics);
    const portGroups = desiredPortGroups(this.source.securityGroups(), nics);
    const key = `${remotes}\n${JSON.stringify(desired)}\n${JSON.stringify(portGroups)}`;
    const routers = desiredRouters(this.source.routers?.() ?? []);
    const routersKey = `${remotes}\n${JSON.stringify(routers)}`;
    if (key === this.#lastWritten && routersKey === this.#routersWritten) return true;
    try {
      const t0 = performance.now();
      await this.#reading;
      const changes = key === this.#lastWritten
        ? { created: [], updated: [], deleted: [] }
        : await this.db.apply(remotes, desired, portGroups, this.#actual ?? undefined);
      this.#lastWritten = key;
      // After the switches: a router's ports go on switches that pass made.
      if (routersKey !== this.#routersWritten && this.db.applyRouters) {
        const r = await this.db.applyRouters(remotes, routers);
        changes.created.push(...r.created);
        changes.updated.push(...r.updated);
        changes.deleted.push(...r.deleted);
      }
      this.#routersWritten = routersKey;
      metrics.northboundPasses.inc({ result: "ok" });
      const changed = changes.created.length + changes.updated.length + changes.deleted.length;
      if (changed) {
        // A thousand rules are a thousand ACLs: log counts and the first few names.
        const some = (list: string[]) => list.length > 10 ? [...list.slice(0, 10), "..."] : list;
        log.info("northbound DB updated", {
          created: some(changes.created),
          updated: some(changes.updated),
          deleted: some(changes.deleted),
          counts: [changes.created.length, changes.updated.length, changes.deleted.length],
          ms: Math.round(performance.now() - t0),
        });
        // New rows' uuids are only known by reading: done now, off the next change's path.
        this.#actual = null;
        this.#reading = this.db.read(remotes).then(
          (a) => {
            this.#actual = a;
            this.#actualFrom = remotes;
          },
          () => {},
        ).finally(() => this.#reading = null);
      }
    } catch (err) {
      metrics.northboundPasses.inc({ result: "error" });
      log.warn("northbound pass failed; will retry", { error: String(err) });
      this.#actual = null;
      this.markDirty(RETRY_MS);
    }
    return true;
  }
}
