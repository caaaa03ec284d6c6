/**
 * A host's own Open vSwitch: an `ovsdb-server` and an `ovs-vswitchd` under
 * `DATA_DIR/ovs` (see {@link DaemonDir}), so a node never needs the system's
 * `/var/run/openvswitch`, and several nodes can share one machine in tests
 * (each in its own network namespace).
 *
 * `datapath: "netdev"` is OVS's userspace datapath, for kernels without the
 * openvswitch module (as on the machines this project is tested on).
 *
 * @module
 */
import { join } from "node:path";
import { log } from "../../core/log/mod.ts";
import { DaemonDir, missingBinaries } from "./daemon_dir.ts";
import { ensureReceiveBufferDefault } from "./socket_buffers.ts";

/** The Debian packages that hold what this module runs. */
export const OVS_PACKAGES = ["openvswitch-switch"];

const SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema";
const BINARIES = ["ovsdb-server", "ovsdb-tool", "ovs-vswitchd", "ovs-vsctl"];

export type OvsDaemon = "ovsdb-server" | "ovs-vswitchd";

/** Why OVS cannot run here (the Debian packages to install), or null. */
export function ovsMissing(): Promise<string | null> {
  return missingBinaries(BINARIES, OVS_PACKAGES, "Open vSwitch");
}

export class OvsHost {
  readonly dir: DaemonDir;

  constructor(dataDir: string, readonly datapath: "netdev" | "system" = "netdev") {
    this.dir = new DaemonDir(join(dataDir, "ovs"));
  }

  /** The database socket `ovs-vsctl` and `ovn-controller` connect to. */
  get dbSocket(): string {
    return this.dir.socket("db");
  }

  pidOf(daemon: OvsDaemon): Promise<number | null> {
    return this.dir.pidOf(daemon);
  }

  /**
   * Makes sure both daemons run: creates the database on first use, starts
   * whichever daemon is not running (again, after a crash), and returns the
   * daemons it had to start.
   */
  async ensureRunning(): Promise<OvsDaemon[]> {
    await this.dir.prepare();
    await this.dir.ensureDatabase(join(this.dir.root, "conf.db"), SCHEMA);
    const started: OvsDaemon[] = [];
    if (
      await this.dir.ensureDaemon("ovsdb-server", "ovsdb-server", [
        join(this.dir.root, "conf.db"),
        `--remote=punix:${this.dbSocket}`,
      ])
    ) {
      await this.vsctl(["--no-wait", "init"]);
      started.push("ovsdb-server");
    }
    // Before the daemon opens its ports' packet sockets, which take the default then.
    if (this.datapath === "netdev") await ensureReceiveBufferDefault();
    if (
      await this.dir.ensureDaemon("ovs-vswitchd", "ovs-vswitchd", [`unix:${this.dbSocket}`])
    ) started.push("ovs-vswitchd");
    if (started.length) log.info("Open vSwitch started", { daemons: started });
    return started;
  }

  /** A bridge of this host's datapath type; kept if it exists. */
  async ensureBridge(name: string): Promise<void> {
    await this.vsctl([
      "--may-exist",
      "add-br",
      name,
      "--",
      "set",
      "bridge",
      name,
      `datapath_type=${this.datapath}`,
    ]);
  }

  /** `ovs-vsctl` against this host's database; its stdout. */
  vsctl(args: string[]): Promise<string> {
    return this.dir.exec("ovs-vsctl", [`--db=unix:${this.dbSocket}`, "--timeout=10", ...args]);
  }

  /** Stops both daemons (tests; a node leaves its guests' network running). */
  async stop(): Promise<void> {
    await this.dir.stopDaemon("ovs-vswitchd");
    await this.dir.stopDaemon("ovsdb-server");
  }
}
