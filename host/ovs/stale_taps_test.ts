import { assertEquals } from "../../core/testing/assert.ts";
import { tapName } from "./nic.ts";
import { portName } from "./northbound.ts";
import { isForeignTap } from "./stale_taps.ts";

Deno.test("foreign taps: a NIC tap whose VM this host no longer keeps, never other ports", () => {
  const web = "0123456789ab-cdef-0000-0000-000000000000";
  const old = "fedcba987654-3210-0000-0000-000000000000";
  // web-1 is kept here under uuid `web`; db moved away.
  const kept = (vm: string) => (vm === "web-1" ? web : null);
  assertEquals(isForeignTap(tapName(web, 0), portName("web-1", 0), kept), false);
  assertEquals(isForeignTap(tapName(web, 12), portName("web-1", 12), kept), false);
  assertEquals(isForeignTap(tapName(old, 0), portName("db", 0), kept), true);
  // A deleted VM's tap, its name since reused by a VM that runs here.
  assertEquals(isForeignTap(tapName(old, 1), portName("web-1", 1), kept), true);
  assertEquals(isForeignTap(tapName(old, 2), null, kept), true);
  for (const other of ["patch-br-int-to-br-ex", "ovn-n2-0", "ntnothex000"]) {
    assertEquals(isForeignTap(other, null, kept), false);
  }
});
