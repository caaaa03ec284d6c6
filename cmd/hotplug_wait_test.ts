/**
 * `vm disk attach|detach` and `vm nic add|remove` with `--wait`/`--timeout` against a served
 * one-node cluster without hosts: the test plays the VM's host and reports what its QEMU has
 * plugged (`vm.devices`). As `vm start --wait`: done once settled, exit 1 at the timeout.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import type { VmNic } from "../core/fsm/mod.ts";
import { servedCluster } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

testWithTimeout({
  name: "vm disk/nic --wait: returns once plugged, exit 1 when still on its way at the timeout",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { c, cli, stop } = await servedCluster();
  const devices = (disks: string[]) =>
    c.node.propose({
      op: "vm.devices",
      name: "a",
      node: "n1",
      plugged: { disks, nics: ((c.node.fsm.vm("a")!.nics ?? []) as VmNic[]).map((n) => n.mac) },
      at: Date.now(),
    });
  try {
    assertEquals((await cli("network", "create", "blue", "--subnet", "10.60.0.0/24")).code, 0);
    const root = { id: "root", volume: "a-root", sizeBytes: 2 ** 30, source: { kind: "blank" } };
    await c.vm({ name: "a", node: "n1", disks: [root as never], nics: [{ network: "blue" }] });
    await c.node.propose({
      op: "volume.create",
      volume: { name: "data1", pool: "dir", node: "n1", sizeBytes: 2 ** 20, fromImage: null },
      by: "test",
      at: Date.now(),
    });
    await devices([]);

    // Not plugged within the timeout: exit 1, naming what is still on its way.
    let r = await cli("vm", "disk", "attach", "a", "data1", "--wait", "--timeout", "1s");
    assertEquals(r.code, 1, r.stdout + r.stderr);
    assert(/data1: still being hot-plugged after 1 s/.test(r.stderr), r.stderr);

    // Plugged while the command waits: done, with the disk as plugged.
    const report = (async () => {
      await new Promise((res) => setTimeout(res, 300));
      await devices(["data1"]);
    })();
    r = await cli("vm", "disk", "attach", "a", "data1", "--wait", "-o", "json");
    await report;
    assertEquals(r.code, 0, r.stderr);
    assertEquals(JSON.parse(r.stdout).plugged, true);

    r = await cli("vm", "disk", "list", "a");
    assert(/vd0\s+dir\s+data1\s+\S+\s+volume\s+true/.test(r.stdout), r.stdout);

    // Without --wait: at once, as before.
    r = await cli("vm", "nic", "add", "a", "blue");
    assertEquals(r.code, 0, r.stderr);
    await devices(["data1"]); // the host plugged it
    r = await cli("vm", "nic", "remove", "a", "1", "--wait", "--timeout", "1s");
    assertEquals(r.code, 1, "its QEMU still has it");
    assert(/a: NIC 1: still being hot-plugged after 1 s/.test(r.stderr), r.stderr);
    await devices(["data1"]); // now gone

    // A VM that does not run: settled at once.
    await c.observe("a", "n1", "stopped");
    r = await cli("vm", "disk", "detach", "a", "data1", "--wait", "--timeout", "60s");
    assertEquals([r.code, r.stdout], [0, "a: volume data1 detached\n"], r.stderr);
  } finally {
    await stop();
  }
});
