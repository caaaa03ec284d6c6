/**
 * Taps left behind for VMs that are no longer this host's. A host that is
 * killed (power loss, SIGKILL) keeps its taps and their `br-int` ports: the
 * tap devices outlive the processes, and OVS keeps its ports in its database.
 * Meanwhile HA or `node evacuate` restart the VMs elsewhere. When the host
 * comes back, nothing would ever remove those taps: its VM host only unplugs
 * the taps of VMs it stops or sees leave. So once the node caught up with the
 * cluster, it removes every NIC tap on its integration bridge whose VM is not
 * (or no longer, or under another uuid) one it keeps: placed here, migrating
 * here, or with a QEMU here.
 *
 * @module
 */
import { log } from "../../core/log/mod.ts";
import { tapPrefix, unplugTap } from "./nic.ts";
import type { OvsHost } from "./ovs_host.ts";

/** What a NIC tap's name looks like (./nic.ts `tapName`): `nt`, 10 hex digits, the NIC number. */
const TAP = /^nt[0-9a-f]{10}\d+$/;
/** A NIC's logical port (./northbound.ts `portName`): `nv-VM-NIC`. */
const PORT = /^nv-(.+)-\d+$/;

/**
 * Whether bridge port `port`, whose `external_ids:iface-id` is `ifaceId`, is a NIC tap this host
 * no longer needs; `keptUuid(vm)` is the uuid of VM `vm` when this host keeps it, else null.
 */
export function isForeignTap(
  port: string,
  ifaceId: string | null,
  keptUuid: (vm: string) => string | null,
): boolean {
  if (!TAP.test(port)) return false;
  const vm = ifaceId ? PORT.exec(ifaceId)?.[1] : undefined;
  const uuid = vm ? keptUuid(vm) : null;
  return uuid === null || !port.startsWith(tapPrefix(uuid));
}

/** Unplugs and deletes the NIC taps on `bridge` this host no longer needs; their names. */
export async function removeForeignTaps(
  ovs: OvsHost,
  bridge: string,
  keptUuid: (vm: string) => string | null,
): Promise<string[]> {
  const ports = (await ovs.vsctl(["list-ports", bridge])).split("\n").filter((p) => TAP.test(p));
  const removed: string[] = [];
  for (const port of ports) {
    const id = await ovs.vsctl(["--if-exists", "get", "Interface", port, "external_ids:iface-id"])
      .then((out) => out.trim().replace(/^"|"$/g, "") || null, () => null);
    // Asked again for each tap: what this host keeps may change while it goes through them.
    if (!isForeignTap(port, id, keptUuid)) continue;
    await unplugTap(ovs, bridge, port);
    removed.push(port);
  }
  if (removed.length) log.info("removed taps of VMs no longer on this host", { taps: removed });
  return removed;
}
