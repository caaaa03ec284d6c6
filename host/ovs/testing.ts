/**
 * Test support for the networking code: a network record with defaults, and
 * one host's whole OVN (central databases and northd, its own OVS, its
 * ovn-controller) in a temporary directory, with a bridge name of its own so
 * tests on one machine do not collide (a netdev bridge is a kernel tap of
 * that name), and a `stop` that leaves no daemon or tap behind.
 *
 * @module
 */
import type { NetworkRecord } from "../../core/fsm/mod.ts";
import { OvsHost } from "./ovs_host.ts";
import { OvnCentral, OvnChassis } from "./ovn.ts";

/** An overlay network on 10.10.0.0/24 with DHCP, changed by `over`. */
export function testNetwork(name: string, over: Partial<NetworkRecord> = {}): NetworkRecord {
  return {
    name,
    type: "overlay",
    subnet: "10.10.0.0/24",
    gateway: "10.10.0.1",
    vlan: null,
    physnet: null,
    dhcp: true,
    dns: [],
    mtu: 1442,
    nat: false,
    reserved: [],
    createdAt: 1,
    by: "t",
    ...over,
  };
}

/** One host's OVN in a temporary directory (not started). */
export interface TestOvn {
  dataDir: string;
  ovs: OvsHost;
  central: OvnCentral;
  chassis: OvnChassis;
  /** Starts everything and waits for ovn-controller's bridge. */
  start(): Promise<void>;
  /** Stops the daemons, deletes the bridge and the directory; `beforeBridge` runs first. */
  stop(beforeBridge?: () => Promise<void>): Promise<void>;
}

export async function testOvn(prefix: string): Promise<TestOvn> {
  const dataDir = await Deno.makeTempDir({ prefix });
  const tag = crypto.randomUUID().slice(0, 6);
  const ovs = new OvsHost(dataDir);
  const central = new OvnCentral(dataDir);
  const chassis = new OvnChassis(ovs, {
    name: `h-${tag}`,
    southbound: central.southbound,
    encapIp: "127.0.0.1",
    bridge: `nvi${tag}`,
  });
  return {
    dataDir,
    ovs,
    central,
    chassis,
    async start() {
      await central.ensureRunning();
      await ovs.ensureRunning();
      await chassis.ensureRunning();
      for (let i = 0; i < 200; i++) {
        if ((await ovs.vsctl(["list-br"])).split("\n").includes(chassis.bridge)) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`ovn-controller made no bridge ${chassis.bridge} in 10 s`);
    },
    async stop(beforeBridge) {
      // ovn-controller first: it would make its bridge again.
      await chassis.stop();
      await beforeBridge?.().catch(() => {});
      await ovs.vsctl(["--if-exists", "del-br", chassis.bridge]).catch(() => {});
      await central.stop();
      await ovs.stop();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    },
  };
}
