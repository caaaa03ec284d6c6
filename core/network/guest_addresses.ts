/**
 * The guest agent's addresses checked against IPAM: for each NIC on a
 * network, the IPv4 addresses the guest reports on the interface with the
 * NIC's MAC, compared with the address IPAM gave the NIC. OVN's port
 * security drops whatever the guest sends from another address, so a guest
 * that set one by hand (or kept a stale lease) is cut off without a word;
 * this makes it visible (`vm show`: `guestIps` and `ipStatus` per NIC,
 * logged and counted by the VM's host).
 *
 * Pure: derived from the VM record (its NICs and the guest report), on read.
 *
 * @module
 */
import type { GuestInfo, VmNic } from "../fsm/commands.ts";

/**
 * How a NIC's guest addresses compare with IPAM:
 * - `match`: the guest holds the NIC's IPAM address on it, and no other IPv4 address;
 * - `mismatch`: the guest holds other IPv4 addresses on it (with or without the IPAM one);
 * - `pending`: the guest reports the interface without an IPv4 address (DHCP not done yet);
 * - `unknown`: no agent report, the guest reports no interface with the NIC's MAC, or the
 *   NIC has no IPAM address.
 */
export type IpStatus = "match" | "mismatch" | "pending" | "unknown";

/** The check of one NIC. */
export interface NicAddressCheck {
  /** The IPv4 addresses (no prefix) the guest reports on the NIC's interface; null: not seen. */
  guestIps: string[] | null;
  ipStatus: IpStatus;
}

const IPV4 = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/\d{1,2})?$/;

/** The IPv4 addresses (without prefix) among an agent's `ADDR/PREFIX` strings, in order. */
export function ipv4Only(addresses: string[]): string[] {
  return addresses.flatMap((a) => IPV4.exec(a.trim())?.[1] ?? []);
}

/** Compares one NIC's IPAM address with what the guest agent reports. */
export function checkNicAddress(
  nic: Pick<VmNic, "mac" | "ip">,
  guest: GuestInfo | null | undefined,
): NicAddressCheck {
  if (!guest || guest.agent !== "ok") return { guestIps: null, ipStatus: "unknown" };
  const mac = nic.mac.toLowerCase();
  const iface = (guest.interfaces ?? []).find((i) => i.mac?.toLowerCase() === mac);
  if (!iface) return { guestIps: null, ipStatus: "unknown" };
  const guestIps = ipv4Only(iface.addresses);
  if (!nic.ip) return { guestIps, ipStatus: "unknown" };
  if (!guestIps.length) return { guestIps, ipStatus: "pending" };
  const match = guestIps.length === 1 && guestIps[0] === nic.ip;
  return { guestIps, ipStatus: match ? "match" : "mismatch" };
}

/** A VM as far as the check goes. */
export interface AddressCheckedVm {
  name: string;
  nics?: VmNic[];
  guest?: GuestInfo | null;
}

/** A NIC as `vm show` gives it: its record and its check. */
export type CheckedNic = VmNic & NicAddressCheck;

/** `vm` with `guestIps` and `ipStatus` on each of its NICs (`vm` itself when it has none). */
export function withAddressChecks<T extends AddressCheckedVm>(
  vm: T,
): Omit<T, "nics"> & { nics?: CheckedNic[] } {
  if (!vm.nics?.length) return vm as Omit<T, "nics">;
  return { ...vm, nics: vm.nics.map((n) => ({ ...n, ...checkNicAddress(n, vm.guest) })) };
}

/**
 * {@link withAddressChecks} for a value that may be a VM record (a route's answer): anything
 * without a `nics` list comes back as it is.
 */
export function viewWithAddressChecks<T>(v: T): T {
  if (!v || typeof v !== "object" || !Array.isArray((v as { nics?: unknown }).nics)) return v;
  return withAddressChecks(v as unknown as AddressCheckedVm) as unknown as T;
}

/** One NIC whose guest addresses disagree with IPAM. */
export interface AddressMismatch {
  network: string;
  mac: string;
  ip: string | null;
  guestIps: string[];
}

/** The NICs of `vm` in `mismatch`, as `guest` reports them. */
export function addressMismatches(
  nics: VmNic[] | undefined,
  guest: GuestInfo | null | undefined,
): AddressMismatch[] {
  return (nics ?? []).flatMap((n) => {
    const c = checkNicAddress(n, guest);
    return c.ipStatus === "mismatch"
      ? [{ network: n.network, mac: n.mac, ip: n.ip, guestIps: c.guestIps ?? [] }]
      : [];
  });
}
