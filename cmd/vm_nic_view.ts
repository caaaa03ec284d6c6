/**
 * A VM's NICs as `vm show` prints them in a table: one line per NIC with its
 * network, IPAM address and MAC, and what the guest agent reports on it
 * (`guestIps`) with the check's `ipStatus` (core/network/guest_addresses.ts).
 *
 * @module
 */

/** A NIC as `GET /api/v1/vms/NAME` gives it. */
export interface ShownNic {
  network: string;
  ip: string | null;
  mac: string;
  index?: number;
  guestIps?: string[] | null;
  ipStatus?: string;
}

/** `blue 10.91.0.10 52:54:00:..:01 guest 10.91.0.77 MISMATCH`, one per NIC. */
export function nicLines(nics: ShownNic[]): string[] {
  return nics.map((n) => {
    const guest = n.guestIps == null
      ? "guest -"
      : `guest ${n.guestIps.length ? n.guestIps.join(",") : "no IPv4"}`;
    // A mismatch stands out: traffic from the other addresses is dropped.
    const status = n.ipStatus === "mismatch" ? "MISMATCH" : n.ipStatus ?? "unknown";
    return `${n.network} ${n.ip ?? "-"} ${n.mac} ${guest} ${status}`;
  });
}

/** The fields of `vm show`'s table: each NIC on its own `nicN` line instead of one JSON list. */
export function vmFields(vm: Record<string, unknown>): Record<string, unknown> {
  const nics = vm.nics as ShownNic[] | undefined;
  if (!Array.isArray(nics) || !nics.length) return vm;
  const { nics: _nics, ...rest } = vm;
  const lines = nicLines(nics);
  return {
    ...rest,
    ...Object.fromEntries(nics.map((n, i) => [`nic${n.index ?? i}`, lines[i]])),
  };
}
