/**
 * OVN central embedded in the cluster: every voter runs the northbound and
 * southbound databases as members of OVSDB's own Raft cluster (clustered
 * mode), plus an `ovn-northd` connected to every member; northd's lock in the
 * southbound database makes one of them active and the others standby.
 *
 * Who creates and who joins: a voter that finds no database file creates the
 * OVSDB cluster when no other voter runs central yet (the bootstrap node),
 * and joins through the others' Raft addresses otherwise. OVSDB's Raft then
 * keeps its own membership; novactl only starts members.
 *
 * Not handled yet: a voter that is demoted or removed does not leave the OVSDB
 * cluster (`cluster/leave`), so its entry stays until it is kicked by hand.
 *
 * @module
 */
import { join } from "node:path";
import { log } from "../../core/log/mod.ts";
import { pathExists } from "../../core/store/mod.ts";
import { DaemonDir } from "./daemon_dir.ts";
import { NB_SCHEMA, type OvnCentralDaemon, SB_SCHEMA } from "./ovn.ts";

/** TCP ports of one member: clients (nb, sb) and OVSDB Raft (nbRaft, sbRaft). */
export interface CentralPorts {
  nb: number;
  sb: number;
  nbRaft: number;
  sbRaft: number;
}

export const DEFAULT_CENTRAL_PORTS: CentralPorts = {
  nb: 6641,
  sb: 6642,
  nbRaft: 6643,
  sbRaft: 6644,
};

/** Where one member of the embedded central answers. */
export interface CentralEndpoint {
  address: string;
  ports: CentralPorts;
}

/** Parses `NB,SB,NBRAFT,SBRAFT` (`--ovn-ports`). */
export function parseCentralPorts(text: string): CentralPorts | null {
  const p = text.split(",").map(Number);
  if (p.length !== 4 || !p.every((n) => Number.isInteger(n) && n > 0 && n < 65536)) return null;
  return { nb: p[0], sb: p[1], nbRaft: p[2], sbRaft: p[3] };
}

/** The client remotes of every member, as OVN tools take them (`tcp:A:6641,tcp:B:6641`). */
export function centralRemotes(endpoints: CentralEndpoint[], db: "nb" | "sb"): string {
  return endpoints.map((e) => `tcp:${e.address}:${e.ports[db]}`).join(",");
}

const DATABASES = [
  { daemon: "ovnnb_db", name: "OVN_Northbound", schema: NB_SCHEMA, client: "nb", raft: "nbRaft" },
  { daemon: "ovnsb_db", name: "OVN_Southbound", schema: SB_SCHEMA, client: "sb", raft: "sbRaft" },
] as const;

export class ClusteredCentral {
  readonly dir: DaemonDir;
  /** The remotes northd was started with; a change restarts it. */
  #northdRemotes = "";

  constructor(dataDir: string, readonly self: CentralEndpoint) {
    this.dir = new DaemonDir(join(dataDir, "ovn"));
  }

  pidOf(daemon: OvnCentralDaemon): Promise<number | null> {
    return this.dir.pidOf(daemon);
  }

  /**
   * Starts whichever member daemon is not running; `peers` are the other
   * voters' members (joined through, and northd's other remotes). Returns
   * the daemons it had to start.
   */
  async ensureRunning(peers: CentralEndpoint[]): Promise<OvnCentralDaemon[]> {
    await this.dir.prepare();
    const started: OvnCentralDaemon[] = [];
    for (const db of DATABASES) {
      const file = join(this.dir.root, `${db.daemon}.db`);
      await this.ensureMemberFile(file, db, peers);
      const running = await this.dir.ensureDaemon(db.daemon, "ovsdb-server", [
        file,
        `--remote=punix:${this.dir.socket(db.daemon)}`,
        `--remote=ptcp:${this.self.ports[db.client]}:${this.self.address}`,
      ]);
      if (running) started.push(db.daemon);
    }
    if (await this.ensureNorthd(peers)) started.push("ovn-northd");
    if (started.length) log.info("OVN central (clustered) started", { daemons: started });
    return started;
  }

  private async ensureMemberFile(
    file: string,
    db: typeof DATABASES[number],
    peers: CentralEndpoint[],
  ): Promise<void> {
    if (await pathExists(file)) return;
    const local = `tcp:${this.self.address}:${this.self.ports[db.raft]}`;
    if (peers.length === 0) {
      await this.dir.exec("ovsdb-tool", ["create-cluster", file, db.schema, local]);
      log.info("OVSDB cluster created", { db: db.name, local });
    } else {
      const remotes = peers.map((p) => `tcp:${p.address}:${p.ports[db.raft]}`);
      await this.dir.exec("ovsdb-tool", ["join-cluster", file, db.name, local, ...remotes]);
      log.info("joining OVSDB cluster", { db: db.name, local, remotes });
    }
  }

  /** northd, connected to every member; restarted when the member list changed. */
  private async ensureNorthd(peers: CentralEndpoint[]): Promise<boolean> {
    const all = [this.self, ...peers];
    const remotes = `${centralRemotes(all, "nb")} ${centralRemotes(all, "sb")}`;
    if (this.#northdRemotes !== remotes && await this.dir.pidOf("ovn-northd")) {
      await this.dir.stopDaemon("ovn-northd");
      await waitGone(() => this.dir.pidOf("ovn-northd"));
    }
    this.#northdRemotes = remotes;
    return await this.dir.ensureDaemon("ovn-northd", "ovn-northd", [
      `--ovnnb-db=${centralRemotes(all, "nb")}`,
      `--ovnsb-db=${centralRemotes(all, "sb")}`,
    ]);
  }

  /** `ovs-appctl cluster/status` of one database (tests and operators). */
  clusterStatus(db: "ovnnb_db" | "ovnsb_db"): Promise<string> {
    const name = db === "ovnnb_db" ? "OVN_Northbound" : "OVN_Southbound";
    return this.dir.exec("ovs-appctl", [
      "-t",
      join(this.dir.run, `${db}.ctl`),
      "cluster/status",
      name,
    ]);
  }

  async stop(): Promise<void> {
    for (const d of ["ovn-northd", "ovnsb_db", "ovnnb_db"]) await this.dir.stopDaemon(d);
  }
}

async function waitGone(pid: () => Promise<number | null>): Promise<void> {
  for (let i = 0; i < 100 && await pid(); i++) await new Promise((r) => setTimeout(r, 20));
}

/**
 * Retires this host's member of the embedded OVN central after a cluster recovery
 * (`cluster recover --force-new-cluster`, `node start --restore`): its OVSDB
 * clusters count the lost voters as members, so they would never regain a quorum.
 * Stops the member's daemons and moves `DATA_DIR/ovn` aside (returned; null when
 * there was none). The node then creates one-member databases at its start, the
 * leader writes the northbound database again from the replicated networks
 * (NorthboundReconciler), and northd and every ovn-controller fill the southbound.
 */
export async function retireCentralMember(dataDir: string, at: number): Promise<string | null> {
  const root = join(dataDir, "ovn");
  if (!(await pathExists(root))) return null;
  const dir = new DaemonDir(root);
  for (const d of ["ovn-northd", "ovnsb_db", "ovnnb_db"] as const) {
    await dir.stopDaemon(d);
    await waitGone(() => dir.pidOf(d));
  }
  const stamp = new Date(at).toISOString().replace(/[-:]/g, "").slice(0, 15).toLowerCase();
  const aside = `${root}.before-recovery-${stamp}`;
  await Deno.rename(root, aside);
  return aside;
}
