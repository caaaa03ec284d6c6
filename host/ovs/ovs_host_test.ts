import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { OvsHost, ovsMissing } from "./ovs_host.ts";

/** A bridge name of our own: a netdev bridge is also a kernel tap device of that name. */
function bridgeName(): string {
  return `nvt${crypto.randomUUID().slice(0, 8)}`;
}

testWithTimeout({
  name: "OVS: a host's own daemons start, keep their bridge, and are started again when killed",
  timeoutMs: 2 * MINUTE,
}, async (t) => {
  assertEquals(await ovsMissing(), null, "scripts/setup.sh installs openvswitch-switch");
  const ovs = new OvsHost(await Deno.makeTempDir({ prefix: "novactl-ovs-" }));
  const bridge = bridgeName();
  try {
    await t.step("first start: both daemons, a netdev bridge", async () => {
      assertEquals(await ovs.ensureRunning(), ["ovsdb-server", "ovs-vswitchd"]);
      await ovs.ensureBridge(bridge);
      assert((await ovs.vsctl(["list-br"])).split("\n").includes(bridge));
      assertEquals((await ovs.vsctl(["get", "bridge", bridge, "datapath_type"])).trim(), "netdev");
    });

    await t.step("running daemons are found again, not started twice", async () => {
      const pids = [await ovs.pidOf("ovsdb-server"), await ovs.pidOf("ovs-vswitchd")];
      assertEquals(await ovs.ensureRunning(), []);
      assertEquals([await ovs.pidOf("ovsdb-server"), await ovs.pidOf("ovs-vswitchd")], pids);
    });

    for (const daemon of ["ovs-vswitchd", "ovsdb-server"] as const) {
      await t.step(`${daemon} killed: started again, the bridge still there`, async () => {
        const pid = (await ovs.pidOf(daemon))!;
        Deno.kill(pid, "SIGKILL");
        for (let i = 0; i < 100 && await ovs.pidOf(daemon); i++) {
          await new Promise((r) => setTimeout(r, 20));
        }
        assertEquals(await ovs.pidOf(daemon), null, "seen dead");
        assertEquals(await ovs.ensureRunning(), [daemon]);
        const again = await ovs.pidOf(daemon);
        assert(again && again !== pid, `a new ${daemon}: ${again}`);
        assert((await ovs.vsctl(["list-br"])).split("\n").includes(bridge));
      });
    }
  } finally {
    await ovs.vsctl(["--if-exists", "del-br", bridge]).catch(() => {});
    await ovs.stop();
    await Deno.remove(ovs.dir.root, { recursive: true }).catch(() => {});
  }
});
