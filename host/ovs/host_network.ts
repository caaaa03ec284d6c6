/**
 * A node's networking, brought up by `node start` and kept up by a supervisor:
 * - the host's own Open vSwitch (ovsdb-server, ovs-vswitchd) and ovn-controller;
 * - the tunnel address moved onto the underlay bridge (./underlay.ts);
 * - on a voter, unless the cluster names an external OVN, a member of the
 *   embedded clustered OVN central (./ovn_cluster.ts).
 *
 * The supervisor runs {@link HostNetwork.superviseOnce} every 2 s: each
 * daemon found dead is started again (logged and counted in
 * `novactl_network_daemon_restarts_total{daemon}`), and the chassis follows
 * the southbound remotes as voters change. The daemons are not stopped with
 * the node: guests keep their network while a node restarts.
 *
 * VMs reach it through the narrow {@link HostNics}: plug a tap per NIC before
 * QEMU starts (also before an incoming migration), unplug when the VM leaves.
 *
 * @module
 */
import { NovaError } from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";
import { metrics } from "../../core/metrics/mod.ts";
import { nicIndex, type VmNic } from "../../core/fsm/mod.ts";
import type { NicSpec } from "../kvm/mod.ts";
import { missingBinaries } from "./daemon_dir.ts";
import { plugTap, tapName, tapPrefix, unplugTap } from "./nic.ts";
import { portName } from "./northbound.ts";
import { OvnChassis, ovnMissing } from "./ovn.ts";
import { type CentralEndpoint, ClusteredCentral } from "./ovn_cluster.ts";
import { removeForeignTaps } from "./stale_taps.ts";
import { OvsHost, ovsMissing } from "./ovs_host.ts";
import { ensureUnderlay, tunnelAddress } from "./underlay.ts";
import { ProviderBridges } from "./bridge_mappings.ts";

/** What the VM host needs of the network: taps for a VM's NICs, and their removal. */
export interface HostNics {
  /** Plugs a tap per NIC into the NIC's logical port; QEMU's NIC specs for them, in order. */
  plug(vm: NicOwner): Promise<NicSpec[]>;
  /** Removes the VM's taps (gone, stopped, or moved away); absent taps are fine. */
  unplug(vm: NicOwner): Promise<void>;
  /** Plugs the tap of the VM's NIC number `index` (hot-plug); QEMU's NIC spec for it. */
  plugNic(vm: NicOwner, index: number): Promise<NicSpec>;
  /** Removes the tap of the VM's NIC number `index` (hot-unplugged); an absent tap is fine. */
  unplugNic(vm: NicOwner, index: number): Promise<void>;
  /**
   * Waits until ovn-controller bound every NIC's port here and installed its flows (it marks
   * the tap `ovn-installed`), at most `timeoutMs`; whether it did.
   */
  waitInstalled(vm: NicOwner, timeoutMs: number): Promise<boolean>;
  /**
   * Removes every NIC tap whose VM this host no longer keeps (a host back from the dead still
   * has the taps of VMs restarted elsewhere meanwhile; see ./stale_taps.ts); `keptUuid(vm)` is
   * the uuid of VM `vm` when this host keeps it, else null. The taps removed.
   */
  removeForeignTaps(keptUuid: (vm: string) => string | null): Promise<string[]>;
}

/** A VM as far as its NICs go. */
export interface NicOwner {
  name: string;
  uuid: string;
  nics?: { network: string; mac?: string | null; index?: number }[];
}

/** Where OVN central is, as the cluster decides it now (voters and configuration change). */
export interface CentralPlan {
  /** The southbound remotes for this host's ovn-controller; "" while none is known yet. */
  southbound: string;
  /** Run a member of the embedded central here (this host is a voter, no external OVN). */
  runCentral: boolean;
  /** The other voters' members (to join through, and for northd). */
  peers: CentralEndpoint[];
}

/** What a host tells the cluster about its networking (in its inventory). */
export interface NetworkInventory {
  datapath: "netdev" | "system";
  tunnelIp: string;
  /** The provider bridge mappings in effect in this host's OVS (physnet → bridge). */
  bridgeMappings: Record<string, string>;
  /** Where this host's member of the embedded central answers, when it runs one. */
  central: CentralEndpoint;
}

export interface HostNetworkOptions {
  dataDir: string;
  /** The chassis name: the node's name. */
  name: string;
  /** The host part of the node's advertised URL: the tunnel address by default. */
  advertised: string;
  /** `--tunnel-interface`: its IPv4 address is the tunnel address instead. */
  tunnelInterface?: string;
  /** This host's member of the embedded central (address and ports). */
  central: CentralEndpoint;
  /** The current plan (read on every supervision pass). */
  plan: () => CentralPlan;
  /** The uid taps are made for (QEMU's user); null: the node's own. */
  tapOwner: () => Promise<number | null>;
  /** This host's provider bridge mappings, physnet → bridge (read on every pass). */
  bridgeMappings?: () => Record<string, string>;
}

