/**
 * Anchors for network benchmarks: OVN wired by hand on a {@link NetCluster}'s
 * own OVN and Open vSwitch, with no novactl in between. A logical switch with
 * native DHCP options, and logical ports each bound to a tap made by hand on
 * a host's `br-int` (`external_ids:iface-id`), for a guest that QEMU started
 * by hand opens (./bare_qemu.ts, `netns`).
 *
 * novactl's northbound reconciler leaves these rows alone: they carry none of
 * its owner keys. No ACLs or port groups apply to them.
 *
 * @module
 */
import type { NetCluster } from "./net_cluster.ts";

/** A logical switch made by hand, with its DHCP options' row. */
export interface BareSwitch {
  name: string;
  /** The `DHCP_Options` row's uuid. */
  dhcp: string;
}

/**
 * Creates the logical switch `name` for `cidr` (a /24) with DHCP options copied from the
 * novactl network whose subnet is `like` (lease time, MTU, server MAC), the server and
 * router moved to `cidr`'s first address.
 */
export async function createBareSwitch(
  net: NetCluster,
  name: string,
  cidr: string,
  like: string,
): Promise<BareSwitch> {
  const found =
    (await net.nbctl("--bare", "--columns=options", "find", "DHCP_Options", `cidr=${like}`))
      .trim();
  if (!found) throw new Error(`no DHCP options for ${like} in the northbound database`);
  const gateway = cidr.replace(/\.0\/\d+$/, ".1");
  const options = found.split(/\s+/).map((kv) => {
    const [k] = kv.split("=");
    return k === "server_id" || k === "router" ? `${k}=${gateway}` : kv;
  });
  await net.nbctl("ls-add", name);
  const dhcp = (await net.nbctl("create", "DHCP_Options", `cidr=${cidr}`)).trim();
  await net.nbctl("dhcp-options-set-options", dhcp, ...options);
  return { name, dhcp };
}

/** Deletes the switch (and its ports) and its DHCP options. */
export async function deleteBareSwitch(net: NetCluster, sw: BareSwitch): Promise<void> {
  await net.nbctl("--if-exists", "ls-del", sw.name);
  await net.nbctl("dhcp-options-del", sw.dhcp).catch(() => {});
}

/** A logical port on a bare switch, bound to a tap on one host. */
export interface BarePort {
  node: string;
  port: string;
  tap: string;
  mac: string;
  ip: string;
}

/**
 * Adds logical port `port` (`mac ip`, port security as novactl sets it, DHCP) in one
 * northbound transaction, then makes tap `tap` on `node` and plugs it into `br-int` as that
 * port, as novactl's host does for a NIC (host/ovs/nic.ts).
 */
export async function addBarePort(
  net: NetCluster,
  sw: BareSwitch,
  p: BarePort,
): Promise<void> {
  const addr = `${p.mac} ${p.ip}`;
  await net.nbctl(
    ...["lsp-add", sw.name, p.port, "--", "lsp-set-addresses", p.port, addr],
    ...["--", "lsp-set-port-security", p.port, addr],
    ...["--", "lsp-set-dhcpv4-options", p.port, sw.dhcp],
  );
  await net.sh(p.node, ["ip", "tuntap", "add", "dev", p.tap, "mode", "tap"]);
  await net.sh(p.node, ["ip", "link", "set", p.tap, "up"]);
  await net.sh(p.node, [
    ...["ovs-vsctl", "--may-exist", "add-port", "br-int", p.tap],
    ...["--", "set", "interface", p.tap, `external_ids:iface-id=${p.port}`],
  ]);
}

/** Unplugs and deletes the tap, and deletes the logical port. */
export async function removeBarePort(net: NetCluster, p: BarePort): Promise<void> {
  await net.sh(p.node, ["ovs-vsctl", "--if-exists", "del-port", "br-int", p.tap]).catch(() => {});
  await net.sh(p.node, ["ip", "link", "del", p.tap]).catch(() => {});
  await net.nbctl("--if-exists", "lsp-del", p.port);
}

/** A tap's byte counter in `node`'s namespace: `tx` is what went to the guest behind it. */
export async function tapBytes(net: NetCluster, node: string, tap: string, dir: "tx" | "rx") {
  return Number(
    (await net.sh(node, ["cat", `/sys/class/net/${tap}/statistics/${dir}_bytes`])).trim(),
  );
}
