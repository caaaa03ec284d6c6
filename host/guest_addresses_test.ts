import { assertEquals } from "../core/testing/assert.ts";
import type { GuestInfo, VmNic } from "../core/fsm/mod.ts";
import { metrics } from "../core/metrics/mod.ts";
import { noteGuestAddresses } from "./guest_addresses.ts";

const nics: VmNic[] = [{ network: "blue", ip: "10.91.0.10", mac: "52:54:00:00:00:01" }];
const report = (ip: string): GuestInfo => ({
  agent: "ok",
  interfaces: [{ name: "eth0", mac: "52:54:00:00:00:01", addresses: [`${ip}/24`] }],
});
const counted = async () =>
  (await metrics.guestIpMismatches.get()).values.reduce((a, v) => a + v.value, 0);

Deno.test("noteGuestAddresses: a NIC turning to mismatch is counted once, not while it lasts", async () => {
  const start = await counted();
  assertEquals(noteGuestAddresses({ name: "v", nics, guest: null }, report("10.91.0.10")), []);
  const vm = { name: "v", nics, guest: report("10.91.0.10") };
  assertEquals(noteGuestAddresses(vm, report("10.91.0.77")), ["52:54:00:00:00:01"]);
  assertEquals(await counted(), start + 1);
  // The same mismatch reported again (another address by hand): not counted again.
  assertEquals(
    noteGuestAddresses({ ...vm, guest: report("10.91.0.77") }, report("10.91.0.78")),
    [],
  );
  assertEquals(await counted(), start + 1);
  // Back to its IPAM address.
  assertEquals(
    noteGuestAddresses({ ...vm, guest: report("10.91.0.78") }, report("10.91.0.10")),
    [],
  );
  assertEquals(await counted(), start + 1);
});
