/**
 * OVN, as a node runs it:
 * - {@link OvnCentral}: the northbound and southbound databases and `ovn-northd`,
 *   under `DATA_DIR/ovn` (embedded mode; one copy for now, clustered on the
 *   voters later).
 * - {@link OvnChassis}: a host's `ovn-controller`, which registers the host as a
 *   chassis in the southbound database and programs the host's own OVS.
 *
 * @module
 */
import { join } from "node:path";
import { log } from "../../core/log/mod.ts";
import { DaemonDir, missingBinaries } from "./daemon_dir.ts";
import type { OvsHost } from "./ovs_host.ts";

/** The Debian packages that hold what this module runs. */
export const OVN_PACKAGES = ["ovn-central", "ovn-host"];

/** The OVN database schemas Debian installs (shared with ./ovn_cluster.ts). */
export const NB_SCHEMA = "/usr/share/ovn/ovn-nb.ovsschema";
export const SB_SCHEMA = "/usr/share/ovn/ovn-sb.ovsschema";

/** Why OVN cannot run here (the Debian packages to install), or null. */
export function ovnMissing(): Promise<string | null> {
  return missingBinaries(
    ["ovn-northd", "ovn-controller", "ovn-nbctl", "ovn-sbctl"],
    OVN_PACKAGES,
    "OVN",
  );
}

export type OvnCentralDaemon = "ovnnb_db" | "ovnsb_db" | "ovn-northd";

export class OvnCentral {
  readonly dir: DaemonDir;

  constructor(dataDir: string) {
    this.dir = new DaemonDir(join(dataDir, "ovn"));
  }

  /** Where `ovn-nbctl` (and the leader's reconciler) reach the northbound database. */
  get northbound(): string {
    return `unix:${this.dir.socket("ovnnb_db")}`;
  }

  /** Where `ovn-controller` and `ovn-northd` reach the southbound database. */
  get southbound(): string {
    return `unix:${this.dir.socket("ovnsb_db")}`;
  }

  pidOf(daemon: OvnCentralDaemon): Promise<number | null> {
    return this.dir.pidOf(daemon);
  }

  /** Starts whichever of the two databases and northd is not running; returns those it started. */
  async ensureRunning(): Promise<OvnCentralDaemon[]> {
    await this.dir.prepare();
    const started: OvnCentralDaemon[] = [];
    for (const [name, schema] of [["ovnnb_db", NB_SCHEMA], ["ovnsb_db", SB_SCHEMA]] as const) {
      const file = join(this.dir.root, `${name}.db`);
      await this.dir.ensureDatabase(file, schema);
      if (
        await this.dir.ensureDaemon(name, "ovsdb-server", [
          file,
          `--remote=punix:${this.dir.socket(name)}`,
          // northd and the controllers write through the Connection-less default remote.
        ])
      ) started.push(name);
    }
    if (
      await this.dir.ensureDaemon("ovn-northd", "ovn-northd", [
        `--ovnnb-db=${this.northbound}`,
        `--ovnsb-db=${this.southbound}`,
      ])
    ) started.push("ovn-northd");
    if (started.length) log.info("OVN central started", { daemons: started });
    return started;
  }

  /** `ovn-nbctl` against the northbound database; its stdout. */
  nbctl(args: string[]): Promise<string> {
    return this.dir.exec("ovn-nbctl", [`--db=${this.northbound}`, "--timeout=10", ...args]);
  }

  /** `ovn-sbctl` against the southbound database; its stdout. */
  sbctl(args: string[]): Promise<string> {
    return this.dir.exec("ovn-sbctl", [`--db=${this.southbound}`, "--timeout=10", ...args]);
  }

  async stop(): Promise<void> {
    for (const d of ["ovn-northd", "ovnsb_db", "ovnnb_db"]) await this.dir.stopDaemon(d);
  }
}

/** How a host joins OVN as a chassis. */
export interface ChassisOptions {
  /** The chassis name in the southbound database: the node's name. */
  name: string;
  /** The southbound database, as OVN writes remotes (`unix:...`, `ssl:IP:6642`). */
  southbound: string;
  /** The tunnel endpoint: the address of the host's tunnel interface. */
  encapIp: string;
  encapType?: "geneve" | "vxlan";
  /** The integration bridge ovn-controller creates and programs (`br-int`). */
  bridge?: string;
}

/** A host's `ovn-controller`, programming the host's own OVS. */
export class OvnChassis {
  readonly dir: DaemonDir;
  #configured = "";

  constructor(readonly ovs: OvsHost, readonly options: ChassisOptions) {
    // ovn-controller reaches each bridge's OpenFlow socket in its run directory: it must be
    // the run directory of the OVS it programs.
    this.dir = ovs.dir;
  }

  pidOf(): Promise<number | null> {
    return this.dir.pidOf("ovn-controller");
  }

  get bridge(): string {
    return this.options.bridge ?? "br-int";
  }

  /**
   * Points the host's OVS at OVN (the external_ids ovn-controller reads) and
   * starts ovn-controller unless it runs; true when it had to start it. Its
   * integration bridge `br-int` gets the host's datapath type. `southbound`
   * replaces the options' remotes (the voters running central change).
   */
  async ensureRunning(southbound = this.options.southbound): Promise<boolean> {
    await this.dir.prepare();
    const o = { ...this.options, southbound };
    // Written when it changes (or once per process: the database may have been recreated).
    const key = JSON.stringify(o);
    if (key !== this.#configured) await this.configure(o);
    this.#configured = key;
    const started = await this.dir.ensureDaemon(
      "ovn-controller",
      "ovn-controller",
      [`unix:${this.ovs.dbSocket}`],
      { unixctl: false },
    );
    if (started) log.info("ovn-controller started", { chassis: o.name });
    return started;
  }

  /** Forgets what was written, so the next ensureRunning writes it again (its OVS restarted). */
  reconfigure(): void {
    this.#configured = "";
  }

  private async configure(o: ChassisOptions): Promise<void> {
    await this.ovs.vsctl([
      "set",
      "open_vswitch",
      ".",
      `external_ids:system-id=${o.name}`,
      `external_ids:ovn-remote=${o.southbound}`,
      `external_ids:ovn-encap-type=${o.encapType ?? "geneve"}`,
      `external_ids:ovn-encap-ip=${o.encapIp}`,
      `external_ids:ovn-bridge=${this.bridge}`,
      `external_ids:ovn-bridge-datapath-type=${this.ovs.datapath}`,
    ]);
  }

  async stop(): Promise<void> {
    await this.dir.stopDaemon("ovn-controller");
  }
}
