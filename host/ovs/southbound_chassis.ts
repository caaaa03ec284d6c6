/**
 * Chassis of removed nodes, cleaned out of OVN's southbound database by the
 * leader, as derived state: a host's `ovn-controller` registers a Chassis (and
 * a Chassis_Private) named after its node (./ovn.ts sets `system-id`), and
 * nothing else deletes it when `cluster remove` takes the node away for good.
 * A stale chassis keeps its tunnel in every other host's OVS and can hold on
 * to port bindings.
 *
 * Which chassis go ({@link staleChassis}): those named after a member that was
 * removed from the cluster (core/fsm/members.ts keeps those names) and is not
 * a member again. So:
 * - a member that is merely down or offline keeps its chassis (HA restarts
 *   elsewhere move its ports through `requested-chassis`, not by deleting it);
 * - a chassis this cluster never had as a member is left alone, which is what
 *   an external OVN (`network.ovn.southbound`) shared with other systems needs;
 * - a removed node whose ovn-controller still runs registers its chassis
 *   again; the next pass deletes it again (every 30 s, and on every
 *   membership change).
 *
 * With an external OVN that names only its northbound database, the
 * southbound is unknown here and nothing is cleaned (logged once).
 *
 * Deletions are logged and counted in `novactl_network_chassis_deleted_total`.
 *
 * @module
 */
import { log } from "../../core/log/mod.ts";
import { metrics } from "../../core/metrics/mod.ts";
import { runTool } from "./daemon_dir.ts";

/** What the cleaner reads of the cluster. */
export interface ChassisSource {
  isLeader(): boolean;
  /** Current members' names (voters and learners, up or down). */
  members(): string[];
  /** Names of members removed from the cluster (and not members again). */
  removedMembers(): string[];
  /** The southbound remotes (`tcp:A:6642,...`); "" while none is known. */
  southbound(): string;
  /** Calls back after an applied change to `resource` (null: the whole state was replaced). */
  onChange(listener: (resource: string | null) => void): () => void;
}

/** The southbound database as the cleaner reads and writes it (ovn-sbctl by default). */
export interface SouthboundChassisDb {
  /** Names in the Chassis and Chassis_Private tables. */
  list(remotes: string): Promise<string[]>;
  /** Deletes the chassis `name` (its Encaps too) and its Chassis_Private; absent rows are fine. */
  remove(remotes: string, name: string): Promise<void>;
}

/** Runs `ovn-sbctl` against `remotes`; its stdout. */
export type Sbctl = (args: string[]) => Promise<string>;

const sbctlAt = (remotes: string): Sbctl => (args) =>
  runTool("ovn-sbctl", [`--db=${remotes}`, "--timeout=10", ...args]);

/** Chassis and Chassis_Private names in the southbound database behind `sbctl`. */
export async function listChassis(sbctl: Sbctl): Promise<string[]> {
  const out = await sbctl([
    "--bare",
    "--columns=name",
    "list",
    "Chassis",
    "--",
    "--columns=name",
    "list",
    "Chassis_Private",
  ]);
  return [...new Set(out.split("\n").map((l) => l.trim()).filter(Boolean))];
}

/** Deletes chassis `name` with its encaps, and its Chassis_Private; absent rows are fine. */
export async function removeChassis(sbctl: Sbctl, name: string): Promise<void> {
  await sbctl([
    "--if-exists",
    "chassis-del",
    name,
    "--",
    "--if-exists",
    "destroy",
    "Chassis_Private",
    name,
  ]);
}

const OVN_SBCTL: SouthboundChassisDb = {
  list: (remotes) => listChassis(sbctlAt(remotes)),
  remove: (remotes, name) => removeChassis(sbctlAt(remotes), name),
};

/**
 * The chassis names in `present` to delete: those of removed members that
 * are not members (again). Down members and chassis the cluster never had are
 * kept.
 */
export function staleChassis(present: string[], members: string[], removed: string[]): string[] {
  const current = new Set(members);
  const gone = new Set(removed);
  return present.filter((name) => gone.has(name) && !current.has(name));
}

const REPAIR_EVERY_MS = 30_000;
const RETRY_MS = 2_000;

/** The leader's cleaner of removed nodes' chassis; followers never write. */
export class ChassisCleaner {
  #timer: ReturnType<typeof setInterval> | null = null;
  #scheduled: ReturnType<typeof setTimeout> | null = null;
  #unsubscribe: (() => void) | null = null;
  #running: Promise<string[]> | null = null;
  #warnedNoSouthbound = false;

  constructor(
    readonly source: ChassisSource,
    private readonly db: SouthboundChassisDb = OVN_SBCTL,
  ) {}

  start(): void {
    this.#unsubscribe = this.source.onChange((resource) => {
      if (resource === null || resource === "member") this.#soon(0);
    });
    this.#timer = setInterval(() => this.#soon(0), REPAIR_EVERY_MS);
    this.#soon(0);
  }

  stop(): void {
    this.#unsubscribe?.();
    if (this.#timer) clearInterval(this.#timer);
    if (this.#scheduled) clearTimeout(this.#scheduled);
    this.#timer = this.#scheduled = null;
  }

  #soon(delayMs: number): void {
    if (this.#scheduled) return;
    this.#scheduled = setTimeout(() => {
      this.#scheduled = null;
      this.pass().catch((err) => {
        log.warn("southbound chassis cleanup failed; will retry", { error: String(err) });
        this.#soon(RETRY_MS);
      });
    }, delayMs);
  }

  /**
   * One pass (one at a time): deletes the stale chassis when this node leads;
   * the names it deleted. Throws when the southbound database cannot be reached.
   */
  async pass(): Promise<string[]> {
    while (this.#running) await this.#running.catch(() => {});
    this.#running = this.#pass();
    try {
      return await this.#running;
    } finally {
      this.#running = null;
    }
  }

  async #pass(): Promise<string[]> {
    if (!this.source.isLeader()) return [];
    const removed = this.source.removedMembers();
    if (!removed.length) return [];
    const remotes = this.source.southbound();
    if (!remotes) {
      if (!this.#warnedNoSouthbound) {
        log.warn("removed nodes' OVN chassis are not cleaned: no southbound database known", {
          removed,
          hint: "set network.ovn.southbound beside network.ovn.northbound",
        });
      }
      this.#warnedNoSouthbound = true;
      return [];
    }
    const stale = staleChassis(await this.db.list(remotes), this.source.members(), removed);
    const deleted: string[] = [];
    for (const name of stale) {
      // Checked again right before each delete: a name may have joined again meanwhile.
      if (!this.source.isLeader() || this.source.members().includes(name)) continue;
      await this.db.remove(remotes, name);
      deleted.push(name);
      metrics.chassisDeleted.inc();
      log.info("deleted a removed node's OVN chassis", { chassis: name });
    }
    return deleted;
  }
}
