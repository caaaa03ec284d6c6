/**
 * The VM host's side of the guest-address check (core/network/guest_addresses.ts):
 * when a guest-agent report changes, each NIC that turned to `mismatch` (the
 * guest holds IPv4 addresses other than the NIC's IPAM address) is logged as a
 * warning and counted in `novactl_guest_ip_mismatches_total`; one that came
 * back is logged too. Reports that did not change are not looked at again, so
 * a lasting mismatch is logged once.
 *
 * @module
 */
import type { GuestInfo, VmNic, VmRecord } from "../core/fsm/mod.ts";
import { log } from "../core/log/mod.ts";
import { metrics } from "../core/metrics/mod.ts";
import { addressMismatches } from "../core/network/mod.ts";

/**
 * Logs and counts the NICs of `vm` whose check turned to mismatch from the
 * recorded report (`vm.guest`) to `next`; logs those that no longer are.
 * @returns the NICs (by MAC) newly in mismatch
 */
export function noteGuestAddresses(
  vm: Pick<VmRecord, "name" | "nics" | "guest">,
  next: GuestInfo,
): string[] {
  // Recorded NICs carry their address and MAC (core/fsm/vm_nics.ts).
  const nics = vm.nics as VmNic[] | undefined;
  const before = new Set(addressMismatches(nics, vm.guest).map((m) => m.mac));
  const now = addressMismatches(nics, next);
  const fresh = now.filter((m) => !before.has(m.mac));
  for (const m of fresh) {
    metrics.guestIpMismatches.inc();
    log.warn("guest addresses differ from IPAM: OVN port security drops the others", {
      vm: vm.name,
      network: m.network,
      mac: m.mac,
      ipam: m.ip,
      guest: m.guestIps,
    });
  }
  const still = new Set(now.map((m) => m.mac));
  for (const mac of before) {
    if (!still.has(mac)) log.info("guest addresses agree with IPAM again", { vm: vm.name, mac });
  }
  return fresh.map((m) => m.mac);
}
