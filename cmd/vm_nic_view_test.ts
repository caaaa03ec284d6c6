import { assertEquals } from "../core/testing/assert.ts";
import { vmFields } from "./vm_nic_view.ts";

Deno.test("vm show table: a line per NIC with the guest's addresses and the check", () => {
  const fields = vmFields({
    name: "v",
    nics: [
      {
        network: "blue",
        ip: "10.91.0.10",
        mac: "52:54:00:00:00:01",
        guestIps: ["10.91.0.10"],
        ipStatus: "match",
      },
      {
        network: "red",
        ip: "10.92.0.5",
        mac: "52:54:00:00:00:02",
        index: 3,
        guestIps: ["10.92.0.77"],
        ipStatus: "mismatch",
      },
      {
        network: "green",
        ip: "10.93.0.5",
        mac: "52:54:00:00:00:03",
        guestIps: null,
        ipStatus: "unknown",
      },
    ],
  });
  assertEquals(fields, {
    name: "v",
    nic0: "blue 10.91.0.10 52:54:00:00:00:01 guest 10.91.0.10 match",
    nic3: "red 10.92.0.5 52:54:00:00:00:02 guest 10.92.0.77 MISMATCH",
    nic2: "green 10.93.0.5 52:54:00:00:00:03 guest - unknown",
  });
  const plain = { name: "p" };
  assertEquals(vmFields(plain), plain);
});