const SUPERVISE_EVERY_MS = 2_000;

/** Why networking cannot run on this host, naming the packages and the way out; else null. */
export async function networkingMissing(): Promise<string | null> {
  const why = [
    await ovsMissing(),
    await ovnMissing(),
    await missingBinaries(["ip", "nft"], ["iproute2", "nftables"], "iproute2/nftables"),
  ].filter(Boolean);
  if (!why.length) return null;
  return `${why.join("; ")}; or start the node with --networking off`;
}

export class HostNetwork implements HostNics {
  readonly ovs: OvsHost;
  readonly chassis: OvnChassis;
  readonly central: ClusteredCentral;
  readonly providerBridges: ProviderBridges;
  #tunnelIp = "";
  #timer: ReturnType<typeof setInterval> | null = null;
  #pass: Promise<void> | null = null;
  #started = false;
  /** Called when what {@link inventory} reports changed (the bridge mappings were applied). */
  onInventoryChange: (() => void) | null = null;

  constructor(readonly opts: HostNetworkOptions) {
    this.ovs = new OvsHost(opts.dataDir);
    this.chassis = new OvnChassis(this.ovs, {
      name: opts.name,
      southbound: "",
      encapIp: "", // set in start(), once the tunnel address is known
    });
    this.central = new ClusteredCentral(opts.dataDir, opts.central);
    this.providerBridges = new ProviderBridges(this.ovs);
  }

  /** Fails with the packages to install (and `--networking off`) when the binaries are missing. */
  static async preflight(): Promise<void> {
    const why = await networkingMissing();
    if (why) throw new NovaError("precondition_failed", `networking: ${why}`);
  }

  get tunnelIp(): string {
    return this.#tunnelIp;
  }

  get bridge(): string {
    return this.chassis.bridge;
  }

  inventory(): NetworkInventory {
    return {
      datapath: this.ovs.datapath,
      tunnelIp: this.#tunnelIp,
      bridgeMappings: this.providerBridges.applied(),
      central: this.opts.central,
    };
  }

