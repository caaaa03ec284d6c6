import { assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { testNetwork as network } from "./testing.ts";
import { OvnCentral } from "./ovn.ts";
import { applyNorthbound, desiredNorthbound, type NicPort } from "./northbound.ts";
import { bindingOptions, placedPorts } from "./northbound_migration.ts";

Deno.test("port binding options: one chassis placed, two with RARP activation while migrating", () => {
  assertEquals(bindingOptions(undefined), {});
  assertEquals(bindingOptions({ node: null, migratingTo: null }), {});
  assertEquals(bindingOptions({ node: "n1", migratingTo: null }), { "requested-chassis": "n1" });
  assertEquals(bindingOptions({ node: "n1", migratingTo: "n2" }), {
    "requested-chassis": "n1,n2",
    "activation-strategy": "rarp",
  });
  // A migration mark pointing at the VM's own host (never made, but harmless) is no move.
  assertEquals(bindingOptions({ node: "n2", migratingTo: "n2" }), { "requested-chassis": "n2" });
});

Deno.test("placed ports: each NIC with its VM's host and migration, VMs read once", () => {
  const reads: string[] = [];
  const vms: Record<string, { node: string | null; migration?: { opId: string; to: string } }> = {
    a: { node: "n1", migration: { opId: "mig-1", to: "n2" } },
    b: { node: null },
  };
  const ports = placedPorts({
    networkPorts: () => [
      { vm: "a", nic: 0, network: "blue", ip: "10.0.0.2", mac: "02:00:00:00:00:01" },
      { vm: "a", nic: 1, network: "blue", ip: "10.0.0.3", mac: "02:00:00:00:00:02" },
      { vm: "b", nic: 0, network: "blue", ip: "10.0.0.4", mac: "02:00:00:00:00:03" },
      { vm: "gone", nic: 0, network: "blue", ip: "10.0.0.5", mac: "02:00:00:00:00:04" },
    ],
    vm: (name) => (reads.push(name), vms[name] ? { migration: null, ...vms[name] } : null),
  }, "blue");
  assertEquals(ports.map((p) => [p.vm, p.nic, p.placement]), [
    ["a", 0, { node: "n1", migratingTo: "n2" }],
    ["a", 1, { node: "n1", migratingTo: "n2" }],
    ["b", 0, { node: null, migratingTo: null }],
    ["gone", 0, { node: null, migratingTo: null }],
  ]);
  assertEquals(reads, ["a", "b", "gone"]);
});

testWithTimeout({
  name: "OVN northbound: a migrating VM's port is bound to both hosts, then to the destination",
  timeoutMs: 2 * MINUTE,
}, async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "novactl-nbmig-" });
  const central = new OvnCentral(dataDir);
  const nbctl = (args: string[]) => central.nbctl(args);
  const blue = network("blue");
  const nic = (node: string, migratingTo: string | null): NicPort[] => [{
    vm: "a",
    nic: 0,
    network: "blue",
    ip: "10.10.0.2",
    mac: "02:6e:76:00:00:00",
    placement: { node, migratingTo },
  }];
  const options = async () =>
    JSON.parse(
      (await nbctl(["--format=json", "--columns=options", "list", "Logical_Switch_Port", "nv-a-0"]))
        .trim(),
    ).data[0][0][1].map(([k, v]: string[]) => `${k}=${v}`).sort();
  try {
    await central.ensureRunning();
    await t.step("placed on n1: requested there", async () => {
      await applyNorthbound(nbctl, desiredNorthbound([blue], nic("n1", null)));
      assertEquals(await options(), ["requested-chassis=n1"]);
    });
    await t.step("migrating to n2: both, activated by RARP", async () => {
      const changes = await applyNorthbound(nbctl, desiredNorthbound([blue], nic("n1", "n2")));
      assertEquals(changes.updated, ["nv-a-0"]);
      assertEquals(await options(), ["activation-strategy=rarp", "requested-chassis=n1,n2"]);
    });
    await t.step("committed: the destination alone; a second pass changes nothing", async () => {
      await applyNorthbound(nbctl, desiredNorthbound([blue], nic("n2", null)));
      assertEquals(await options(), ["requested-chassis=n2"]);
      const again = await applyNorthbound(nbctl, desiredNorthbound([blue], nic("n2", null)));
      assertEquals(again, { created: [], updated: [], deleted: [] });
    });
  } finally {
    await central.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
