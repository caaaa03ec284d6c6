import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { eventually } from "../../tests/support/api.ts";
import { ovnMissing } from "./ovn.ts";
import { testOvn } from "./testing.ts";

testWithTimeout({
  name: "OVN: a host registers as a chassis and binds a logical port to its OVS interface",
  timeoutMs: 2 * MINUTE,
}, async (t) => {
  assertEquals(await ovnMissing(), null, "scripts/setup.sh installs ovn-central and ovn-host");
  const { ovs, central, chassis, stop } = await testOvn("novactl-ovn-");
  const port = `nvp${chassis.bridge.slice(3)}`;
  try {
    await t.step("central, OVS and ovn-controller start; the host is a chassis", async () => {
      assertEquals(await central.ensureRunning(), ["ovnnb_db", "ovnsb_db", "ovn-northd"]);
      await ovs.ensureRunning();
      assert(await chassis.ensureRunning(), "ovn-controller started");
      await eventually("the chassis row", async () => {
        const names = await central.sbctl(["--bare", "--columns=name", "list", "Chassis"]);
        return names.split("\n").includes(chassis.options.name) || undefined;
      });
    });

    await t.step("a logical port comes up once an interface on the host claims it", async () => {
      await central.nbctl(["ls-add", "sw0"]);
      await central.nbctl(["lsp-add", "sw0", "p1"]);
      await central.nbctl(["lsp-set-addresses", "p1", "02:6e:76:00:00:01 10.0.0.2"]);
      assertEquals((await central.nbctl(["lsp-get-up", "p1"])).trim(), "down");
      await eventually(
        "the integration bridge",
        async () =>
          (await ovs.vsctl(["list-br"])).split("\n").includes(chassis.bridge) || undefined,
      );
      await ovs.vsctl([
        "add-port",
        chassis.bridge,
        port,
        "--",
        "set",
        "interface",
        port,
        "type=internal",
        "external_ids:iface-id=p1",
      ]);
      await eventually(
        "p1 up",
        async () => (await central.nbctl(["lsp-get-up", "p1"])).trim() === "up" || undefined,
      );
      const bound = await central.sbctl([
        "--bare",
        "--columns=chassis",
        "find",
        "Port_Binding",
        "logical_port=p1",
      ]);
      assert(bound.trim().length > 0, "bound to a chassis");
    });

    await t.step("ovn-controller killed: started again, the port stays bound", async () => {
      const pid = (await chassis.pidOf())!;
      Deno.kill(pid, "SIGKILL");
      await eventually(
        "ovn-controller seen dead",
        async () => (await chassis.pidOf()) === null || undefined,
      );
      assert(await chassis.ensureRunning(), "started again");
      await eventually(
        "p1 up again",
        async () => (await central.nbctl(["lsp-get-up", "p1"])).trim() === "up" || undefined,
      );
    });
  } finally {
    await stop(() => ovs.vsctl(["--if-exists", "del-port", port]).then(() => {}));
  }
});