  /** Brings everything up once (errors out if it cannot), then supervises it. */
  async start(): Promise<void> {
    const t0 = performance.now();
    this.#tunnelIp = await tunnelAddress(
      this.ovs.dir.root,
      this.opts.tunnelInterface,
      this.opts.advertised,
    );
    Object.assign(this.chassis.options, { encapIp: this.#tunnelIp });
    await this.superviseOnce();
    this.#started = true;
    log.info("networking up", {
      tunnelIp: this.#tunnelIp,
      ms: Math.round(performance.now() - t0),
    });
    this.#timer = setInterval(() => void this.tick(), SUPERVISE_EVERY_MS);
    await this.warnIfHotPlugCannotOpenTun();
  }

  /** A QEMU running as its own user opens /dev/net/tun itself to hot-plug a NIC. */
  private async warnIfHotPlugCannotOpenTun(): Promise<void> {
    if ((await this.opts.tapOwner()) === null) return;
    const mode = (await Deno.stat("/dev/net/tun").catch(() => null))?.mode ?? 0;
    if ((mode & 0o006) !== 0o006) {
      log.warn(
        "NIC hot-plug will fail: /dev/net/tun is not mode 0666 (Debian's udev default; " +
          "scripts/setup.sh sets it), and QEMU runs as its own user",
        { mode: (mode & 0o777).toString(8) },
      );
    }
  }

  /** Stops supervising; the daemons keep running (guests keep their network). */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /**
   * The node was removed from the cluster for good: stops supervising and stops
   * ovn-controller, which would otherwise register this host's chassis again
   * after the leader cleaned it out of the southbound DB
   * (./southbound_chassis.ts). OVS keeps running with the flows it has.
   */
  async retire(): Promise<void> {
    this.stop();
    await this.#pass;
    await this.chassis.stop();
  }

  private async tick(): Promise<void> {
    if (this.#pass) return; // a slow pass is still going
    this.#pass = this.superviseOnce().catch((err) =>
      log.warn("network supervision failed; will retry", { error: String(err) })
    );
    await this.#pass;
    this.#pass = null;
  }

  /** Starts whatever is not running; a daemon started after the first pass is a restart. */
  async superviseOnce(): Promise<void> {
    const plan = this.opts.plan();
    const ovsStarted = await this.ovs.ensureRunning();
    if (ovsStarted.length) {
      // A new ovsdb-server or vswitchd: the bridges and the chassis settings are written again.
      this.chassis.reconfigure();
      this.providerBridges.reset();
      await ensureUnderlay(this.ovs, this.#tunnelIp);
    } else if (!this.#started) {
      await ensureUnderlay(this.ovs, this.#tunnelIp);
    }
    this.countRestarts(ovsStarted);
    if (await this.providerBridges.ensure(this.opts.bridgeMappings?.() ?? {})) {
      this.onInventoryChange?.();
    }
    if (plan.runCentral) this.countRestarts(await this.central.ensureRunning(plan.peers));
    // No southbound known yet (a joining host before the voters' inventory arrives): wait.
    if (plan.southbound && await this.chassis.ensureRunning(plan.southbound)) {
      this.countRestarts(["ovn-controller"]);
    }
  }

  private countRestarts(daemons: string[]): void {
    if (!this.#started) return;
    for (const daemon of daemons) {
      metrics.networkDaemonRestarts.inc({ daemon });
      log.warn("network daemon was not running: started again", { daemon });
    }
  }

  async plug(vm: NicOwner): Promise<NicSpec[]> {
    const specs: NicSpec[] = [];
    for (const [i, nic] of (vm.nics ?? []).entries()) {
      specs.push(await this.plugNic(vm, nicIndex(nic, i)));
    }
    return specs;
  }

  async plugNic(vm: NicOwner, index: number): Promise<NicSpec> {
    const position = (vm.nics ?? []).findIndex((n, i) => nicIndex(n, i) === index);
    if (position < 0) throw new NovaError("not_found", `${vm.name} has no NIC ${index}`);
    const uid = await this.opts.tapOwner();
    await this.waitForBridge();
    const tap = tapName(vm.uuid, index);
    await plugTap(this.ovs, this.bridge, tap, portName(vm.name, index), uid);
    // Device ids and the PCIe port follow the NIC's number, not its place in the list: a
    // hot-plugged NIC has them on a migration's destination too.
    return { id: `net${index}`, mac: (vm.nics![position] as VmNic).mac, tap, port: index };
  }

  /** ovn-controller makes the integration bridge soon after it starts; taps go on it. */
  private async waitForBridge(): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if ((await this.ovs.vsctl(["list-br"])).split("\n").includes(this.bridge)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new NovaError(
      "unavailable",
      `the integration bridge ${this.bridge} does not exist: is ovn-controller connected?`,
    );
  }

  async unplug(vm: NicOwner): Promise<void> {
    // Every tap of the VM, also one of a NIC removed while this host could not unplug it.
    const prefix = tapPrefix(vm.uuid);
    const ports = await this.ovs.vsctl(["list-ports", this.bridge]).catch(() => "");
    const taps = new Set(ports.split("\n").filter((p) => p.startsWith(prefix)));
    for (const [i, nic] of (vm.nics ?? []).entries()) taps.add(tapName(vm.uuid, nicIndex(nic, i)));
    for (const tap of taps) await unplugTap(this.ovs, this.bridge, tap);
  }

  async waitInstalled(vm: NicOwner, timeoutMs: number): Promise<boolean> {
    const taps = (vm.nics ?? []).map((n, i) => tapName(vm.uuid, nicIndex(n, i)));
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      // One ovs-vsctl run for all taps; a tap not (yet) marked has no such key.
      const out = await this.ovs.vsctl(
        taps.flatMap((
          t,
        ) => ["--", "--if-exists", "get", "Interface", t, "external_ids:ovn-installed"]),
      ).catch(() => "");
      const marked = out.split("\n").filter((l) => l.trim() === '"true"').length;
      if (marked === taps.length) return true;
      if (performance.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async removeForeignTaps(keptUuid: (vm: string) => string | null): Promise<string[]> {
    // No integration bridge yet (a new host): no taps either. A host that had one keeps it in
    // its OVS database, with the ports, across restarts.
    let bridges: string[] | null = null;
    for (let i = 0; !bridges; i++) {
      // Until this host's ovsdb-server answers (the node brings it up as it starts).
      bridges = await this.ovs.vsctl(["list-br"]).then((out) => out.split("\n"), (err) => {
        if (i >= 100) throw err;
        return null;
      });
      if (!bridges) await new Promise((r) => setTimeout(r, 100));
    }
    if (!bridges.includes(this.bridge)) return [];
    return await removeForeignTaps(this.ovs, this.bridge, keptUuid);
  }

  async unplugNic(vm: NicOwner, index: number): Promise<void> {
    await unplugTap(this.ovs, this.bridge, tapName(vm.uuid, index));
  }
}
