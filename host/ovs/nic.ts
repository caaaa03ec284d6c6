/**
 * A VM's NIC on a network, on its host: a tap device that QEMU opens, attached
 * to the integration bridge with `external_ids:iface-id` naming the NIC's
 * logical port, so ovn-controller binds that port to this host (and OVN's
 * DHCP, port security and ACLs apply to the guest).
 *
 * The tap is made here, owned by the user QEMU runs as, rather than by QEMU:
 * QEMU then needs no privilege to create network devices, and the tap (and its
 * bridge port) can be in place before QEMU starts, as an incoming migration
 * needs.
 *
 * @module
 */
import { pathExists } from "../../core/store/mod.ts";
import { runTool } from "./daemon_dir.ts";
import type { OvsHost } from "./ovs_host.ts";

/** Linux interface names: at most 15 bytes. */
const IFNAMSIZ = 15;

/** What every tap of the VM with `uuid` starts with. */
export function tapPrefix(uuid: string): string {
  return `nt${uuid.replace(/-/g, "").slice(0, 10)}`;
}

/** The tap name of NIC `nic` of the VM with `uuid`: stable, unique, and short enough. */
export function tapName(uuid: string, nic: number): string {
  const name = `${tapPrefix(uuid)}${nic}`;
  if (name.length > IFNAMSIZ) throw new Error(`tap name ${name} too long`);
  return name;
}

function ip(args: string[]): Promise<string> {
  return runTool("ip", args);
}

function linkExists(name: string): Promise<boolean> {
  return pathExists(`/sys/class/net/${name}`);
}

/**
 * Makes the tap `tap` (owned by `uid`, up) and attaches it to `bridge` as the
 * logical port `port`; kept as it is if it already exists (a restarted node
 * finds its VMs' taps in place).
 */
export async function plugTap(
  ovs: OvsHost,
  bridge: string,
  tap: string,
  port: string,
  uid: number | null,
): Promise<void> {
  if (!(await linkExists(tap))) {
    await ip([
      "tuntap",
      "add",
      "dev",
      tap,
      "mode",
      "tap",
      ...(uid === null ? [] : ["user", String(uid)]),
    ]);
  }
  await ip(["link", "set", tap, "up"]);
  await ovs.vsctl([
    "--may-exist",
    "add-port",
    bridge,
    tap,
    "--",
    "set",
    "interface",
    tap,
    `external_ids:iface-id=${port}`,
  ]);
}

/** Detaches and deletes the tap (the VM is gone or moved away). */
export async function unplugTap(ovs: OvsHost, bridge: string, tap: string): Promise<void> {
  await ovs.vsctl(["--if-exists", "del-port", bridge, tap]);
  if (await linkExists(tap)) await ip(["link", "del", tap]);
}
