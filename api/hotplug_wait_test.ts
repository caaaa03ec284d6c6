/**
 * `?wait=SECONDS` on hot-plug calls (api/routes/hotplug_wait.ts) and `plugged` on a VM's disks
 * and NICs, on a one-voter cluster without hosts: the test plays the VM's host, reporting what
 * its QEMU has plugged (`vm.devices`) as a host does once the device is in.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { startTestApp } from "./testing.ts";
import type { VmNic } from "../core/fsm/mod.ts";
import type { TestCluster } from "../core/testing/test_cluster.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

async function volume(c: TestCluster, name: string): Promise<void> {
  await c.node.propose({
    op: "volume.create",
    volume: { name, pool: "dir", node: "n1", sizeBytes: 2 ** 20, fromImage: null },
    by: "test",
    at: Date.now(),
  });
}

/** What the VM's host reports once its QEMU has these volumes and NICs. */
function devices(c: TestCluster, disks: string[], nics: string[]): Promise<unknown> {
  return c.node.propose({
    op: "vm.devices",
    name: "a",
    node: "n1",
    plugged: { disks, nics },
    at: Date.now(),
  });
}

const macsOf = (c: TestCluster) => ((c.node.fsm.vm("a")!.nics ?? []) as VmNic[]).map((n) => n.mac);

/**
 * Starts `call`, checks it is still waiting once its change is recorded (`changed`), then
 * plays the host's report and answers what the call answered.
 */
async function heldUntil<T>(
  c: TestCluster,
  call: () => Promise<T>,
  changed: () => boolean,
  report: () => Promise<unknown>,
): Promise<T> {
  let answered = false;
  const pending = call().finally(() => answered = true);
  await c.until("the change recorded", changed);
  await new Promise((r) => setTimeout(r, 200));
  assertEquals(answered, false, "the call waits for the host's report");
  await report();
  return await pending;
}

testWithTimeout({
  name: "API: hot-plug calls wait with ?wait until the device is plugged",
  ...opts,
}, async (t) => {
  const { c, call, tokens } = await startTestApp();
  const token = tokens.operator;
  try {
    assertEquals(
      (await call("POST", "/api/v1/networks", {
        token,
        body: { name: "blue", type: "overlay", subnet: "10.60.0.0/24" },
      })).status,
      201,
    );
    const root = { id: "root", volume: "a-root", sizeBytes: 2 ** 30, source: { kind: "blank" } };
    await c.vm({ name: "a", node: "n1", disks: [root as never], nics: [{ network: "blue" }] });
    for (const v of ["data1", "data2"]) await volume(c, v);
    await devices(c, [], macsOf(c));

    await t.step("attach: 202 while not plugged yet, 200 once the host reports it", async () => {
      const early = await call("POST", "/api/v1/vms/a/disks?wait=0", {
        token,
        body: { volume: "data1" },
      });
      assertEquals([early.status, early.body.plugged], [202, false], JSON.stringify(early.body));
      const listed = (await call("GET", "/api/v1/vms/a/disks", { token })).body.disks;
      assertEquals(listed.map((d: { plugged: boolean }) => d.plugged), [true, false]);

      // Attaching again is a no-op; its wait ends with the host's report, not before.
      await devices(c, [], [...macsOf(c), "52:54:00:00:00:99"]); // another device: not it
      const r = await heldUntil(
        c,
        () => call("POST", "/api/v1/vms/a/disks?wait=60", { token, body: { volume: "data1" } }),
        () => true,
        () => devices(c, ["data1"], macsOf(c)),
      );
      assertEquals([r.status, r.body.volume, r.body.plugged], [200, "data1", true]);
      const shown = (await call("GET", "/api/v1/vms/a", { token })).body;
      assertEquals(
        shown.disks.map((d: { id: string; plugged: boolean }) => [d.id, d.plugged]),
        [["root", true], ["vd0", true]],
        "vm show: its own disk and the plugged volume",
      );
    });

    await t.step("detach waits until the QEMU let go", async () => {
      const r = await heldUntil(
        c,
        () => call("DELETE", "/api/v1/vms/a/disks/data1?wait=60", { token }),
        () => c.node.fsm.vm("a")!.disks.length === 1,
        () => devices(c, [], macsOf(c)),
      );
      assertEquals([r.status, r.body.detached.volume, r.body.plugged], [200, "data1", false]);
    });

    await t.step("NIC add and remove wait the same way", async () => {
      const r = await heldUntil(
        c,
        () => call("POST", "/api/v1/vms/a/nics?wait=60", { token, body: { network: "blue" } }),
        () => macsOf(c).length === 2,
        () => devices(c, [], macsOf(c)),
      );
      assertEquals([r.status, r.body.plugged], [200, true], JSON.stringify(r.body));
      const nics = (await call("GET", "/api/v1/vms/a/nics", { token })).body.nics;
      assertEquals(nics.map((n: { plugged: boolean }) => n.plugged), [true, true]);

      const late = await call("DELETE", `/api/v1/vms/a/nics/${r.body.index}?wait=0`, { token });
      assertEquals([late.status, late.body.plugged], [202, true], "the QEMU still has it");
      await devices(c, [], macsOf(c));
      const gone = (await call("GET", "/api/v1/vms/a/nics", { token })).body.nics;
      assertEquals(gone.map((n: { plugged: boolean }) => n.plugged), [true]);
    });

    await t.step("without ?wait: answered at once, as before (201 for an attach)", async () => {
      const r = await call("POST", "/api/v1/vms/a/disks", { token, body: { volume: "data2" } });
      assertEquals([r.status, r.body.plugged], [201, false]);
      assertEquals((await call("DELETE", "/api/v1/vms/a/disks/data2", { token })).status, 200);
    });

    await t.step("a VM that does not run: settled at once, plugged null", async () => {
      await c.observe("a", "n1", "stopped");
      const r = await call("POST", "/api/v1/vms/a/disks?wait=60", {
        token,
        body: { volume: "data2" },
      });
      assertEquals([r.status, r.body.plugged], [200, null]);
      const shown = (await call("GET", "/api/v1/vms/a", { token })).body;
      assertEquals(shown.plugged, null, "no QEMU, nothing plugged");
      assert(shown.disks.every((d: { plugged: unknown }) => d.plugged === null));
    });
  } finally {
    await c.stop();
  }
});

testWithTimeout({
  name: "API: below cluster level 2 hosts report nothing, so ?wait answers at once",
  ...opts,
}, async () => {
  const { c, call, tokens } = await startTestApp(undefined, { level: 1 });
  try {
    await c.vm({ name: "a", node: "n1" }, "running");
    await volume(c, "data1");
    const r = await call("POST", "/api/v1/vms/a/disks?wait=60", {
      token: tokens.operator,
      body: { volume: "data1" },
    });
    assertEquals([r.status, r.body.plugged], [200, null], JSON.stringify(r.body));
  } finally {
    await c.stop();
  }
});
