import { assertEquals } from "../testing/assert.ts";
import type { GuestInfo, VmNic } from "../fsm/commands.ts";
import {
  addressMismatches,
  checkNicAddress,
  ipv4Only,
  withAddressChecks,
} from "./guest_addresses.ts";

const MAC = "52:54:00:ab:cd:01";
const nic = (over: Partial<VmNic> = {}): VmNic => ({
  network: "blue",
  ip: "10.91.0.10",
  mac: MAC,
  ...over,
});
const guest = (addresses: string[], mac = MAC.toUpperCase()): GuestInfo => ({
  agent: "ok",
  interfaces: [
    { name: "eth9", mac: "52:54:00:00:00:99", addresses: ["10.91.0.10/24"] },
    { name: "eth0", mac, addresses },
  ],
});

Deno.test("ipv4Only: the IPv4 addresses, without their prefixes", () => {
  assertEquals(ipv4Only(["10.0.0.5/24", "fe80::1/64", "192.0.2.1", "junk"]), [
    "10.0.0.5",
    "192.0.2.1",
  ]);
});

Deno.test("checkNicAddress: the interface with the NIC's MAC against the IPAM address", () => {
  // Its MAC in another case still names it; the other interface's address does not count.
  assertEquals(checkNicAddress(nic(), guest(["10.91.0.10/24", "fe80::5054:ff:feab:cd01/64"])), {
    guestIps: ["10.91.0.10"],
    ipStatus: "match",
  });
  assertEquals(checkNicAddress(nic(), guest(["10.91.0.77/24"])), {
    guestIps: ["10.91.0.77"],
    ipStatus: "mismatch",
  });
  // An extra address by hand: port security drops it, so it is a mismatch too.
  assertEquals(
    checkNicAddress(nic(), guest(["10.91.0.10/24", "10.91.0.77/24"])).ipStatus,
    "mismatch",
  );
  assertEquals(checkNicAddress(nic(), guest(["fe80::1/64"])), {
    guestIps: [],
    ipStatus: "pending",
  });
  assertEquals(checkNicAddress(nic(), guest(["10.91.0.10/24"], "52:54:00:ff:ff:ff")), {
    guestIps: null,
    ipStatus: "unknown",
  });
  assertEquals(checkNicAddress(nic(), { agent: "absent" }).ipStatus, "unknown");
  assertEquals(checkNicAddress(nic(), null).ipStatus, "unknown");
  assertEquals(checkNicAddress(nic({ ip: null }), guest(["10.91.0.10/24"])), {
    guestIps: ["10.91.0.10"],
    ipStatus: "unknown",
  });
});

Deno.test("withAddressChecks and addressMismatches: per NIC of a VM", () => {
  const vm = {
    name: "v",
    nics: [nic(), nic({ network: "red", ip: "10.92.0.5", mac: "52:54:00:00:00:99" })],
    guest: guest(["10.91.0.10/24"]),
  };
  const shown = withAddressChecks(vm);
  assertEquals(shown.nics!.map((n) => [n.network, n.ipStatus, n.guestIps]), [
    ["blue", "match", ["10.91.0.10"]],
    ["red", "mismatch", ["10.91.0.10"]],
  ]);
  assertEquals(vm.nics[0], nic(), "the record itself is left as it was");
  assertEquals(addressMismatches(vm.nics, vm.guest), [
    { network: "red", mac: "52:54:00:00:00:99", ip: "10.92.0.5", guestIps: ["10.91.0.10"] },
  ]);
  const bare = { name: "plain" };
  assertEquals(withAddressChecks(bare), bare);
});
